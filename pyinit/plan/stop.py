"""The stop policy: one ``--stop-timeout`` deadline, shared out in turns.

A stop begins with the first stop signal (TERM, INT, QUIT, or one rewritten
to them), the target's own exit or a sidecar's give-up, whichever comes
first, at ``T``.  From that instant ``--stop-timeout`` seconds cover
everything that is left: the main, the sidecars (and a task still running),
the leftovers, the ``--post`` hooks (and a pre hook interrupted by the stop).

:class:`StopBudget` is the policy, decided from the plan alone and shown by
``--dry-run``: the time before the final SIGKILL is split into equal
**turns**, one per process to stop (the main, each item in reverse start
order, the leftovers) and one per post hook.

* Each process's stop signal goes out when the one before it is gone, and
  at the latest when that one's turn ends (``signal_by``): a main that
  ignores its signal delays the sidecars' stop signals by one turn, never
  takes their grace.  A process whose turn ended keeps running with its
  stop signal: nothing gets SIGKILL before every process got its stop
  signal and at least one turn of grace.
* ``kill_by`` (after the last process turn): SIGKILL to every process still
  running, and the post hooks follow once they are reaped.
* Each post hook runs when the one before it ended and is cut off by its
  own ``kill_by`` (SIGTERM up to 1 s before): a hung hook cannot take the
  turn of the next.
* ``exit_at = T + timeout``: pyinit exits, having reaped what the kernel
  tore down in the last ``grace`` (at most 0.5 s, a quarter of a short
  timeout).

The turns' ends are fixed offsets from ``T``: time a turn does not use
(its process stopped at once) flows to the turns after it.

``--stop-delay`` (``delay``) is the first part of the budget: after a stop
signal pyinit reports not-ready at once and forwards the signal to the main
only ``delay`` later (draining), so every turn starts ``delay`` later and
the turns share what is left.  A stop that is not a stop signal (the main
exited, a give-up) has no drain: the main's SIGTERM goes out at once and its
turn simply lasts ``delay`` longer.

Pure arithmetic on ``time.monotonic()`` values, shared by the supervisor's
event loop, its synchronous emergency path and the pre-hook relay.  The
default timeout is the plan's (:data:`pyinit.plan.build.DEFAULT_STOP_TIMEOUT`):
the exec path has no stop and does not load this module.
"""

from __future__ import annotations

import signal

from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Plan

#: Time reserved after the final SIGKILL for the kernel to tear processes down.
KILL_GRACE = 0.5
#: What a process started during the stop gets between SIGTERM and SIGKILL, at most.
TERM_GRACE = 1.0
#: The turn of what the main and the items left behind.
LEFTOVERS = "leftovers"


def kill_grace(timeout: float) -> float:
    """The time left after the final SIGKILL for the kernel's teardown."""
    return min(KILL_GRACE, timeout / 4)


class StopDeadline(Record):
    """A stop that began at ``start`` (monotonic seconds) and must end ``timeout`` later."""

    __slots__ = ("start", "timeout")
    start: float
    timeout: float

    @property
    def kill_at(self) -> float:
        """When whatever still runs gets SIGKILL, at the latest."""
        return self.start + self.timeout - kill_grace(self.timeout)

    @property
    def exit_at(self) -> float:
        """When pyinit exits, whatever happened."""
        return self.start + self.timeout


class StopTurn(Record):
    """One process's turn: its stop signal goes out at the latest ``signal_by`` after the stop."""

    __slots__ = ("signal_by", "who")
    #: ``main``, ``sidecar NAME``, ``task NAME`` or ``leftovers``.
    who: str
    signal_by: float


class HookTurn(Record):
    """One post hook's turn: it starts when the one before ended, cut off ``kill_by`` in."""

    __slots__ = ("kill_by", "label")
    label: str
    kill_by: float


class StopBudget(Record):
    """How ``--stop-timeout`` is shared out; every time in seconds after the stop began."""

    __slots__ = ("delay", "grace", "hooks", "kill_by", "share", "timeout", "turns")
    timeout: float
    #: The drain after a stop signal (``--stop-delay``): the main's signal goes out then.
    delay: float
    #: The length of one turn.
    share: float
    #: The processes, in the order they are stopped.
    turns: tuple[StopTurn, ...]
    #: SIGKILL to every process (of ``turns``) still running.
    kill_by: float
    hooks: tuple[HookTurn, ...]
    #: Left after the last SIGKILL for the kernel to tear processes down.
    grace: float

    @classmethod
    def for_stop(
        cls,
        timeout: float,
        stopped: tuple[str, ...],
        hooks: tuple[str, ...],
        delay: float = 0.0,
    ) -> StopBudget:
        """The budget for the main, then ``stopped`` (in stop order), leftovers and ``hooks``.

        ``delay`` (less than ``timeout``, checked in the plan) comes first;
        the turns share the rest.
        """
        grace = min(kill_grace(timeout), timeout - delay)
        who = ("main", *stopped, LEFTOVERS)
        share = (timeout - delay - grace) / (len(who) + len(hooks))
        return cls(
            timeout=timeout,
            delay=delay,
            share=share,
            turns=tuple(StopTurn(who=w, signal_by=delay + i * share) for i, w in enumerate(who)),
            kill_by=delay + len(who) * share,
            hooks=tuple(
                HookTurn(label=label, kill_by=delay + (len(who) + i + 1) * share)
                for i, label in enumerate(hooks)
            ),
            grace=grace,
        )

    def turn_end(self, index: int) -> float:
        """When turn ``index`` ends: the next turn's ``signal_by``, or ``kill_by`` for the last."""
        if index + 1 < len(self.turns):
            return self.turns[index + 1].signal_by
        return self.kill_by


def stop_budget(plan: Plan) -> StopBudget:
    """The plan's budget: items in reverse start order, post hooks in order."""
    stopped = tuple(f"{item.kind} {item.name}" for item in reversed(plan.items))
    hooks = tuple(hook.label for hook in plan.post_hooks)
    return StopBudget.for_stop(plan.stop_timeout, stopped, hooks, plan.stop_delay)


def stop_schedule(now: float, kill_at: float) -> tuple[tuple[float, int], ...]:
    """(when, signal) steps for a process started at ``now`` that must be gone by ``kill_at``.

    Used for a post hook (or a pre hook when the stop arrives while it runs):
    SIGTERM to its group in good time, at most 1 s (or half of what is left)
    before SIGKILL at ``kill_at``.
    """
    term_at = max(now, kill_at - min(TERM_GRACE, (kill_at - now) / 2))
    return ((term_at, signal.SIGTERM), (kill_at, signal.SIGKILL))
