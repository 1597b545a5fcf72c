"""Restart decisions for a sidecar (docs/services.md), as pure logic over a clock.

Nothing here sleeps, forks or imports trio: :class:`RestartTracker` is told
when a run started and how it ended, and answers with a :class:`Decision`
(restart after a delay, stay down, or give up with an exit code).  The
services layer carries the decision out; tests drive it with a fake clock.

* ``restart=always`` restarts after any exit, ``on-failure`` after a non-zero
  exit or a death by signal, ``never`` never;
* the delay starts at ``backoff_min`` and doubles up to ``backoff_max``; a
  run that lasted at least ``backoff_max`` seconds resets it; each delay is
  moved by up to :data:`JITTER` of itself, at random but within those
  bounds, so that sidecars failing together do not restart in lockstep;
* ``max-restarts=N/WINDOW``: at most N restarts (N+1 starts) within any
  WINDOW seconds, clean exits included under ``always``;
* a sidecar that needs a restart and may not have one gives up, with its last
  status as the exit code (code, or 128+N; 1 if it last exited 0);
* a start whose fork was refused counts as a start and as a failed run
  (:data:`FAILED_START`): it is retried after the backoff, within the budget;
* before its first readiness a sidecar that would stay down (a clean exit
  under ``on-failure`` or ``never``) gives up too: it can never be ready, and
  the start-up waits for it;
* a start by hand (``pyinitctl start``/``restart``) is not a restart: it does
  not spend the budget and is not counted; a start by hand of a sidecar that
  was down (stopped, exited, gave up) begins with a fresh budget
  (:meth:`RestartTracker.fresh_budget`).
"""

from __future__ import annotations

import os

from pyinit.errors import EXIT_SETUP_FAILED, exit_code_for_wait_status
from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.plan.services import Item

#: Decision actions.
RESTART = "restart"
DONE = "done"  # exited and, by policy, stays down: not a give-up
GIVE_UP = "give-up"

#: The wait status a start whose fork was refused counts as: exit 125, like a failed exec.
FAILED_START = EXIT_SETUP_FAILED << 8

#: Each backoff delay is moved by up to this fraction of itself (+-20%).
JITTER = 0.2


def random_fraction() -> float:
    """A uniformly random number in [0, 1), from the kernel's random source."""
    return int.from_bytes(os.urandom(4)) / 2**32


class Decision(Record):
    """What to do after a sidecar's run ended.

    ``delay`` (seconds) is meaningful for RESTART; ``exit_code`` for GIVE_UP
    (what the container exits with under ``on-giveup=stop``); ``reason`` is
    a short phrase for the log.
    """

    __slots__ = ("action", "delay", "exit_code", "reason")
    action: str
    delay: float
    exit_code: int
    reason: str


def failed(status: int) -> bool:
    """True when a wait status is a failure: a non-zero exit or a death by signal."""
    return not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)


def giveup_exit_code(status: int) -> int:
    """The container's exit code when a sidecar gives up after ``status``: 1 for a clean exit."""
    code = exit_code_for_wait_status(status)
    return code if code != 0 else 1


class RestartTracker:
    """One sidecar's restart history and policy.

    Call :meth:`started` at every start (the first one included) and
    :meth:`exited` at every exit; times are seconds on any monotonic clock.
    ``random`` gives the jitter (a number in [0, 1); 0.5 means none): tests
    pass their own.  The history holds only the restarts of the last window.
    """

    def __init__(
        self,
        restart: str,
        backoff_min: float,
        backoff_max: float,
        max_restarts: int,
        window: float,
        random: Callable[[], float] = random_fraction,
    ) -> None:
        self.restart = restart
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.max_restarts = max_restarts
        self.window = window
        self.random = random
        #: When each restart (not the first start) began, within the last window.
        self.restart_times: list[float] = []
        #: Every restart the policy made (a start by hand is none), for ``pyinitctl status``.
        self.total_restarts = 0
        self.started_at: float | None = None
        self._delay = backoff_min
        self._starts = 0

    @classmethod
    def for_item(cls, item: Item) -> RestartTracker:
        """A tracker with the policy of a planned sidecar."""
        return cls(
            item.restart, item.backoff_min, item.backoff_max, item.max_restarts, item.restart_window
        )

    def started(self, now: float, *, by_hand: bool = False) -> None:
        """Record a start at ``now``; one ``by_hand`` is no restart of the policy's."""
        if self._starts and not by_hand:
            # Time only moves on: a restart out of the window now never counts again.
            self.restart_times = [t for t in self.restart_times if now - t < self.window]
            self.restart_times.append(now)
            self.total_restarts += 1
        self._starts += 1
        self.started_at = now

    def fresh_budget(self) -> None:
        """Forget the earlier restarts and backoff: a start by hand of a sidecar that was down."""
        self.restart_times = []
        self._delay = self.backoff_min

    def restarts_within_window(self, now: float) -> int:
        """How many restarts began in the WINDOW seconds up to ``now``."""
        return sum(1 for t in self.restart_times if now - t < self.window)

    def exited(self, status: int, now: float, *, ready: bool = True) -> Decision:
        """Decide what follows an exit with wait status ``status`` at ``now``.

        ``ready`` is False when the run ended before the sidecar's first
        readiness: staying down is then a give-up.
        """
        if not self._wants_restart(status):
            if self.restart == "never" and failed(status):
                return self._give_up(status, "restart=never")
            if not ready:
                return self._give_up(status, f"restart={self.restart} after a clean exit")
            return Decision(action=DONE, delay=0.0, exit_code=0, reason=f"restart={self.restart}")
        if self.started_at is not None and now - self.started_at >= self.backoff_max:
            self._delay = self.backoff_min  # it ran long enough: forget the earlier crashes
        delay = self._jittered(self._delay)
        # The restart would begin at now + delay: the budget counts that moment.
        if self.restarts_within_window(now + delay) >= self.max_restarts:
            budget = f"{self.max_restarts} restarts within {self.window:g}s used up"
            return self._give_up(status, budget)
        self._delay = min(max(self._delay * 2, self.backoff_min), self.backoff_max)
        return Decision(action=RESTART, delay=delay, exit_code=0, reason=f"restart={self.restart}")

    def _jittered(self, delay: float) -> float:
        """``delay`` moved by up to JITTER of itself, kept within the backoff bounds."""
        moved = delay * (1 + JITTER * (2 * self.random() - 1))
        return min(max(round(moved, 3), self.backoff_min), self.backoff_max)

    def _wants_restart(self, status: int) -> bool:
        if self.restart == "always":
            return True
        return self.restart == "on-failure" and failed(status)

    def _give_up(self, status: int, reason: str) -> Decision:
        return Decision(
            action=GIVE_UP, delay=0.0, exit_code=giveup_exit_code(status), reason=reason
        )
