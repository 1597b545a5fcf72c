"""The reaper: collect every exited child with one ``waitpid(-1, WNOHANG)`` loop.

As PID 1 (or a child subreaper) pyinit inherits every orphan in the
container, and each one that exits stays a zombie until it is waited for.
One loop reaps them all and hands each status to whoever is waiting for that
pid (the target, a --post hook).

This is also why pyinit never starts the target with ``subprocess.Popen`` or
``trio.run_process``: their own ``waitpid(pid)`` races this loop, and when
the loop wins, CPython reports the lost status as exit code 0.
"""

from __future__ import annotations

import os

from pyinit import log
from pyinit.errors import exit_code_for_wait_status


def describe_status(status: int) -> str:
    """``exit 3`` or ``killed by SIGTERM`` for logs."""
    from pyinit.plan.signals import signal_name

    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {signal_name(os.WTERMSIG(status))}{core}"
    return f"exit {exit_code_for_wait_status(status)}"


class Reaper:
    """Reaps all children and keeps the statuses of the pids someone watches."""

    def __init__(self) -> None:
        self._watched: set[int] = set()
        self._statuses: dict[int, int] = {}
        self.reaped_count = 0

    def watch(self, pid: int) -> None:
        """Keep ``pid``'s status when it is reaped, for :meth:`status_of`."""
        self._watched.add(pid)

    def status_of(self, pid: int) -> int | None:
        """The wait status of a watched pid once reaped, else None."""
        return self._statuses.get(pid)

    def reap(self) -> list[tuple[int, int]]:
        """Reap every child that has exited, without blocking; returns (pid, status) pairs."""
        reaped = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no children at all
            except InterruptedError:
                continue
            if pid == 0:
                break  # children remain, none has exited
            reaped.append((pid, status))
            self.reaped_count += 1
            if pid in self._watched:
                self._statuses[pid] = status
            if log.level() >= log.VERBOSE:
                log.info(f"reaped {pid} ({describe_status(status)})")
        return reaped
