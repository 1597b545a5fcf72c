"""The supervisor's event loop: the main's life, the one-deadline shutdown, post hooks.

Runs in its own thread once trio is imported (the signal intake,
:mod:`pyinit.run.intake`, keeps the main thread and forwards and reaps from
the fork on).  :func:`run` creates all state inside ``trio.run``.

The shape (the items: docs/services.md):

1. start the items the launcher left, in order (sidecars and tasks,
   :mod:`pyinit.run.services`), then the main, unless the launcher forked it
   before trio was imported (no item needed the loop first);
2. wait for the main's exit;
3. from the stop on (:class:`pyinit.plan.stop.StopBudget`), stop every process
   in its turn with the one primitive (:func:`pyinit.stopping.stop`): the
   main (its signal was forwarded), the items in reverse start order, the
   leftovers (:class:`Leftovers`), SIGKILL to what still runs at ``kill_by``;
   then the post hooks, each cut off at the end of its own turn; pyinit
   exits by ``exit_at``.

Every process is awaited the same way: started inside
``reaper.spawning()``, whose watch gives a :class:`pyinit.run.reaper.Watched`,
then ``await supervision.wait_exit(watched)``.  A refused fork is logged
and, for the main, ends the start with 125; items retry it (services).
"""

from __future__ import annotations

import contextlib
import signal
import time

import trio

from pyinit import log, stopping
from pyinit.errors import (
    EXIT_SETUP_FAILED,
    SIGNAL_EXIT_BASE,
    PyinitError,
    exit_code_for_wait_status,
)
from pyinit.plan.build import frozen_env
from pyinit.plan.signals import signal_name
from pyinit.plan.stop import StopDeadline, stop_budget
from pyinit.run import lifecycle, liveness, posthooks, probes
from pyinit.run.descendants import (
    DRAIN_POLL_SECONDS,
    FOREIGN_PROC,
    LeftoverSignals,
    descendants,
    has_children,
)
from pyinit.run.logrelay import LogRelay
from pyinit.run.proberunner import main_probe_launch
from pyinit.run.probes import single_error
from pyinit.run.reaper import describe_status
from pyinit.run.restart import FAILED_START
from pyinit.run.services import ItemRun
from pyinit.run.spawn import fork_failure, start_item, start_target, started_line
from pyinit.run.target import leave_start_directory
from pyinit.stopping import kill_group

#: How long the loop thread stays out of the intake's way once it told it to exit.
EXIT_HANDOVER_SECONDS = 1.0

#: CPython's error when the kernel refuses a new thread (EAGAIN: no pid to spare).
THREAD_REFUSED = "can't start new thread"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from pyinit.plan import Plan
    from pyinit.plan.build import Launch
    from pyinit.run.intake import Intake
    from pyinit.run.loopcontrol import LoopBackend
    from pyinit.run.probes import NotifySocket, ReadyPipe
    from pyinit.run.reaper import Watched
    from pyinit.run.spawn import Started
    from pyinit.run.supervisor import Handoff


def run(
    plan: Plan, intake: Intake, handoff: Handoff, control: LoopBackend | None = None
) -> int | None:
    """Supervise until done; pyinit's exit code, or None if pyinit finished without the loop.

    ``control``: the control server's backend, told of the loop's state once it exists.
    """
    return trio.run(_supervise, plan, intake, handoff, control)


async def _supervise(
    plan: Plan, intake: Intake, handoff: Handoff, control: LoopBackend | None
) -> int | None:
    try:
        return await _supervise_in_nursery(plan, intake, handoff, control)
    finally:
        log.set_writer(None)


async def _supervise_in_nursery(
    plan: Plan, intake: Intake, handoff: Handoff, control: LoopBackend | None
) -> int | None:
    async with trio.open_nursery() as nursery:
        supervision = Supervision(plan, intake, nursery, handoff)
        token = trio.lowlevel.current_trio_token()
        if control is not None:
            control.attach(supervision, token)
        if plan.items:
            supervision.relay.start_outputs()
            # Among relayed lines, pyinit's own take the relay's queue, whole.
            log.set_writer(supervision.relay.own_lines(token))
        intake.reaper.listen(lambda reaped: _call(token, supervision.on_reaped, reaped))
        if not intake.attach(token.run_sync_soon, supervision.on_stop):
            nursery.cancel_scope.cancel()
            return None
        code = await supervision.run()
        # Every process is reaped, the post hooks ran, the lines are out:
        # the intake thread ends pyinit now (os._exit).  Tearing this nursery
        # and trio down meanwhile would only take the GIL from it: this
        # thread waits without it, and tears down only if pyinit still runs.
        intake.finish(code)
        time.sleep(EXIT_HANDOVER_SECONDS)
        nursery.cancel_scope.cancel()
    return code


def _trio_time(monotonic: float) -> float:
    """A ``time.monotonic()`` instant (the deadline's clock) on trio's clock (another offset)."""
    return monotonic - time.monotonic() + trio.current_time()


def _passed(when: float) -> bool:
    """Whether monotonic instant ``when`` has passed: a wait until then would end unwaited.

    The stop's ``ended_by`` answers such a wait at once (its first signal
    is due now): waiting under a passed deadline still costs a pass of
    trio's scheduler before it is cancelled, once per stop turn.
    """
    return when <= time.monotonic()


def _call(token: trio.lowlevel.TrioToken, fn: object, *args: object) -> None:
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn, *args)  # type: ignore[arg-type]


class Supervision:
    """The loop's state: who is awaited, the stop deadline, the shutdown sequence."""

    def __init__(
        self, plan: Plan, intake: Intake, nursery: trio.Nursery, handoff: Handoff | None = None
    ) -> None:
        self.plan = plan
        self.intake = intake
        self.reaper = intake.reaper
        self.main: Watched | None = intake.target
        #: The main's state (:mod:`pyinit.run.lifecycle`): the launcher's, when it forked it.
        self.main_life = lifecycle.Tracked("main", time.monotonic())
        #: The signal mask every child restores before exec.
        self.original_mask: tuple[int, ...] = ()
        #: Items the launcher forked, by name, adopted at the start-up.
        self._launched: Mapping[str, Started] = {}
        if handoff is not None:
            self.main_life = handoff.main_life
            self.original_mask = handoff.original_mask
            self._launched = handoff.started
        self.nursery = nursery
        self._exits: dict[int, trio.Event] = {}
        #: The main's launch as each of its exec: probes runs (see run_probe_command).
        self._probe_launches: dict[tuple[str, ...], Launch] = {}
        #: The helper child that forks the exec: probes (docs/design.md), if there is one.
        self.probe_runner = handoff.probe_runner if handoff is not None else None
        self._changed = trio.Event()
        self._stop_begun = trio.Event()
        self.deadline = StopDeadline(start=float("inf"), timeout=0.0)
        #: How the stop deadline is shared out (the plan's decision).
        self.budget = stop_budget(plan)
        self._main_ended = trio.Event()
        self._main_status: int | None = None
        self._processes_stopped = trio.Event()
        self._leftovers = Leftovers(self)
        #: Sidecars and tasks, in start order.
        self.runs: list[ItemRun] = []
        #: The post hooks run so far, in order (the last one may still run).
        self.hooks: list[posthooks.HookRun] = []
        self.relay = LogRelay(nursery)
        self._shutting_down = False
        self._giveup = trio.Event()
        self._giveup_code = 0
        #: The main's liveness checks (--alive): they set alive_state.
        self.main_checks = liveness.MainChecks(self)
        self.alive_state: str | None = None

    @property
    def stopping(self) -> bool:
        """True once shutdown began (nothing is restarted any more)."""
        return self._shutting_down or self._stop_begun.is_set()

    def lives(self) -> list[lifecycle.Life]:
        """Each supervised process's state right now: the main, then the items in start order."""
        return [self.main_life.life, *(run.life.life for run in self.runs)]

    def give_up(self, code: int) -> None:
        """Shut down, exiting ``code``: a sidecar gave up, or the main's liveness check died.

        The main gets SIGTERM (after --rewrite), as from a stop signal; ``code``
        is pyinit's own, never remapped by --success-exit.
        """
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
        """A stop began (a stop signal, or the main's exit): STOPPING=1 upward at once."""
        self.deadline = deadline
        self._stop_begun.set()
        self._report_stopping()

    # --- the interface for every supervised process --------------------------------------

    async def wait_exit(self, watched: Watched) -> int:
        """The wait status of a watched child, once the reaper has handed it over."""
        while (status := watched.status) is None:
            # Keyed by pid: an event left by a cancelled wait for an earlier
            # child with this pid only wakes this loop once more.
            await self._exits.setdefault(watched.pid, trio.Event()).wait()
        return status

    # --- the life ------------------------------------------------------------------------

    async def run(self) -> int:
        """Items, main, then the shutdown sequence; pyinit's exit code."""
        self.nursery.start_soon(self._stop_in_turns)
        self.main_checks.reset()
        forked_early = self.main is not None  # by the launcher: ready once exec'd (no --ready)
        if self.main is None or self.plan.items:
            failed = await self._start_up()
            if failed is not None:
                self.deadline = self.intake.begin_stop()
                if self.main is not None:  # forked by the launcher: it is stopped too
                    self.nursery.start_soon(self._await_main, self.main)
                    self._term_main()
                await self.shutdown(failed)
                return failed
        if forked_early and self.main is not None and self.main_life.state == lifecycle.RUNNING:
            self.main_checks.begin(self.main)
        code, ended_by_main = await self._wait_main_or_giveup()
        await self.shutdown(code)  # the post hooks get the main's real code
        return self.plan.exit_code_for_main(code) if ended_by_main else code

    async def _start_up(self) -> int | None:
        """Start the items in order, then the main; an exit code if that failed or was stopped."""
        # All at once, before the first checkpoint: the launcher's early-started
        # sidecars are adopted (and so stopped in order) even if a stop cancels
        # the start-up at once.
        self.runs = [ItemRun(self, i, self._launched.get(i.name)) for i in self.plan.items]
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
                child = start_target(plan, self.original_mask, pass_fds)
                self.main = watch(child.pid)
                self.intake.main_started(self.main)
        except OSError as e:
            if channel is not None:
                channel.close()
            log.error(f"cannot start the target: {fork_failure(e)}")
            self.main_life.feed(lifecycle.exited(FAILED_START), time.monotonic())
            return EXIT_SETUP_FAILED
        self.main_life.feed(lifecycle.Spawned(pid=child.pid), time.monotonic())
        if channel is not None:
            channel.child_started(child.pid)
        error = await child.exec_result()
        if error is not None:
            log.error(error.message)
        else:
            log.info(started_line(plan, child.pid))
        if plan.is_pid1:
            leave_start_directory()  # do not pin the directory pyinit was started in (a volume)
        if self.intake.early_stop is not None:
            # The stop signal came while the main was being forked: it gets one too.
            self._term_main()
        elif error is None:
            if plan.ready is None:
                self.main_life.feed(lifecycle.Ready(), time.monotonic())  # exec'd is ready
            self.nursery.start_soon(self._report_ready, channel)
            return None
        if channel is not None:
            channel.close()
        return None

    def _term_main(self) -> None:
        """The main's stop signal now: the one a drain holds back, else SIGTERM (rewritten)."""
        if self.intake.draining:
            self.intake.end_drain()
        else:
            self.intake.signal_main(signal.SIGTERM, "sent")

    async def _wait_main_or_giveup(self) -> tuple[int, bool]:
        """The code the shutdown ends with, and whether it is the main's own (not a give-up)."""
        assert self.main is not None
        main = self.main
        self.nursery.start_soon(self._await_main, main)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_on, self._giveup, nursery.cancel_scope)
            await self._main_ended.wait()
            nursery.cancel_scope.cancel()
        if self._main_status is not None:
            log.info(f"target {main.pid} exited ({describe_status(self._main_status)})")
            self.deadline = self.intake.begin_stop()
            return exit_code_for_wait_status(self._main_status), True
        self.deadline = self.intake.begin_stop()
        self._report_stopping()
        if not main.exited:
            self._term_main()
        await self._main_ended.wait()
        assert self._main_status is not None  # set with _main_ended
        log.info(f"target {main.pid} exited ({describe_status(self._main_status)})")
        return self._giveup_code, False

    async def _await_main(self, main: Watched) -> None:
        """The one wait for the main's exit: its status, and ``_main_ended`` for all who wait."""
        self._main_status = await self.wait_exit(main)
        self.main_life.feed(lifecycle.exited(self._main_status), time.monotonic())
        self._main_ended.set()

    async def _report_ready(self, channel: NotifySocket | ReadyPipe | None) -> None:
        """READY=1 to pyinit's own manager once the main is ready (--ready, or exec'd)."""
        if self.plan.ready is not None:
            try:
                await probes.wait_ready(
                    self.plan.ready,
                    name="main",
                    channel=channel,
                    run_probe_command=self.run_probe_command,
                )
            except (PyinitError, probes.ProbeFailed) as e:
                log.warning(f"main: not reported ready: {e}")
                return
            finally:
                if channel is not None:
                    channel.close()
            self.main_life.feed(lifecycle.Ready(), time.monotonic())
            log.info("main is ready")
        if self.main is not None:
            self.main_checks.begin(self.main)
        if not self.stopping:
            self._notify_upward("READY=1")

    async def run_probe_command(self, argv: Sequence[str]) -> int:
        """An ``exec:`` probe of the main's (``--ready``, ``--alive``): its exit code.

        It runs as the main's launch record says (user, environment, hygiene),
        in a session of its own, without the main's inherited descriptors.
        """
        command = tuple(argv)
        launch = self._probe_launches.get(command)
        if launch is None:  # made once: a liveness check calls this every few seconds
            launch = main_probe_launch(self.plan, command)
            self._probe_launches[command] = launch
        mask = self.original_mask
        return await probes.run_probe_child(
            self, "main", lambda: start_item(launch, mask, {}, {}, launch.env), ("", command)
        )

    def close_probe_runner(self) -> None:
        """End the probe runner (the items are stopped: no probe runs any more)."""
        if self.probe_runner is not None:
            self.probe_runner.close()

    def _report_stopping(self) -> None:
        """Shutdown began: STOPPING=1 to pyinit's own manager, once (not ready any more)."""
        if not self._shutting_down:
            self._shutting_down = True
            self._notify_upward("STOPPING=1")

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

    # --- the stop, in turns (pyinit.plan.stop.StopBudget) ---------------------------------

    def ended_by(self, watched: Watched) -> Callable[[float], Awaitable[bool]]:
        """For :func:`pyinit.stopping.stop`: wait for a watched child's exit until an instant."""

        async def ended_by(when: float) -> bool:
            if watched.exited:
                return True
            if _passed(when):
                return False
            with trio.move_on_at(_trio_time(when)):
                await self.wait_exit(watched)
                return True
            return False

        return ended_by

    async def _stop_in_turns(self) -> None:
        """From the stop on: each process's stop signal in its turn, then SIGKILL to the rest.

        A turn ends when its process is gone, at the latest at the turn's end
        in the budget; the next process's stop then begins while the slow one
        keeps running, with its stop signal, until ``kill_by``.
        """
        await self._stop_begun.wait()
        budget = self.budget
        start = self.deadline.start
        kill_at = start + budget.kill_by
        self.main_checks.end()
        for run in self.runs:
            run.stopping = True  # none is restarted from now on, whatever its turn
            run.checks.end()
        if self.intake.draining:
            # --stop-delay: the main serves on, reported stopping, until the
            # delay is up or it exits (a second stop signal was forwarded to it).
            with trio.move_on_at(_trio_time(start + budget.delay)):
                await self._main_ended.wait()
            self.intake.end_drain()
        stops: list[Callable[[float, float], Awaitable[None]]] = [
            self._stop_main,
            *(run.stop for run in reversed(self.runs)),
            self._leftovers.stop,
        ]
        turns = _Turns(stops, kill_at, self.deadline.exit_at)
        async with trio.open_nursery() as nursery:
            for index in range(len(stops)):
                turns.begin(nursery, index)
                with trio.move_on_at(_trio_time(start + budget.turn_end(index))):
                    await turns.ended[index].wait()
        self._processes_stopped.set()

    async def _stop_main(self, kill_at: float, reap_by: float) -> None:
        """The main has its stop signal (forwarded, or _term_main): SIGKILL at ``kill_at``."""
        main = self.main
        if main is None:
            return
        turn = lifecycle.Stop(first_signal=None, term_at=kill_at, kill_at=kill_at, reap_by=reap_by)
        for action in self.main_life.feed(turn, time.monotonic()):
            if isinstance(action, lifecycle.RunStop):
                await self._run_main_stop(main, action)

    async def _run_main_stop(self, main: Watched, action: lifecycle.RunStop) -> None:
        def send(sig: int) -> None:
            log.notice(f"target still running at the deadline: sending {signal_name(sig)}")
            kill_group(main.pid, sig)
            self.main_life.feed(lifecycle.Signalled(signum=sig), time.monotonic())

        async def ended_by(when: float) -> bool:
            if self._main_ended.is_set():
                return True
            if _passed(when):
                return False
            with trio.move_on_at(_trio_time(when)):
                await self._main_ended.wait()
                return True
            return False

        await stopping.stop(
            send, ended_by, action.first_signal, action.term_at, action.kill_at, action.reap_by
        )

    async def shutdown(self, code: int) -> None:
        """Everything after the main: the processes' stop in turns, post hooks, the last lines."""
        self.on_stop(self.intake.begin_stop())
        await self._processes_stopped.wait()
        await self._run_post_hooks(code)
        await self.relay.drain(_trio_time(self.deadline.exit_at))

    def live_pids(self) -> set[int]:
        """The main and the items' runs still running: each is stopped in its own turn."""
        live = {run.pid for run in self.runs if run.pid is not None}
        if self.main is not None and not self._main_ended.is_set():
            live.add(self.main.pid)
        return live

    def changed(self) -> trio.Event:
        """Set at the next reap (take it before looking, so a reap meanwhile is not missed)."""
        return self._changed

    # --- post hooks ----------------------------------------------------------------------

    async def _run_post_hooks(self, code: int) -> None:
        env = posthooks.hook_env(self.plan, code)
        for name, hook, kill_at in posthooks.hook_turns(self.plan, self.budget, self.deadline):
            hook_run = posthooks.start_hook(
                self.reaper, name, hook, env, kill_at, self.deadline.exit_at
            )
            if hook_run is None:
                continue
            self.hooks.append(hook_run)
            ended_by = self.ended_by(hook_run.run)
            if not await ended_by(hook_run.term_at):
                for stop in hook_run.cut_off():
                    await stopping.stop(
                        hook_run.send,
                        ended_by,
                        stop.first_signal,
                        stop.term_at,
                        stop.kill_at,
                        stop.reap_by,
                    )
            hook_run.finish()


class _Turns:
    """The stops in order, each begun once: when the one before it ends, or its turn does.

    The task whose stop ended begins the next stop itself, at once: the turn
    loop, which also wakes then, would take one more pass of trio's scheduler
    to do it (about 0.1 ms a turn), and finds it begun.
    """

    def __init__(
        self,
        stops: Sequence[Callable[[float, float], Awaitable[None]]],
        kill_at: float,
        reap_by: float,
    ) -> None:
        self._stops = stops
        self._kill_at = kill_at
        self._reap_by = reap_by
        self._begun = [False] * len(stops)
        #: Set when each stop has ended (its process gone, or given up on at reap_by).
        self.ended = [trio.Event() for _ in stops]

    def begin(self, nursery: trio.Nursery, index: int) -> None:
        """Begin stop ``index`` in a task of its own, unless it has begun."""
        if not self._begun[index]:
            self._begun[index] = True
            nursery.start_soon(self._run_from, index)

    async def _run_from(self, index: int) -> None:
        while True:
            await self._stops[index](self._kill_at, self._reap_by)
            self.ended[index].set()
            index += 1
            if index == len(self._stops) or self._begun[index]:
                return
            self._begun[index] = True


class Leftovers:
    """What the main and the items left behind, found by walking /proc; the last turn.

    On its turn every leftover gets SIGTERM, and so does each found later
    (a slow main's orphans, once it is gone); at ``kill_at`` SIGKILL, again
    on every rescan.  The subtrees of the main and the items still running
    are theirs to stop and left alone until then.  Its end is the end of
    everything: no leftover, and the main and every item gone.
    """

    def __init__(self, sup: Supervision) -> None:
        self.sup = sup
        self._signals = LeftoverSignals()

    async def stop(self, kill_at: float, reap_by: float) -> None:
        """The leftovers' turn: SIGTERM now, SIGKILL at ``kill_at``, drained until ``reap_by``.

        The probe runner ends first (every item is stopped: no probe runs any
        more), by EOF; it is no leftover, and gone before the scans end.
        """
        self.sup.close_probe_runner()
        # The signal is applied by _ended_by to each scan's finds: a scan runs in a worker thread.
        await stopping.stop(
            self._signals.set_signal,
            self._ended_by,
            signal.SIGTERM,
            time.monotonic(),
            kill_at,
            reap_by,
        )

    async def _ended_by(self, when: float) -> bool:
        if _passed(when):
            return False  # the next step is due now; the scan after it applies its signal
        with trio.move_on_at(_trio_time(when)):
            while True:
                began = time.monotonic()
                changed = self.sup.changed()  # before the scan: a reap during it wakes us at once
                # No child at all: nothing can be left (no thread, no /proc walk).
                # pyinit's own helpers (a status's figures) are no leftovers either.
                skip = self.sup.live_pids() | self.sup.reaper.helpers()
                found = await _scan(skip) if has_children() else []
                if found is None:
                    log.warning(FOREIGN_PROC)
                    return True
                self._signals.apply(found)
                # The helpers are no leftovers, but their end is waited for
                # too: the probe runner exits at once on its EOF, a status's
                # figures child within its bound; pyinit leaves none behind.
                if not found and not self.sup.live_pids() and not self.sup.reaper.helpers():
                    return True
                # Rescan on every reap, at the latest after a poll interval
                # (a grandchild whose parent is alive exits without telling
                # us), and never more often than a scan takes.
                with trio.move_on_after(max(DRAIN_POLL_SECONDS, time.monotonic() - began)):
                    await changed.wait()
        return False


async def _scan(skip: set[int]) -> list[int] | None:
    # In a worker thread: 20,000 leftovers take a while to read, and the
    # deadline must fire on time (an abandoned scan is harmless).  With no
    # thread to be had (a full pids cgroup: a thread takes a pid) the scan
    # runs here, late rather than never: the stop goes on.
    try:
        return await trio.to_thread.run_sync(descendants, skip, abandon_on_cancel=True)
    except RuntimeError as e:
        if str(e) != THREAD_REFUSED:
            raise
        return descendants(skip)
