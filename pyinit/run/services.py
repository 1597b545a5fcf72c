"""Sidecars and tasks at run time (docs/services.md): start, readiness, restart, stop.

The event loop (:mod:`pyinit.run.loop`) starts the items in order before the
main: a task must exit 0, a sidecar with ``ready=`` must pass its probe
(:mod:`pyinit.run.probes`) before the next item starts.  Each sidecar lives
in a trio task of its own that restarts it per :mod:`pyinit.run.restart`,
killing its whole process group first (each item leads a session of its
own, see :func:`pyinit.run.spawn.start_item`), from its first start on: a run that
exits before the first readiness is restarted too, within ``ready-timeout``,
and a give-up then either ends the start-up (``on-giveup=stop``) or lets it
go on without that sidecar (``ignore``).  At shutdown the loop stops them
one at a time, in reverse start order, each in its turn of the stop budget
(:meth:`ItemRun.stop`).  ``pyinitctl`` stops, starts and restarts a sidecar
by hand through the same state machine (:meth:`ItemRun.stop_by_hand`,
:meth:`ItemRun.start_by_hand`, :meth:`ItemRun.restart_by_hand`).

Every item is forked by :func:`pyinit.run.spawn.start_item` inside
``reaper.spawning()``, as its launch record (``Item.launch``, made in the
plan) says: the same step-down and hygiene as the main.
A refused fork (the pids cgroup full) is a failed start, not a crash: it
counts as a run that failed (:data:`pyinit.run.restart.FAILED_START`), and
the restart policy retries it after its backoff, within its budget.
"""

from __future__ import annotations

import math
import signal
import time

import trio

from pyinit import log, stopping
from pyinit.errors import ControlRefused, PyinitError
from pyinit.plan.services import SIDECAR
from pyinit.plan.signals import signal_name
from pyinit.plan.stop import kill_grace
from pyinit.run import lifecycle, liveness, probes
from pyinit.run.reaper import describe_status
from pyinit.run.restart import FAILED_START, GIVE_UP, RESTART, Decision, RestartTracker
from pyinit.run.spawn import Started, fork_failure, fork_item
from pyinit.stopping import kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyinit.plan.services import Item
    from pyinit.run.loop import Supervision
    from pyinit.run.reaper import Watched


class ItemRun:
    """One item's life: its runs, its restarts, its stop; steered by hand too (``pyinitctl``).

    A sidecar's own trio task (:meth:`run_sidecar`) carries out the actions
    its :class:`lifecycle.Tracked` asks for (start a run, wait a backoff);
    every event goes through :meth:`_feed`, whoever it comes from: the run's
    end, the container's stop turn, a request by hand.
    """

    def __init__(self, sup: Supervision, item: Item, started: Started | None = None) -> None:
        self.sup = sup
        self.item = item
        self.label = f"{item.kind} {item.name}"
        #: The run, while it is alive.
        self.current: Watched | None = None
        self.stopping = False
        self.tracker = RestartTracker.for_item(item)
        #: Its state (:mod:`pyinit.run.lifecycle`): what ``pyinitctl status`` shows.
        self.life = lifecycle.Tracked(self.label, time.monotonic())
        #: The uid it runs as: the only one whose notify datagrams count.
        self.uid = probes.runs_as(item.identity, item.switch_identity)
        self._backoff = trio.CancelScope()
        #: The actions the sidecar's own task carries out (StartRun, WaitBackoff), in order.
        self._todo, self._todo_out = trio.open_memory_channel[lifecycle.Action](math.inf)
        #: Renewed at every step (an event fed, a start done): by-hand requests wait on it.
        self._stepped = trio.Event()
        #: Starts begun; the last one done (exec'd, failed to exec, fork refused): pid, error.
        self._attempts = 0
        self._launched_attempt = 0
        self._launch: tuple[int | None, str | None] = (None, None)
        #: True while :meth:`run_sidecar` runs: from then on it may be steered by hand.
        self._steered = False
        #: True once the start-up no longer waits for it (its first readiness, or not to come).
        self._up = False
        self._task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        #: The start-up's ``ready-timeout`` deadline (trio's clock).
        self._deadline = math.inf
        #: How its last run ended, for a ready-timeout passing during the backoff.
        self._last_end = ""
        #: (run, exec'd) of the first run, if the launcher forked it before the loop existed.
        self._adopted = None if started is None else self._adopt(started)
        #: Its liveness checks (alive=): they set alive_state.
        self.checks = liveness.SidecarChecks(self)
        #: The item as each of its exec: probes runs it (see _probe_item).
        self._probe_items: dict[tuple[str, ...], Item] = {}
        self.alive_state: str | None = None

    @property
    def state(self) -> str:
        """Its current state's name (:data:`pyinit.run.lifecycle.STATES`)."""
        return self.life.state

    @property
    def pid(self) -> int | None:
        """The pid of the run while it is alive, else None."""
        return None if self.current is None else self.current.pid

    def _feed(self, event: lifecycle.Event) -> tuple[lifecycle.RunStop, ...]:
        """Feed ``event`` to its life; carry out its actions, but return the stops to run."""
        stops: list[lifecycle.RunStop] = []
        for action in self.life.feed(event, time.monotonic()):
            if isinstance(action, (lifecycle.StartRun, lifecycle.WaitBackoff)):
                self._todo.send_nowait(action)
            elif isinstance(action, lifecycle.CancelBackoff):
                self._backoff.cancel()
            elif isinstance(action, lifecycle.FreshBudget):
                self.tracker.fresh_budget()
            elif isinstance(action, lifecycle.BeginStop):
                self.sup.give_up(action.exit_code)
            else:
                stops.append(action)
        self._step()
        return tuple(stops)

    def _step(self) -> None:
        """Wake whoever waits for a step of this item's life."""
        stepped, self._stepped = self._stepped, trio.Event()
        stepped.set()

    def _claim(self, run: Watched) -> bool:
        """True for the first to see ``run`` gone (its end is fed once); SIGKILL to its group."""
        if self.current is not run:
            return False
        self.current = None
        kill_group(run.pid, signal.SIGKILL, reaped=run.exited)  # no orphan may hold its port
        return True

    async def start_once(
        self, channel: probes.NotifySocket | probes.ReadyPipe | None, *, by_hand: bool = False
    ) -> tuple[Watched, bool]:
        """Fork one run; once it has exec'd (True) or failed to (False: it exits then), the run.

        A refused fork raises OSError, and counts as a start for the budget
        (``by_hand``: a start by hand, which is no restart).
        """
        sup = self.sup
        item = self.item
        self.checks.reset()
        if self._adopted is not None:
            adopted, self._adopted = self._adopted, None
            return adopted
        extra_env = dict(channel.env) if channel is not None else {}
        pass_fds = dict(channel.pass_fds) if channel is not None else {}
        self._attempts += 1
        attempt = self._attempts
        try:
            with sup.reaper.spawning() as watch:
                child, read_ends = fork_item(item, sup.original_mask, extra_env, pass_fds)
                run = watch(child.pid)
        except OSError as e:
            self.tracker.started(time.monotonic(), by_hand=by_hand)
            self._launched(attempt, None, f"fork failed: {fork_failure(e)}")
            raise
        if channel is not None:
            channel.child_started(child.pid)
        self.current = run
        self.tracker.started(time.monotonic(), by_hand=by_hand)
        self._feed(lifecycle.Spawned(pid=child.pid))
        try:
            error = await child.exec_result()
            self._say_started(child.pid, error)
            self._launched(attempt, child.pid, None if error is None else error.message)
        finally:
            if read_ends:  # after its started line: that line comes first (logrelay)
                sup.relay.adopt(item.name, read_ends)
        return run, error is None

    def _launched(self, attempt: int, pid: int | None, error: str | None) -> None:
        """Start ``attempt`` is done: ``pid`` exec'd (``error`` None) or not."""
        self._launched_attempt = attempt
        self._launch = (pid, error)
        self._step()

    def _adopt(self, started: Started) -> tuple[Watched, bool]:
        """Take over the first run the launcher forked (its exec result is known)."""
        self.current = started.run
        self.tracker.started(started.at)
        self.life.feed(lifecycle.Spawned(pid=started.run.pid), started.at)
        self._say_started(started.run.pid, started.error)
        if started.read_ends:  # after its started line: that line comes first (logrelay)
            self.sup.relay.adopt(self.item.name, started.read_ends)
        return started.run, started.error is None

    def _say_started(self, pid: int, error: PyinitError | None) -> None:
        """Its started line (--verbose), or why it could not exec.

        A later run (a restart, by policy or by hand) that needs no probe is
        back once it has exec'd: a notice says so (one with a probe says it
        once ready again).
        """
        if error is not None:
            log.error(f"{self.label}: {error.message}")
        elif self.life.life.starts > 1 and self.item.ready is None:
            log.notice(f"{self.label} is back (pid {pid})")
        else:
            log.info(f"started {self.label} (pid {pid}): {' '.join(self.item.command)}")

    async def run_task(self) -> None:
        """Run a task to its end; PyinitError (125) unless it exits 0."""
        try:
            run, _ = await self.start_once(None)
        except OSError as e:
            self._feed(lifecycle.exited(FAILED_START))
            raise PyinitError(f"{self.label} failed ({fork_failure(e)}): not starting") from None
        if self.item.ready is None:
            self._feed(lifecycle.Ready())
        status = await self.sup.wait_exit(run)
        if self._claim(run):  # the group too: what the task left behind
            self._feed(lifecycle.exited(status))
        if status != 0:
            raise PyinitError(f"{self.label} failed ({describe_status(status)}): not starting")
        log.info(f"{self.label} done")

    # --- a sidecar's life: the actions of its lifecycle, carried out -----------------------

    async def run_sidecar(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Carry out the sidecar's life until cancelled; its first readiness via ``task_status``.

        The first run is started at once; after that, whatever its lifecycle
        asks for: a restart after a backoff (the policy's decision on an
        exit), a start by hand.  A run that exits before the first readiness
        is restarted by the same policy; ``ready-timeout`` bounds the whole
        wait, restarts and backoffs included (:class:`probes.ReadyTimeout`).  A
        give-up before it raises PyinitError with the sidecar's exit code
        under ``on-giveup=stop``; under ``ignore`` (or a stop by hand) the
        start-up goes on without it.  A sidecar that stays down waits here
        for a start by hand.
        """
        timeout = self.item.ready_timeout
        self._deadline = math.inf if timeout is None else trio.current_time() + timeout
        self._task_status = task_status
        self._todo.send_nowait(lifecycle.StartRun(by_hand=False))
        self._steered = True
        try:
            async for action in self._todo_out:
                if isinstance(action, lifecycle.StartRun):
                    await self._start_run(action)
                elif isinstance(action, lifecycle.WaitBackoff):
                    await self._wait_backoff(action)
                if not self._up and self.state == lifecycle.STOPPED and not self._shutting_down():
                    log.notice(f"{self.label} stopped by hand before it was ready: going on")
                    self._report_up()
        finally:
            self._steered = False

    def _shutting_down(self) -> bool:
        """True once the container's stop began: nothing is started any more."""
        return self.stopping or self.sup.stopping

    async def _start_run(self, action: lifecycle.StartRun) -> None:
        """One run, from its start to its end, fed to its life."""
        if self._adopted is None and (
            self.life.state != lifecycle.STARTING
            or self.current is not None
            or self._shutting_down()
        ):
            return  # stopped before its start came: nothing to start
        run, status, verb, detail = await self._one_run(action.by_hand)
        if run is None or self._claim(run):  # else a stop fed its end already
            self._ended(status, verb, detail)

    def _report_up(self) -> None:
        """The start-up no longer waits for this sidecar."""
        self._up = True
        self._task_status.started()

    def _ended(self, status: int, verb: str, detail: str) -> None:
        """A run ended by itself: the restart policy's decision, fed to its life, and logged.

        No policy for a run being stopped (its end is a stop's), nor once the
        container's stop began.
        """
        stopped = self.state in (lifecycle.STOPPING, lifecycle.KILLING)
        if (stopped and not self._dead()) or self._shutting_down():
            self._feed(lifecycle.exited(status))
            return
        decision = self.tracker.exited(status, time.monotonic(), ready=self._up)
        exited = verb if self._up else f"{verb} before it was ready"
        self._last_end = f"it {exited}: {detail}"
        event = self._exit_event(status, decision)
        if decision.action == RESTART:
            log.notice(f"{self.label} {exited} ({detail}): restarting in {decision.delay:g}s")
        elif decision.action == GIVE_UP:
            gave_up = "gave up" if self._up else "gave up before it was ready"
            self._gave_up(decision, f"{self.label} {gave_up}", detail)
        else:
            log.info(f"{self.label} {exited} ({detail}): {decision.reason}")
        self._feed(event)

    def _gave_up(self, decision: Decision, gave_up: str, detail: str) -> None:
        """Say so; before the first readiness under on-giveup=stop, end the start-up."""
        what = f"{gave_up} ({decision.reason}; last {detail})"
        if self.item.on_giveup == "stop":
            if not self._up:
                raise PyinitError(f"{what}: stopping the container", decision.exit_code)
            log.error(f"{what}: stopping the container")
        else:
            later = "" if self._up else "; starting the next item without it"
            log.warning(f"{what}: staying down (on-giveup=ignore){later}")
            if not self._up:
                self._report_up()

    async def _wait_backoff(self, wait: lifecycle.WaitBackoff) -> None:
        """The restart delay; then its end is fed, unless a stop (or a start by hand) came."""
        if self.state != lifecycle.BACKOFF:
            return  # cancelled before it began
        self._backoff = trio.CancelScope()
        with self._backoff, trio.move_on_at(math.inf if self._up else self._deadline) as bound:
            await trio.sleep(max(0.0, wait.until - time.monotonic()))
        if bound.cancelled_caught:
            timeout = self.item.ready_timeout
            assert timeout is not None
            raise probes.not_ready(self.label, timeout, self._last_end)
        if not self._backoff.cancelled_caught and not self._shutting_down():
            self._feed(lifecycle.BackoffOver())

    def _exit_event(self, status: int, decision: Decision) -> lifecycle.Exited:
        """The policy's decision on a run's end, as the state machine's event."""
        stops = decision.action == GIVE_UP and self.item.on_giveup == "stop"
        return lifecycle.Exited(
            status=status,
            decision=decision.action,
            delay=decision.delay,
            exit_code=decision.exit_code if stops else None,
        )

    async def _one_run(self, by_hand: bool) -> tuple[Watched | None, int, str, str]:
        """Start one run and await its end: (the run, its wait status, how it ended: verb, detail).

        A refused fork is a run that failed at once (:data:`FAILED_START`), with
        no run.  The start-up is told at the first readiness.
        """
        channel = probes.open_channel(self.item.ready, self.label, self.uid)
        probe_scope = trio.CancelScope()
        try:
            try:
                run, execd = await self.start_once(channel, by_hand=by_hand)
            except OSError as e:
                return None, FAILED_START, "could not start", fork_failure(e)
            if execd and self.item.ready is None:
                self._ready_now()  # no probe: exec'd is ready
            if not self._up:
                if execd and await self._first_ready(run, channel):
                    self._report_up()
            elif self.item.ready is not None:
                self.sup.nursery.start_soon(self._ready_again, run.pid, channel, probe_scope)
                channel = None
            status = await self.sup.wait_exit(run)
        finally:
            probe_scope.cancel()  # a probe of a run that ended must not poll on
            self.checks.end()
            if channel is not None:
                channel.close()
        return run, self.checks.counted(status), "exited", describe_status(status)

    def _ready_now(self) -> None:
        """The current run is ready: its state, and its liveness checks from now on."""
        self._feed(lifecycle.Ready())
        if self.current is not None:
            self.checks.begin(self.current)

    async def _first_ready(
        self, run: Watched, channel: probes.NotifySocket | probes.ReadyPipe | None
    ) -> bool:
        """True once ``run`` is ready; False if it exits first.

        :class:`probes.ReadyTimeout` once the start-up's deadline passes.
        """
        probe = self.item.ready
        if probe is None:
            return True
        exited: list[int] = []

        async def watch_exit(scope: trio.CancelScope) -> None:
            exited.append(await self.sup.wait_exit(run))
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_exit, nursery.cancel_scope)
            try:
                await probes.wait_ready(
                    probe,
                    name=self.label,
                    channel=channel,
                    timeout=self.item.ready_timeout,
                    deadline=self._deadline if self.item.ready_timeout is not None else None,
                    run_probe_command=self.run_probe_command,
                )
            except probes.ProbeFailed:
                await trio.sleep_forever()  # its exit follows: watch_exit reports it
            nursery.cancel_scope.cancel()
        if exited:
            return False
        self._ready_now()
        log.info(f"{self.label} is ready ({probe.text})")
        return True

    async def _ready_again(
        self,
        pid: int,
        channel: probes.NotifySocket | probes.ReadyPipe | None,
        scope: trio.CancelScope,
    ) -> None:
        probe = self.item.ready
        assert probe is not None
        try:
            with scope:
                await probes.wait_ready(
                    probe,
                    name=self.label,
                    channel=channel,
                    run_probe_command=self.run_probe_command,
                )
                self._ready_now()
                log.notice(f"{self.label} is back (pid {pid}): ready again ({probe.text})")
        except (probes.ProbeFailed, PyinitError):
            pass
        finally:
            if channel is not None:
                channel.close()

    async def run_probe_command(self, argv: Sequence[str]) -> int:
        """An ``exec:`` probe: run ``argv`` as the item's user; its exit code."""
        command = tuple(argv)
        item = self._probe_item(command)
        mask = self.sup.original_mask
        return await probes.run_probe_child(
            self.sup,
            self.label,
            lambda: fork_item(item, mask, {}, {})[0],
            (self.item.name, command),
        )

    def _probe_item(self, command: tuple[str, ...]) -> Item:
        """This item as its probe ``command`` runs (that command, ``log=raw``), made once:
        a liveness check calls it every few seconds, for ever."""
        made = self._probe_items.get(command)
        if made is None:
            launch = self.item.launch
            made = self.item.replace(
                log="raw", launch=None if launch is None else launch.replace(command=command)
            )
            self._probe_items[command] = made
        return made

    async def stop(self, kill_at: float, reap_by: float) -> None:
        """This item's stop: its stop-signal to its group now, SIGKILL at ``kill_at`` if needed.

        One stopped by hand is down already; one being stopped by hand is
        awaited, with SIGKILL at ``kill_at`` at the latest.
        """
        self.stopping = True
        first = self.item.stop_signal if self.item.kind == SIDECAR else signal.SIGTERM
        now = time.monotonic()
        run = self.current
        turn = lifecycle.Stop(first_signal=first, term_at=now, kill_at=kill_at, reap_by=reap_by)
        for action in self._feed(turn):
            if run is not None:
                await self._run_stop(run, action)

    async def _run_stop(self, run: Watched, action: lifecycle.RunStop, why: str = "") -> bool:
        """Carry out a :class:`lifecycle.RunStop` with the one stop primitive; True once gone.

        ``why``: a stop that is not the container's (``by hand``, ``dead``), for the log.
        """
        pid = run.pid

        def send(sig: int) -> None:
            if sig == action.first_signal and why:
                log.notice(f"stopping {self.label} (pid {pid}) with {signal_name(sig)} ({why})")
            elif sig == action.first_signal:
                log.info(f"stopping {self.label} (pid {pid}) with {signal_name(sig)}")
            elif why:
                grace = self.sup.plan.stop_timeout
                log.notice(f"{self.label} still running after {grace:g}s: sending SIGKILL")
            else:
                log.notice(f"{self.label} still running at the deadline: sending SIGKILL")
            if sig == signal.SIGKILL:
                self._feed(lifecycle.Signalled(signum=sig))
            kill_group(pid, sig)

        ended_by = self.sup.ended_by(run)
        ended = await stopping.stop(
            send, ended_by, action.first_signal, action.term_at, action.kill_at, action.reap_by
        )
        # Gone: fed now (not live for the leftovers' turn), even before its own task wakes;
        # but a dead run's end is its own task's to feed, with the policy's decision.
        if ended and run.status is not None and not self._dead() and self._claim(run):
            self._feed(lifecycle.exited(run.status))
        return ended

    def _dead(self) -> bool:
        """True while its run is stopped because its liveness checks failed (policy to follow)."""
        return self.life.life.by_hand == lifecycle.DEAD_RESTART

    async def stop_dead(self, run: Watched) -> None:
        """``run`` failed its liveness checks: stop it (stop-signal, ``--stop-timeout``, SIGKILL).

        Its end then goes to the restart policy as a failed run (its own task
        feeds it).  Nothing happens if ``run`` is no longer the current run,
        or is being stopped already.
        """
        if self.current is not run:
            return
        stops = self._feed(self._stop_from_now(lifecycle.Dead))
        if stops:
            await self._run_stop(run, stops[0], why="dead")

    # --- by hand (pyinitctl stop/start/restart, through the control socket) ----------------

    async def stop_by_hand(self) -> str:
        """``pyinitctl stop``: its stop-signal, ``--stop-timeout`` of grace, SIGKILL to its group.

        It then stays down (no restart by policy, no stop at shutdown) until
        a start by hand.  Returns once its run is reaped: the line to print;
        ControlRefused when it cannot be done.
        """
        self._refuse_unless_steerable("stop")
        state = self.state
        if state == lifecycle.STOPPED:
            raise ControlRefused(f"{self.label} is stopped already")
        if state in (lifecycle.EXITED, lifecycle.GAVE_UP):
            raise ControlRefused(f"{self.label} is not running ({state})")
        run = self.current
        stops = self._feed(self._stop_from_now(lifecycle.StopByHand))
        if run is None or not stops:
            return f"stopped {self.label} (it was waiting to restart)"
        await self._stop_by_hand(run, stops[0], "stop")
        return f"stopped {self.label} (was pid {run.pid})"

    async def start_by_hand(self) -> str:
        """``pyinitctl start``: start one that is down (fresh restart budget) or in its backoff.

        Returns once the new run has exec'd (its readiness probe goes on
        apart): the line to print; ControlRefused when it cannot be done.
        """
        self._refuse_unless_steerable("start")
        attempts = self._attempts
        self._feed(lifecycle.StartByHand())
        return await self._started("started", attempts)

    async def restart_by_hand(self) -> str:
        """``pyinitctl restart``: stopped as by :meth:`stop_by_hand`, then started at once.

        Not counted against ``max-restarts``.  One waiting to restart starts
        now; one that is down starts as by :meth:`start_by_hand`.  Returns
        once the new run has exec'd: the line to print; ControlRefused when
        it cannot be done.
        """
        self._refuse_unless_steerable("restart")
        attempts = self._attempts
        run = self.current
        verb = "started" if self.state in lifecycle.FINAL else "restarted"
        stops = self._feed(self._stop_from_now(lifecycle.RestartByHand))
        if run is not None and stops:
            await self._stop_by_hand(run, stops[0], "restart")
        return await self._started(verb, attempts)

    def _refuse_unless_steerable(self, verb: str) -> None:
        """ControlRefused when no request by hand can apply now (the lifecycle decides the rest)."""
        if self._shutting_down():
            raise ControlRefused(f"pyinit is stopping: cannot {verb} {self.label}")
        if self.item.kind != SIDECAR:
            raise ControlRefused(f"{self.label} is not a sidecar: cannot {verb} it")
        if not self._steered:
            raise ControlRefused(f"{self.label} is not started yet: cannot {verb} it")
        state = self.state
        if state in (lifecycle.STOPPING, lifecycle.KILLING):
            raise ControlRefused(f"{self.label} is being stopped already")
        if verb == "start" and state in (lifecycle.STARTING, lifecycle.RUNNING):
            pid = "" if self.current is None else f" (pid {self.current.pid})"
            raise ControlRefused(f"{self.label} is {state} already{pid}")
        if verb == "restart" and state == lifecycle.STARTING and self.current is None:
            raise ControlRefused(f"{self.label} is starting already")

    def _stop_from_now(
        self, event: type[lifecycle.StopByHand | lifecycle.RestartByHand | lifecycle.Dead]
    ) -> lifecycle.StopByHand | lifecycle.RestartByHand | lifecycle.Dead:
        """A stop that is not the container's: its stop-signal now, SIGKILL after --stop-timeout."""
        now = time.monotonic()
        timeout = self.sup.plan.stop_timeout
        kill_at = now + timeout
        return event(
            first_signal=self.item.stop_signal,
            term_at=now,
            kill_at=kill_at,
            reap_by=kill_at + kill_grace(timeout),
        )

    async def _stop_by_hand(self, run: Watched, action: lifecycle.RunStop, verb: str) -> None:
        """Run a stop by hand to the reap; ControlRefused if even SIGKILL did not end it."""
        if not await self._run_stop(run, action, why="by hand"):
            raise ControlRefused(f"{self.label} (pid {run.pid}) got SIGKILL but is not gone yet")

    async def _started(self, verb: str, attempts: int) -> str:
        """Await the start asked for (after ``attempts`` began): the line, or ControlRefused."""
        while self._launched_attempt <= attempts and self.state not in lifecycle.FINAL:
            await self._stepped.wait()
        if self._launched_attempt <= attempts:
            if self._shutting_down():
                raise ControlRefused(f"pyinit is stopping: {self.label} was not started again")
            raise ControlRefused(f"{self.label} was stopped before it started again")
        pid, error = self._launch
        if error is not None:
            raise ControlRefused(f"{self.label} did not start: {error}")
        return f"{verb} {self.label} (pid {pid})"
