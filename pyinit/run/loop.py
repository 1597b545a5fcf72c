"""The supervisor's event loop: the main's life, the one-deadline shutdown, post hooks.

Runs in its own thread once trio is imported (the signal intake,
:mod:`pyinit.run.intake`, keeps the main thread and forwards and reaps from
the fork on).  :func:`run` creates all state inside ``trio.run``.

The shape, with the place where services go (docs/services.md):

1. start the items before the main (sidecars, tasks: later), then the main
   (today the launcher has already forked it, before trio was imported);
2. wait for the main's exit; after a stop signal, SIGKILL its group at the
   deadline's ``kill_at``;
3. shut down under the one deadline (:class:`pyinit.plan.stop.StopDeadline`):
   stop the main -> the items in reverse start order (later) -> leftovers
   (TERM, wait, KILL at ``kill_at``) -> post hooks, each on the stop
   schedule; pyinit exits by ``exit_at``.

Every process is awaited the same way: started inside
``reaper.spawning()``, whose watch gives a :class:`pyinit.run.reaper.Watched`,
then ``await supervision.wait_exit(watched)``.  A refused fork is logged
and, for the main, ends the start with 125; items retry it (services).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import trio

from pyinit import log
from pyinit.errors import (
    EXIT_SETUP_FAILED,
    SIGNAL_EXIT_BASE,
    PyinitError,
    exit_code_for_wait_status,
)
from pyinit.plan.build import frozen_env
from pyinit.plan.signals import signal_name
from pyinit.plan.stop import StopDeadline, stop_schedule
from pyinit.root.hooks import escalation_notice, kill_group, spawn_hook
from pyinit.run.descendants import FOREIGN_PROC, descendants, signal_all
from pyinit.run.logrelay import LogRelay
from pyinit.run.probes import single_error
from pyinit.run.reaper import describe_status
from pyinit.run.services import ItemRun
from pyinit.run.spawn import fork_failure, start_target, started_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Hook, Plan
    from pyinit.run.intake import Intake
    from pyinit.run.probes import NotifySocket, ReadyPipe
    from pyinit.run.reaper import Watched

#: While draining leftovers, the longest wait between two scans (a grandchild
#: whose parent is alive exits without telling us).
DRAIN_POLL_SECONDS = 0.05


def run(plan: Plan, intake: Intake) -> int | None:
    """Supervise until done; pyinit's exit code, or None if pyinit finished without the loop."""
    return trio.run(_supervise, plan, intake)


async def _supervise(plan: Plan, intake: Intake) -> int | None:
    try:
        return await _supervise_in_nursery(plan, intake)
    finally:
        log.set_writer(None)


async def _supervise_in_nursery(plan: Plan, intake: Intake) -> int | None:
    async with trio.open_nursery() as nursery:
        supervision = Supervision(plan, intake, nursery)
        token = trio.lowlevel.current_trio_token()
        if plan.items:
            # Among relayed lines, pyinit's own take the relay's queue, whole.
            log.set_writer(supervision.relay.own_lines(token))
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
        self.main: Watched | None = intake.target
        self.nursery = nursery
        self._exits: dict[int, trio.Event] = {}
        self._changed = trio.Event()
        self._stop_begun = trio.Event()
        self.deadline = StopDeadline(start=float("inf"), timeout=0.0)
        #: Leftovers still running at the last scan.
        self._alive: list[int] = []
        #: Sidecars and tasks, in start order.
        self.runs: list[ItemRun] = []
        self.relay = LogRelay(nursery)
        self._shutting_down = False
        self._giveup = trio.Event()
        self._giveup_code = 0

    @property
    def stopping(self) -> bool:
        """True once shutdown began (nothing is restarted any more)."""
        return self._shutting_down or self._stop_begun.is_set()

    def give_up(self, code: int) -> None:
        """A sidecar gave up with on-giveup=stop: shut down, exiting ``code``."""
        if not self._giveup.is_set():
            self._giveup_code = code
            self._giveup.set()

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

    async def wait_exit(self, watched: Watched) -> int:
        """The wait status of a watched child, once the reaper has handed it over."""
        while (status := watched.status) is None:
            # Keyed by pid: an event left by a cancelled wait for an earlier
            # child with this pid only wakes this loop once more.
            await self._exits.setdefault(watched.pid, trio.Event()).wait()
        return status

    def spawn_hook(self, hook: Hook, env: dict[str, str]) -> Watched:
        """Start a hook in its own group, watched before the reaper can see it exit."""
        with self.reaper.spawning() as watch:
            return watch(spawn_hook(hook, env, own_group=True))

    # --- the life ------------------------------------------------------------------------

    async def run(self) -> int:
        """Items, main, then the shutdown sequence; pyinit's exit code."""
        if self.main is None or self.plan.items:
            failed = await self._start_up()
            if failed is not None:
                self.deadline = self.intake.begin_stop()
                await self.shutdown(failed)
                return failed
        self.nursery.start_soon(self._kill_main_at_deadline)
        code = await self._wait_main_or_giveup()
        await self.shutdown(code)
        return code

    async def _start_up(self) -> int | None:
        """Start the items in order, then the main; an exit code if that failed or was stopped."""
        # All at once, before the first checkpoint: the launcher's early-started
        # sidecars are adopted (and so stopped in order) even if a stop cancels
        # the start-up at once.
        self.runs = [
            ItemRun(self, i, self.intake.started.pop(i.name, None)) for i in self.plan.items
        ]
        with trio.CancelScope() as scope:
            self.nursery.start_soon(self._cancel_on, self._stop_begun, scope)
            try:
                for item, run in zip(self.plan.items, self.runs, strict=True):
                    if item.kind == "task":
                        await run.run_task()
                    else:
                        await self.nursery.start(run.run_sidecar)
            except PyinitError as e:
                log.error(e.message)
                return e.exit_code
            except BaseExceptionGroup as group:
                error = single_error(group)
                if not isinstance(error, PyinitError):
                    raise
                log.error(error.message)
                return error.exit_code
            if self.main is None and self.intake.early_stop is None:
                return await self._start_main()
        if self.main is not None:
            # The launcher forked it: a stop while adopting is the main's to
            # take, and the shutdown follows.
            return None
        signum = self.intake.early_stop
        if signum is None:  # a stop without a signal cannot happen before the main: be safe
            return 125
        log.info(f"stopped before the main started ({signal_name(signum)})")
        return SIGNAL_EXIT_BASE + signum

    async def _cancel_on(self, event: trio.Event, scope: trio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async def _start_main(self) -> int | None:
        """Fork the main; 125 if the fork was refused (then nothing of it runs)."""
        plan = self.plan
        channel = None
        if plan.ready is not None and plan.ready.kind in ("notify", "fd"):
            from pyinit.run.probes import open_channel, runs_as

            channel = open_channel(plan.ready, "main", runs_as(plan.identity, plan.switch_identity))
        if channel is not None and channel.env:
            plan = plan.replace(env=frozen_env({**plan.env, **channel.env}))
        pass_fds = channel.pass_fds if channel is not None else None
        try:
            with self.reaper.spawning() as watch:
                child = start_target(plan, self.intake.original_mask, pass_fds)
                self.main = self.intake.target = watch(child.pid)
        except OSError as e:
            if channel is not None:
                channel.close()
            log.error(f"cannot start the target: {fork_failure(e)}")
            return EXIT_SETUP_FAILED
        if channel is not None:
            channel.child_started(child.pid)
        error = await child.exec_result()
        if error is not None:
            log.error(error.message)
        else:
            log.info(started_line(plan, child.pid))
        if plan.is_pid1:
            os.chdir("/")  # do not pin the directory pyinit was started in (a volume)
        if self.intake.early_stop is not None:
            # The stop signal came while the main was being forked: it gets one too.
            self._term_main()
        elif error is None:
            self.nursery.start_soon(self._report_ready, channel)
            return None
        if channel is not None:
            channel.close()
        return None

    def _term_main(self) -> None:
        sig = dict(self.plan.rewrites).get(signal.SIGTERM, signal.SIGTERM)
        if sig:
            log.info(f"sending {signal_name(sig)} to the target")
            self.intake.send_to_target(sig)

    async def _wait_main_or_giveup(self) -> int:
        assert self.main is not None
        main = self.main
        status: int | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on, self._giveup, nursery.cancel_scope)
            status = await self.wait_exit(main)
            nursery.cancel_scope.cancel()
        if status is not None:
            log.info(f"target {main.pid} exited ({describe_status(status)})")
            self.deadline = self.intake.begin_stop()
            return exit_code_for_wait_status(status)
        self.deadline = self.intake.begin_stop()
        self._shutting_down = True
        self._notify_upward("STOPPING=1")
        if not main.exited:
            self._term_main()
        status = await self.wait_exit(main)
        log.info(f"target {main.pid} exited ({describe_status(status)})")
        return self._giveup_code

    async def _report_ready(self, channel: NotifySocket | ReadyPipe | None) -> None:
        """READY=1 to pyinit's own manager once the main is ready (--ready, or exec'd)."""
        if self.plan.ready is not None:
            from pyinit.run import probes

            try:
                await probes.wait_ready(self.plan.ready, name="main", channel=channel)
            except (PyinitError, probes.ProbeFailed) as e:
                log.warning(f"main: not reported ready: {e}")
                return
            finally:
                if channel is not None:
                    channel.close()
            log.info("main is ready")
        if not self.stopping:
            self._notify_upward("READY=1")

    def _notify_upward(self, message: str) -> None:
        address = self.plan.notify_socket
        if not address:
            return
        import socket

        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), address)
        except OSError as e:
            log.warning(f"NOTIFY_SOCKET: cannot send {message}: {e.strerror or e}")

    async def _kill_main_at_deadline(self) -> None:
        assert self.main is not None
        await self._stop_begun.wait()
        await trio.sleep_until(_trio_time(self.deadline.kill_at))
        if not self.main.exited:
            log.notice(
                f"target still running {self.plan.stop_timeout:g}s into the stop: sending SIGKILL"
            )
            kill_group(self.main.pid, signal.SIGKILL)

    async def shutdown(self, code: int) -> None:
        """Everything after the main, under the one deadline."""
        if not self._shutting_down:
            self._shutting_down = True
            self._notify_upward("STOPPING=1")
        with trio.CancelScope(deadline=_trio_time(self.deadline.kill_at)) as scope:
            await self._stop_items()
            await self._term_leftovers()
        if scope.cancelled_caught:
            for run in self.runs:
                if run.pid is not None:
                    log.notice(f"{run.label} still running at the deadline: sending SIGKILL")
                    kill_group(run.pid, signal.SIGKILL)
        if self._alive or scope.cancelled_caught:
            await self._kill_leftovers()
        await self._run_post_hooks(code)
        await self.relay.drain(_trio_time(self.deadline.exit_at))

    async def _stop_items(self) -> None:
        """Sidecars (and a running task) one at a time, in reverse start order."""
        for run in self.runs:
            run.stopping = True
        for run in reversed(self.runs):
            pid = run.stop()
            if pid is not None:
                await self.wait_exit(pid)

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
            # Taken before the scan: a reap during the scan must wake the wait
            # below at once, not after a poll interval.
            changed = self._changed
            found = await self._scan()
            self._alive = found or []
            if not self._alive:
                return
            # Rescan when something was reaped, at the latest after a poll
            # interval, and never more often than a scan takes.
            with trio.move_on_after(max(DRAIN_POLL_SECONDS, time.monotonic() - began)):
                await changed.wait()

    async def _kill_leftovers(self) -> None:
        if self._alive:
            log.notice(f"{len(self._alive)} leftover process(es) ignored SIGTERM: sending SIGKILL")
            signal_all(self._alive, signal.SIGKILL)
        with trio.move_on_at(_trio_time(self.deadline.exit_at)):
            while True:
                changed = self._changed
                alive = await self._scan() or []
                if not alive:
                    break
                signal_all(alive, signal.SIGKILL)
                with trio.move_on_after(DRAIN_POLL_SECONDS):
                    await changed.wait()

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
        run = self.spawn_hook(hook, env)
        status: int | None = None
        for when, sig in stop_schedule(self.deadline, time.monotonic()):
            with trio.move_on_at(_trio_time(when)):
                status = await self.wait_exit(run)
            if status is not None:
                break
            escalation_notice(hook.label, sig)
            kill_group(run.pid, sig)
        if status is None:
            with trio.move_on_at(_trio_time(self.deadline.exit_at)):
                status = await self.wait_exit(run)
        kill_group(run.pid, signal.SIGKILL)  # what the hook left behind in its group
        return int(signal.SIGKILL) if status is None else status  # SIGKILL: a wait status
