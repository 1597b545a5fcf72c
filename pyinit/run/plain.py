"""A plain target's whole life, supervised synchronously: no trio, no second thread.

A main with no sidecars, tasks, ``--ready``, ``--alive`` or upward ``NOTIFY_SOCKET`` has
nothing to run concurrently, so the launcher's own thread supervises it
for its whole life (docs/design.md, "A plain target"): the signal intake
(:class:`pyinit.run.intake.Intake`) takes every signal with
``sigwaitinfo``, forwards it and reaps, until the main exits or a stop
begins; then the stop in the budget's turns (:class:`pyinit.plan.stop.StopBudget`),
with the stop primitive's synchronous twin (:func:`pyinit.stopping.stop_now`):

1. the main's turn: its stop signal was forwarded (after a stop signal and
   ``--stop-delay``: once the drain is over); its end is awaited until the
   turn ends;
2. the leftovers' turn: SIGTERM to every process below pyinit but the main's
   subtree while it runs, rescanned on every reap; at ``kill_by`` SIGKILL to
   the main's group (if still there) and to every leftover;
3. the post hooks, each cut off at the end of its turn
   (:func:`pyinit.run.posthooks.run_post_hooks_now`).

The main's state is a :class:`pyinit.run.lifecycle.Tracked`, advanced by
the same transition the event loop uses.  The log lines are the loop's.
"""

from __future__ import annotations

import signal
import time

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED, SIGNAL_EXIT_BASE, exit_code_for_wait_status
from pyinit.plan.signals import signal_name
from pyinit.plan.stop import stop_budget
from pyinit.run import lifecycle
from pyinit.run.descendants import DRAIN_POLL_SECONDS, FOREIGN_PROC, LeftoverSignals, descendants
from pyinit.run.reaper import describe_status
from pyinit.stopping import kill_group, stop_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Plan
    from pyinit.run.intake import Intake
    from pyinit.run.posthooks import HookRun
    from pyinit.run.reaper import Watched
    from pyinit.run.supervisor import Handoff

_FOREVER = float("inf")


def is_plain(plan: Plan) -> bool:
    """Whether the plan's main is supervised without the event loop (nothing concurrent).

    Items, a ``--ready`` or ``--alive`` probe and an upward ``NOTIFY_SOCKET``
    each need the loop.
    """
    return (
        not plan.items and plan.ready is None and plan.alive is None and plan.notify_socket is None
    )


class PlainRun:
    """The plain main's supervision: its life, its stop, the leftovers, the post hooks."""

    def __init__(
        self, plan: Plan, intake: Intake, handoff: Handoff, main: Watched, hooks: list[HookRun]
    ) -> None:
        self.plan = plan
        self.intake = intake
        self.main = main
        #: The main's state (what ``pyinitctl status`` shows), started by the launcher.
        self.life = handoff.main_life
        #: The post hooks run so far (what ``pyinitctl status`` shows of them).
        self.hooks = hooks
        self._leftovers = LeftoverSignals()
        self._foreign_told = False
        #: The main's stop, once its turn came while it ran.
        self._main_stop: lifecycle.RunStop | None = None

    def run(self) -> int:
        """Supervise until everything is stopped and the post hooks ran; pyinit's exit code."""
        intake = self.intake  # made with exit_early=False: the stop is decided here
        intake.wait_until(_FOREVER, lambda: self._main_gone() or intake.stopping)
        deadline = intake.begin_stop()
        budget = stop_budget(self.plan)
        if intake.draining:
            # --stop-delay: the main serves on, reported stopping, until the
            # delay is up, a second stop signal is forwarded or it exits.
            intake.wait_until(deadline.start + budget.delay, self._drain_over)
            intake.end_drain()
        kill_at = deadline.start + budget.kill_by
        # The main's stop signal was forwarded (first_signal None): SIGKILL at kill_at.
        turn = lifecycle.Stop(
            first_signal=None, term_at=kill_at, kill_at=kill_at, reap_by=deadline.exit_at
        )
        for action in self.life.feed(turn, time.monotonic()):
            if isinstance(action, lifecycle.RunStop):
                self._main_stop = action
                intake.wait_until(deadline.start + budget.turn_end(0), self._main_gone)
        # The leftovers' turn carries out the rest of the main's stop too (its
        # SIGKILL at the same kill_at): one thread, one primitive.
        stop_now(
            self._send,
            self._all_ended_by,
            signal.SIGTERM,
            time.monotonic(),
            kill_at,
            deadline.exit_at,
        )
        code = self._exit_code()
        if self.plan.post_hooks:  # imported only then: the plain life holds no more than it uses
            from pyinit.run.posthooks import run_post_hooks_now

            reaper, wait_until = intake.reaper, intake.wait_until
            run_post_hooks_now(self.plan, budget, deadline, code, reaper, wait_until, self.hooks)
        return self.plan.exit_code_for_main(code)  # the hooks saw the real code

    def _drain_over(self) -> bool:
        """True once the main is gone or a second stop signal ended the drain."""
        return self._main_gone() or not self.intake.draining

    def _main_gone(self) -> bool:
        """True once the main was reaped; feeds its exit to its life, once, with the loop's line."""
        status = self.main.status
        if status is None:
            return False
        if self.life.life.alive:
            self.life.feed(lifecycle.exited(status), time.monotonic())
            log.info(f"target {self.main.pid} exited ({describe_status(status)})")
        return True

    def _exit_code(self) -> int:
        status = self.main.status
        if status is None:  # not reaped by the deadline (cannot outlive SIGKILL): as killed
            return SIGNAL_EXIT_BASE + signal.SIGKILL
        return exit_code_for_wait_status(status)

    def _send(self, sig: int) -> None:
        """The stop primitive's ``send``: to the leftovers from now on; SIGKILL to the main too."""
        if sig == signal.SIGKILL and self._main_stop is not None and not self._main_gone():
            log.notice(f"target still running at the deadline: sending {signal_name(sig)}")
            kill_group(self.main.pid, sig)
            self.life.feed(lifecycle.Signalled(signum=sig), time.monotonic())
        self._leftovers.set_signal(sig)

    def _all_ended_by(self, when: float) -> bool:
        """Scan and signal the leftovers until none is left and the main is gone, or ``when``."""
        while True:
            began = time.monotonic()
            skip = self.intake.reaper.helpers()  # pyinit's own (a status's figures)
            if not self._main_gone():
                skip.add(self.main.pid)
            found = descendants(skip)
            if found is None:
                if not self._foreign_told:
                    log.warning(FOREIGN_PROC)
                    self._foreign_told = True
                found = []
            self._leftovers.apply(found)
            if not found and self._main_gone():
                return True
            if began >= when:
                return False
            # Rescan on every reap, at the latest after a poll interval (a
            # grandchild whose parent is alive exits without telling us).
            poll = min(when, time.monotonic() + max(DRAIN_POLL_SECONDS, time.monotonic() - began))
            self.intake.wait_for_reap(poll)


def supervise_plain(
    plan: Plan, intake: Intake, handoff: Handoff, main: Watched, hooks: list[HookRun]
) -> int:
    """Supervise a plain main to the end; the synchronous stop if pyinit itself fails.

    Each post hook's run is appended to ``hooks`` (the control server reads it).
    """
    try:
        return PlainRun(plan, intake, handoff, main, hooks).run()
    except Exception as e:  # pyinit's own bug: the target must still be stopped
        log.error(f"supervisor failed: {type(e).__name__}: {e}; stopping the target")
        intake.emergency_stop(handoff.main_life)
        return EXIT_SETUP_FAILED
