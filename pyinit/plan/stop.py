"""The stop policy: one ``--stop-timeout`` deadline, from the stop to pyinit's exit.

A stop begins with the first stop signal (TERM, INT, QUIT, or one rewritten
to them) or with the target's own exit, whichever comes first.  From that
instant ``--stop-timeout`` seconds cover everything that is left: the
target, the processes it left behind, the ``--post`` hooks (and a pre hook
interrupted by the stop).  The schedule, for a stop starting at ``T``:

* ``T``: the stop signal reaches the target; when the target is gone, the
  leftovers get SIGTERM; then the post hooks run;
* ``term_at`` (for a process started after ``T``, i.e. a post hook):
  SIGTERM to its process group, at the latest one second (or half of what
  is left) before ``kill_at``;
* ``kill_at = T + timeout - grace``: SIGKILL to whatever is still running;
* ``exit_at = T + timeout``: pyinit exits, having reaped what the kernel
  tore down in the ``grace`` (at most 0.5 s, a quarter of a short timeout).

Pure arithmetic on ``time.monotonic()`` values, shared by the supervisor's
event loop (one ``trio.CancelScope`` deadline), its synchronous emergency
path and the pre-hook relay.
"""

from __future__ import annotations

import signal

from pyinit.record import Record

#: ``--stop-timeout`` by default: ends well inside Docker's 10 s grace (and Kubernetes' 30 s).
DEFAULT_STOP_TIMEOUT = 8.0
#: Time reserved after the final SIGKILL for the kernel to tear processes down.
KILL_GRACE = 0.5
#: What a process started during the stop gets between SIGTERM and SIGKILL, at most.
TERM_GRACE = 1.0


class StopDeadline(Record):
    """A stop that began at ``start`` (monotonic seconds) and must end ``timeout`` later."""

    __slots__ = ("start", "timeout")
    start: float
    timeout: float

    @property
    def kill_at(self) -> float:
        """When whatever still runs gets SIGKILL."""
        return self.start + self.timeout - min(KILL_GRACE, self.timeout / 4)

    @property
    def exit_at(self) -> float:
        """When pyinit exits, whatever happened."""
        return self.start + self.timeout


def stop_schedule(deadline: StopDeadline, now: float) -> tuple[tuple[float, int], ...]:
    """(when, signal) steps for a process started at ``now`` that must be gone by the deadline.

    Used for a post hook (or a pre hook when the stop arrives while it runs):
    SIGTERM to its group in good time, SIGKILL at ``kill_at``.
    """
    kill_at = deadline.kill_at
    term_at = max(now, kill_at - min(TERM_GRACE, (kill_at - now) / 2))
    return ((term_at, signal.SIGTERM), (kill_at, signal.SIGKILL))
