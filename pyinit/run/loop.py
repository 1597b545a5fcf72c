"""The supervisor's event loop: the main's life, the one-deadline shutdown, post hooks.

Runs in its own thread once trio is imported (the signal intake,
:mod:`pyinit.run.intake`, keeps the main thread and forwards and reaps from
the fork on).  :func:`run` creates all state inside ``trio.run``.

The shape, with the place where services go (GUIDE section 8):

1. start the items before the main (sidecars, tasks: later), then the main
   (today the launcher has already forked it, before trio was imported);
2. wait for the main's exit; after a stop signal, SIGKILL its group at the
   deadline's ``kill_at``;
3. shut down under the one deadline (:class:`pyinit.plan.stop.StopDeadline`):
   stop the main -> the items in reverse start order (later) -> leftovers
   (TERM, wait, KILL at ``kill_at``) -> post hooks, each on the stop
   schedule; pyinit exits by ``exit_at``.

Every process is awaited the same way: started inside
``reaper.spawning()``, then ``await supervision.wait_exit(pid)``.
"""

from __future__ import annotations

import contextlib
import signal
import time

import trio

from pyinit import log
from pyinit.errors import PyinitError, exit_code_for_wait_status
from pyinit.plan.stop import StopDeadline, stop_schedule
from pyinit.root.hooks import escalation_notice, kill_group, spawn_hook
from pyinit.run.descendants import FOREIGN_PROC, descendants, signal_all
from pyinit.run.reaper import describe_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Hook, Plan
    from pyinit.run.intake import Intake

#: While draining leftovers, the longest wait between two scans (a grandchild
#: whose parent is alive exits without telling us).
DRAIN_POLL_SECONDS = 0.05


def run(plan: Plan, intake: Intake) -> int | None:
    """Supervise until done; pyinit's exit code, or None if pyinit finished without the loop."""
    return trio.run(_supervise, plan, intake)


async def _supervise(plan: Plan, intake: Intake) -> int | None:
    async with trio.open_nursery() as nursery:
        supervision = Supervision(plan, intake, nursery)
        token = trio.lowlevel.current_trio_token()
        intake.reaper.listen(lambda reaped: _call(token, supervision.on_reaped, reaped))
        if not intake.attach(token.run_sync_soon, supervision.on_stop):
            nursery.cancel_scope.cancel()
            return None
        code = await supervision.run()
        nursery.cancel_scope.cancel()
    return code


def _trio_time(monotonic: float) -> float:
    """A ``time.monotonic()`` instant (the deadline's clock) on trio's clock (another offset)."""
    return monotonic - time.monotonic() + trio.current_time()


def _call(token: trio.lowlevel.TrioToken, fn: object, *args: object) -> None:
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn, *args)  # type: ignore[arg-type]


class Supervision:
    """The loop's state: who is awaited, the stop deadline, the shutdown sequence."""

    def __init__(self, plan: Plan, intake: Intake, nursery: trio.Nursery) -> None:
        self.plan = plan
        self.intake = intake
        self.reaper = intake.reaper
        self.main = intake.target
        self.nursery = nursery
        self._exits: dict[int, trio.Event] = {}
        self._changed = trio.Event()
        self._stop_begun = trio.Event()
        self.deadline = StopDeadline(start=float("inf"), timeout=0.0)
        #: Leftovers still running at the last scan.
        self._alive: list[int] = []

    # --- told by the intake (through run_sync_soon) -----------------------------------

    def on_reaped(self, reaped: list[tuple[int, int]]) -> None:
        """Wake whoever awaits one of these pids, and whoever waits for any change."""
        for pid, _ in reaped:
            event = self._exits.pop(pid, None)
            if event is not None:
                event.set()
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def on_stop(self, deadline: StopDeadline) -> None:
        """A stop began (a stop signal, or the main's exit)."""
        self.deadline = deadline
        self._stop_begun.set()

    # --- the interface for every supervised process --------------------------------------

    async def wait_exit(self, pid: int) -> int:
        """The wait status of watched ``pid``, once the reaper has it."""
        while (status := self.reaper.status_of(pid)) is None:
            await self._exits.setdefault(pid, trio.Event()).wait()
        return status

    def spawn_hook(self, hook: Hook, env: dict[str, str]) -> int:
        """Start a hook in its own group, watched before the reaper can see it exit."""
        with self.reaper.spawning() as watch:
            pid = spawn_hook(hook, env, own_group=True)
            watch(pid)
        return pid

    # --- the life ------------------------------------------------------------------------

    async def run(self) -> int:
        """Main, then the shutdown sequence; the main's exit code."""
        # Items (sidecars, tasks) start here, before the main, in order.
        self.nursery.start_soon(self._kill_main_at_deadline)
        status = await self.wait_exit(self.main)
        log.info(f"target {self.main} exited ({describe_status(status)})")
        self.deadline = self.intake.begin_stop()
        code = exit_code_for_wait_status(status)
        await self.shutdown(code)
        return code

    async def _kill_main_at_deadline(self) -> None:
        await self._stop_begun.wait()
        await trio.sleep_until(_trio_time(self.deadline.kill_at))
        if self.reaper.status_of(self.main) is None:
            log.notice(
                f"target still running {self.plan.stop_timeout:g}s into the stop: sending SIGKILL"
            )
            kill_group(self.main, signal.SIGKILL)

    async def shutdown(self, code: int) -> None:
        """Everything after the main, under the one deadline."""
        with trio.CancelScope(deadline=_trio_time(self.deadline.kill_at)) as scope:
            # Items stop here, in reverse start order, each with its stop-signal.
            await self._term_leftovers()
        if self._alive or scope.cancelled_caught:
            await self._kill_leftovers()
        await self._run_post_hooks(code)

    # --- leftovers -----------------------------------------------------------------------

    async def _scan(self) -> list[int] | None:
        # In a worker thread: 20,000 leftovers take a while to read, and the
        # deadline must fire on time (an abandoned scan is harmless).
        return await trio.to_thread.run_sync(descendants, abandon_on_cancel=True)

    async def _term_leftovers(self) -> None:
        """TERM what the main left behind and wait until it is gone (``_alive``: what is not)."""
        found = await self._scan()
        if found is None:
            log.warning(FOREIGN_PROC)
            return
        if not found:
            return
        log.info(f"stopping {len(found)} leftover process(es) with SIGTERM")
        signal_all(found, signal.SIGTERM)
        self._alive = found
        while self._alive:
            began = time.monotonic()
            found = await self._scan()
            self._alive = found or []
            # Rescan when something was reaped, at the latest after a poll
            # interval, and never more often than a scan takes.
            with trio.move_on_after(max(DRAIN_POLL_SECONDS, time.monotonic() - began)):
                await self._changed.wait()

    async def _kill_leftovers(self) -> None:
        if self._alive:
            log.notice(f"{len(self._alive)} leftover process(es) ignored SIGTERM: sending SIGKILL")
            signal_all(self._alive, signal.SIGKILL)
        with trio.move_on_at(_trio_time(self.deadline.exit_at)):
            while alive := (await self._scan() or []):
                signal_all(alive, signal.SIGKILL)
                with trio.move_on_after(DRAIN_POLL_SECONDS):
                    await self._changed.wait()

    # --- post hooks ----------------------------------------------------------------------

    async def _run_post_hooks(self, code: int) -> None:
        env = dict(self.plan.env)
        env["PYINIT_EXIT_CODE"] = str(code)
        for hook in self.plan.post_hooks:
            if time.monotonic() >= self.deadline.kill_at:
                log.warning(f"post hook {hook.label} not run: the --stop-timeout deadline passed")
                continue
            try:
                status = await self._run_hook(hook, env)
            except PyinitError as e:
                log.error(e.message)
                continue
            log.info(f"post hook {hook.label}: {describe_status(status)}")
            if status != 0:
                log.warning(f"post hook {hook.label} failed: {describe_status(status)}")

    async def _run_hook(self, hook: Hook, env: dict[str, str]) -> int:
        """Run a hook as root in its own group, on the stop schedule."""
        pid = self.spawn_hook(hook, env)
        status: int | None = None
        for when, sig in stop_schedule(self.deadline, time.monotonic()):
            with trio.move_on_at(_trio_time(when)):
                status = await self.wait_exit(pid)
            if status is not None:
                break
            escalation_notice(hook.label, sig)
            kill_group(pid, sig)
        if status is None:
            with trio.move_on_at(_trio_time(self.deadline.exit_at)):
                status = await self.wait_exit(pid)
        kill_group(pid, signal.SIGKILL)  # what the hook left behind in its group
        return int(signal.SIGKILL) if status is None else status  # SIGKILL: a wait status
