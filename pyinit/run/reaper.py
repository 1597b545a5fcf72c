"""The reaper: collect every exited child with one ``waitpid(-1, WNOHANG)`` loop.

As PID 1 (or a child subreaper) pyinit inherits every orphan in the
container, and each one that exits stays a zombie until it is waited for.
One loop, run by the signal intake on every SIGCHLD, reaps them all; a
listener (the event loop) is told of every reap.

**Each status is handed over once.**  Whoever starts a child watches its
pid and gets a :class:`Watched`, the one place its status will appear.  The
reap puts the status there and forgets the pid at once (Pebble's reaper
does the same): the kernel may give that pid to the next fork, and a new
process must never be told the exit of an old one.  The status of a pid
nobody watches (an orphan) is not kept at all.  Watching a pid that is
still tracked can only be pyinit's own bug, and is logged as one.

This is also why pyinit never starts a child with ``subprocess.Popen`` or
``trio.run_process``: their own ``waitpid(pid)`` races this loop, and when
the loop wins, CPython reports the lost status as exit code 0.  A child
started from another thread is started inside :meth:`Reaper.spawning`, so
that it is watched before the loop can reap it.

A child that is pyinit's own helper (the figures of ``pyinitctl status``,
:mod:`pyinit.run.control`; the probe runner, :mod:`pyinit.run.proberunner`)
is watched as a helper:
it is reaped and handed over like any child, and :meth:`Reaper.helpers`
names it while it runs, so that no stop takes it for a leftover.
"""

from __future__ import annotations

import _thread
import os

from pyinit import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Watch(Protocol):
        """What ``reaper.spawning()`` gives: watch a pid just forked (a helper, or not)."""

        def __call__(self, pid: int, helper: bool = False) -> Watched: ...


def describe_status(status: int) -> str:
    """``exit 3`` or ``killed by SIGTERM`` for logs."""
    from pyinit.plan.signals import signal_name

    if os.WIFSIGNALED(status):
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by {signal_name(os.WTERMSIG(status))}{core}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


class Watched:
    """One watched child: its pid, and its wait status once reaped (None while it runs).

    The reaper sets :attr:`status` exactly once, and forgets the pid as it
    does; whoever holds this object owns the status from then on.
    """

    __slots__ = ("pid", "status")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None

    @property
    def exited(self) -> bool:
        """True once the child has been reaped."""
        return self.status is not None


class Reaper:
    """Reaps all children and hands each watched one's status over, once.

    Thread-safe: :meth:`reap` runs in the signal intake (the main thread),
    :meth:`spawning` and :meth:`watch` may be used from the event loop.
    Holds only the pids that run and are watched: nothing grows with the
    number of processes started.
    """

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._watched: dict[int, Watched] = {}
        #: The watched pids that are pyinit's own helpers, not yet reaped.
        self._helpers: set[int] = set()
        self._listener: Callable[[list[tuple[int, int]]], None] | None = None

    def watch(self, pid: int) -> Watched:
        """Watch ``pid`` (a child not yet waited for): its status will appear in the result."""
        with self._lock:
            return self._watch_locked(pid)

    def _watch_locked(self, pid: int, helper: bool = False) -> Watched:
        if pid in self._watched:
            # A live pid cannot be forked again: someone watches one child twice.
            log.error(f"internal error: pid {pid} is watched already; the new watch wins")
        watched = self._watched[pid] = Watched(pid)
        if helper:
            self._helpers.add(pid)
        return watched

    def helpers(self) -> set[int]:
        """The pids of pyinit's own helpers not yet reaped: never a leftover to stop."""
        with self._lock:
            return set(self._helpers)

    def kill(self, watched: Watched, signum: int) -> None:
        """Send ``signum`` to a watched child, unless it was reaped already.

        Under the lock: no reap can free the pid (for another process to
        get) between the look and the kill.
        """
        with self._lock:
            if watched.status is None:
                try:  # noqa: SIM105  (no contextlib on a plain target's path)
                    os.kill(watched.pid, signum)
                except ProcessLookupError:
                    pass

    def tracked(self) -> int:
        """How many pids are watched and not yet reaped."""
        return len(self._watched)

    def spawning(self) -> _Spawning:
        """``with reaper.spawning() as watch: w = watch(spawn())``: no reap in between.

        ``watch(pid, helper=True)`` watches one of pyinit's own helpers (:meth:`helpers`).
        """
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
            watched = self._watched.pop(pid, None)
            self._helpers.discard(pid)
            if watched is not None:
                watched.status = status  # handed over; the pid is free for the next fork
            if log.level() >= log.VERBOSE:
                log.info(f"reaped {pid} ({describe_status(status)})")
        return reaped


class _Spawning:
    """Holds the reaper's lock while a child is started and watched."""

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper

    def __enter__(self) -> Watch:
        self._reaper._lock.acquire()
        return self._reaper._watch_locked

    def __exit__(self, *exc: object) -> None:
        self._reaper._lock.release()
