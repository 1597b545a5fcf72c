"""The processes below pyinit: what the target left behind.

Orphans are reparented to PID 1 (or to a subreaper), so everything the
target left behind is found by walking ``/proc/PID/task/TID/children`` down
from pyinit itself, and nothing outside our subtree (a ``docker exec``
session, the host's processes) is ever touched.  Reading those files
directly costs one small read per process, where building psutil's whole
process table costs a read of every process on the machine (and ~8 ms of
import on every stop).

The pids in /proc are those of the PID namespace /proc was mounted for.  A
PID namespace without its own /proc (``unshare --pid --fork`` without
``--mount-proc``) shows the host's pids, which mean other processes here:
then :func:`descendants` returns None and nothing is signalled.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Container

#: Said when :func:`descendants` cannot answer.
FOREIGN_PROC = (
    "/proc is not this PID namespace's (mount it, e.g. unshare --mount-proc): "
    "leftover processes cannot be found and are not stopped"
)
#: While draining leftovers, the longest wait between two scans (a grandchild
#: whose parent is alive exits without telling us).
DRAIN_POLL_SECONDS = 0.05


def proc_is_ours() -> bool:
    """Whether /proc shows this PID namespace (``/proc/self`` is our own pid)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def has_children() -> bool:
    """Whether this process has a child at all, a zombie included; reaps nothing.

    One system call (``waitid`` with ``WNOWAIT``).  Without a child nothing
    can be below this process: an orphan is reparented to us, so every
    descendant hangs under one of our children, and there is nothing to scan.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def descendants(skip: Container[int] = ()) -> list[int] | None:
    """Pids of every process below this one (zombies included), or None if /proc is not ours.

    The children in ``skip`` are left out with everything below them (a
    supervised process still running: what it started is its own to stop).
    """
    if not proc_is_ours():
        return None
    found: list[int] = []
    pending = [pid for pid in _children(os.getpid()) if pid not in skip]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(_children(pid))
    return found


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` ([] once it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return kids


def signal_all(pids: list[int], signum: int) -> None:
    """Send ``signum`` to each pid; ones that are gone or not ours to signal are skipped."""
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue


class LeftoverSignals:
    """The leftovers' stop, one scan at a time: each found gets the current signal once.

    :meth:`set_signal` is the stop primitive's ``send``: SIGTERM on the
    leftovers' turn, SIGKILL at ``kill_at``.  :meth:`apply` signals a scan's
    finds: SIGTERM to each not signalled yet (a slow main's orphans, found
    once it is gone), SIGKILL to all of them, again on every scan.  Shared by
    the event loop and the plain target's synchronous driver.
    """

    def __init__(self) -> None:
        self.signal = 0
        #: The leftovers sent the stop signal (each once).
        self._termed: set[int] = set()
        self._killing_told = False

    def set_signal(self, sig: int) -> None:
        """From now on, :meth:`apply` sends ``sig``."""
        self.signal = sig

    def apply(self, found: list[int]) -> None:
        """Send the current signal to the leftovers found that need it."""
        from pyinit import log
        from pyinit.plan.signals import signal_name

        if self.signal == signal.SIGKILL:
            stubborn = [pid for pid in found if pid in self._termed]
            if stubborn and not self._killing_told:
                log.notice(f"{len(stubborn)} leftover process(es) ignored SIGTERM: sending SIGKILL")
                self._killing_told = True
            signal_all(found, signal.SIGKILL)  # again on every scan: whatever is still there
            return
        new = [pid for pid in found if pid not in self._termed]
        if self.signal and new:
            log.info(f"stopping {len(new)} leftover process(es) with {signal_name(self.signal)}")
            signal_all(new, self.signal)
            self._termed.update(new)
