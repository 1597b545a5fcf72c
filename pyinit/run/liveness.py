"""Liveness checks (docs/services.md, "Liveness"): is a process that was ready still alive?

From each readiness of a process on, its liveness probe (``alive=`` for a
sidecar, ``--alive`` for the main: a polling probe of :mod:`pyinit.run.probes`,
each call bounded as readiness probes are, an ``exec:`` one run as the
process's user) runs every ``alive-every`` seconds; ``alive-failures`` failed
calls in a row mean dead, and a success resets the count.  One trio task per
checked run, asleep between checks; nothing at all runs, and nothing wakes
pyinit, where no liveness probe is configured.

The result is the owner's ``alive_state`` (what ``pyinitctl status`` and
``health`` read): None without a probe, ``waiting`` until the run is ready,
``ok``, ``failing N/M``, ``dead``.  What dead does is the owner's kind's:

* a sidecar (:class:`SidecarChecks`) is stopped with the one stop primitive
  (its stop-signal to its group, SIGKILL after ``--stop-timeout``), and its
  exit goes through its restart policy as a failure, whatever it exits with
  (:meth:`SidecarChecks.counted`): a liveness kill spends the restart
  budget, and under ``restart=never`` it gives up;
* the main (:class:`MainChecks`) stays as it is, and ``health`` reports it
  unhealthy; with ``--on-unhealthy stop`` the container's stop begins as a
  SIGTERM's would, and pyinit exits 128+SIGTERM (143).

The drivers call :meth:`Checks.reset` when a run starts, :meth:`Checks.begin`
when it is ready and :meth:`Checks.end` when it ends or the shutdown begins.
"""

from __future__ import annotations

import math
import signal

import trio

from pyinit import log
from pyinit.errors import SIGNAL_EXIT_BASE
from pyinit.run import probes
from pyinit.run.restart import failed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import Protocol

    from pyinit.plan.services import Liveness
    from pyinit.run.loop import Supervision
    from pyinit.run.reaper import Watched
    from pyinit.run.services import ItemRun

    class Owner(Protocol):
        """Whose runs are checked: an :class:`ItemRun` or the loop's ``Supervision``."""

        alive_state: str | None

        @property
        def stopping(self) -> bool: ...


#: ``alive_state`` values (besides ``failing N/M``).
WAITING = "waiting"
OK = "ok"
DEAD = "dead"

#: A liveness kill counts as a failure: a run that exits 0 when stopped counts as this.
FAILED_LIVENESS = 1 << 8  # the wait status of exit 1


#: Check instants are rounded up to a grid of this share of ``alive-every`` (at most
#: :data:`MAX_GRID` seconds): processes that became ready a few ms apart share one wake-up.
GRID_SHARE = 0.25
MAX_GRID = 1.0


def next_check(previous: float, every: float) -> float:
    """The instant of the check after one at ``previous`` (trio's clock): ``every`` later,
    rounded up to the grid (systemd's timer coalescing, AccuracySec, on a small scale)."""
    grid = min(every * GRID_SHARE, MAX_GRID)
    return math.ceil((previous + every) / grid) * grid


class Checks:
    """One process's liveness checks: from each readiness of a run until its end.

    Without a probe (``alive`` None) every method does nothing and
    ``alive_state`` stays None.
    """

    def __init__(
        self,
        alive: Liveness | None,
        owner: Owner,
        label: str,
        nursery: trio.Nursery,
        run_probe_command: Callable[[Sequence[str]], Awaitable[int]],
    ) -> None:
        self.alive = alive
        self.owner = owner
        self.label = label
        self._nursery = nursery
        self._run_probe_command = run_probe_command
        self._scope: trio.CancelScope | None = None

    def reset(self) -> None:
        """A new run starts: no checks until it is ready."""
        self.end()
        if self.alive is not None:
            self.owner.alive_state = WAITING

    def begin(self, run: Watched) -> None:
        """``run`` is ready: check it every ``alive-every`` seconds from now on."""
        if self.alive is None or self.owner.stopping:
            return
        self.end()
        self.owner.alive_state = OK
        self._scope = trio.CancelScope()
        self._nursery.start_soon(self._check, run, self._scope)

    def end(self) -> None:
        """No more checks of this run (it ended, or the shutdown began); a kill under way stops."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _check(self, run: Watched, scope: trio.CancelScope) -> None:
        alive = self.alive
        assert alive is not None
        check = probes.checker(alive.probe, self._run_probe_command)
        failures = 0
        due = trio.current_time()
        with scope:
            while True:
                due = next_check(due, alive.every)
                await trio.sleep_until(due)
                if self.owner.stopping:
                    return
                if await probes.check_once(check):
                    failures = 0
                    self.owner.alive_state = OK
                    continue
                failures += 1
                if failures < alive.failures:
                    self.owner.alive_state = f"failing {failures}/{alive.failures}"
                    continue
                self.owner.alive_state = DEAD
                await self.dead(run, f"{failures} {'time' if failures == 1 else 'times'}")
                return

    async def dead(self, run: Watched, times: str) -> None:
        """The run failed its check ``times`` in a row: the owner's kind decides what follows."""
        raise NotImplementedError


class SidecarChecks(Checks):
    """A sidecar's checks: a dead run is stopped, and its exit counts as a failure."""

    def __init__(self, item_run: ItemRun) -> None:
        item = item_run.item
        super().__init__(
            item.alive, item_run, item_run.label, item_run.sup.nursery, item_run.run_probe_command
        )
        self.item_run = item_run
        #: Whether the current run was stopped by its liveness check.
        self.killed = False

    def reset(self) -> None:
        """A new run starts: unchecked until ready, and not killed."""
        super().reset()
        self.killed = False

    def counted(self, status: int) -> int:
        """The wait status the policy gets: a liveness kill is a failure (exit 0 counts as 1)."""
        return FAILED_LIVENESS if self.killed and not failed(status) else status

    async def dead(self, run: Watched, times: str) -> None:
        """Stop the run with the one stop primitive; its restart policy takes its exit."""
        assert self.alive is not None
        item = self.item_run.item
        then = "restarting" if item.restart != "never" else "stopping it (restart=never)"
        log.warning(
            f"{self.label} failed its liveness check {times} in a row ({self.alive.probe.text}):"
            f" {then}"
        )
        self.killed = True
        # As a stop by hand: its stop-signal, --stop-timeout of grace, SIGKILL.
        await self.item_run.stop_dead(run)


class MainChecks(Checks):
    """The main's checks: dead makes health unhealthy, and stops the container if asked to."""

    def __init__(self, sup: Supervision) -> None:
        super().__init__(sup.plan.alive, sup, "main", sup.nursery, sup.run_probe_command)
        self.sup = sup

    async def dead(self, run: Watched, times: str) -> None:
        """Say so; under ``--on-unhealthy stop`` begin the container's stop (exit 143)."""
        assert self.alive is not None
        said = f"main failed its liveness check {times} in a row ({self.alive.probe.text})"
        if self.sup.plan.on_unhealthy != "stop":
            log.warning(f"{said}: unhealthy (--on-unhealthy ignore: the container runs on)")
            return
        log.error(f"{said}: stopping the container (--on-unhealthy stop)")
        self.sup.give_up(SIGNAL_EXIT_BASE + signal.SIGTERM)
