"""The reaper: collect every exited child with one ``waitpid(-1, WNOHANG)`` loop.

As PID 1 (or a child subreaper) pyinit inherits every orphan in the
container, and each one that exits stays a zombie until it is waited for.
One loop, run by the signal intake on every SIGCHLD, reaps them all and
keeps the status of each *watched* pid (the target, hooks, later sidecars)
for whoever awaits it; a listener (the event loop) is told of every reap.

This is also why pyinit never starts a child with ``subprocess.Popen`` or
``trio.run_process``: their own ``waitpid(pid)`` races this loop, and when
the loop wins, CPython reports the lost status as exit code 0.  A child
started from another thread is started inside :meth:`Reaper.spawning`, so
that it is watched before the loop can reap it.
"""

from __future__ import annotations

import os
import threading

from pyinit import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def describe_status(status: int) -> str:
    """``exit 3`` or ``killed by SIGTERM`` for logs."""
    from pyinit.plan.signals import signal_name

    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {signal_name(os.WTERMSIG(status))}{core}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


class Reaper:
    """Reaps all children and keeps the statuses of the pids someone watches.

    Thread-safe: :meth:`reap` runs in the signal intake (the main thread),
    :meth:`spawning` and :meth:`status_of` may be used from the event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: set[int] = set()
        self._statuses: dict[int, int] = {}
        self._listener: Callable[[list[tuple[int, int]]], None] | None = None

    def watch(self, pid: int) -> None:
        """Keep ``pid``'s status when it is reaped, for :meth:`status_of`."""
        with self._lock:
            self._watched.add(pid)

    def status_of(self, pid: int) -> int | None:
        """The wait status of a watched pid once reaped, else None."""
        return self._statuses.get(pid)

    def spawning(self) -> _Spawning:
        """``with reaper.spawning() as watch: watch(spawn())``: no reap in between."""
        return _Spawning(self)

    def listen(self, listener: Callable[[list[tuple[int, int]]], None]) -> None:
        """Tell ``listener`` of every later reap (called in the reaping thread)."""
        with self._lock:
            self._listener = listener

    def reap(self, *, tell: bool = True) -> list[tuple[int, int]]:
        """Reap every child that has exited, without blocking; returns (pid, status) pairs.

        With ``tell=False`` the listener is not told: the caller decides
        first, then calls :meth:`tell` (or ends pyinit).
        """
        with self._lock:
            reaped = self._reap_locked()
        if tell:
            self.tell(reaped)
        return reaped

    def tell(self, reaped: list[tuple[int, int]]) -> None:
        """Tell the listener of these reaps."""
        listener = self._listener
        if reaped and listener is not None:
            listener(reaped)

    def _reap_locked(self) -> list[tuple[int, int]]:
        reaped = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no children at all
            if pid == 0:
                break  # children remain, none has exited
            reaped.append((pid, status))
            if pid in self._watched:
                self._watched.discard(pid)
                self._statuses[pid] = status
            if log.level() >= log.VERBOSE:
                log.info(f"reaped {pid} ({describe_status(status)})")
        return reaped


class _Spawning:
    """Holds the reaper's lock while a child is started and watched."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    def __enter__(self) -> Callable[[int], None]:
        self._reaper._lock.acquire()
        return self._reaper._watched.add

    def __exit__(self, *exc: object) -> None:
        self._reaper._lock.release()
