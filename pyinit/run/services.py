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
(:meth:`ItemRun.stop`).

Every item is forked by :func:`pyinit.run.spawn.start_item` inside
``reaper.spawning()``, as its launch record (``Item.launch``, made in the
plan) says: the same step-down and hygiene as the main.
A refused fork (the pids cgroup full) is a failed start, not a crash: it
counts as a run that failed (:data:`pyinit.run.restart.FAILED_START`), and
the restart policy retries it after its backoff, within its budget.
"""

from __future__ import annotations

import math
import os
import signal
import time

import trio

from pyinit import log, stopping
from pyinit.errors import EXIT_SETUP_FAILED, ControlRefused, PyinitError
from pyinit.plan.services import SIDECAR
from pyinit.plan.signals import signal_name
from pyinit.run import lifecycle, probes
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
    """One item's runs: the current pid, restarts, whether it is being stopped."""

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
        #: (run, exec'd) of the first run, if the launcher forked it before the loop existed.
        self._adopted = None if started is None else self._adopt(started)
        self.alive_state: str | None = None

    @property
    def state(self) -> str:
        """Its current state's name (:data:`pyinit.run.lifecycle.STATES`)."""
        return self.life.state

    @property
    def pid(self) -> int | None:
        """The pid of the run while it is alive, else None."""
        return None if self.current is None else self.current.pid

    async def start_once(
        self, channel: probes.NotifySocket | probes.ReadyPipe | None
    ) -> tuple[Watched, bool]:
        """Fork one run; once it has exec'd (True) or failed to (False: it exits then), the run.

        A refused fork raises OSError, and counts as a start for the budget.
        """
        sup = self.sup
        item = self.item
        if self._adopted is not None:
            adopted, self._adopted = self._adopted, None
            return adopted
        extra_env = dict(channel.env) if channel is not None else {}
        pass_fds = dict(channel.pass_fds) if channel is not None else {}
        try:
            with sup.reaper.spawning() as watch:
                child, read_ends = fork_item(item, sup.intake.original_mask, extra_env, pass_fds)
                run = watch(child.pid)
        except OSError:
            self.tracker.started(time.monotonic())
            raise
        if channel is not None:
            channel.child_started(child.pid)
        self.current = run
        self.tracker.started(time.monotonic())
        self.life.feed(lifecycle.Spawned(pid=child.pid), time.monotonic())
        try:
            error = await child.exec_result()
            self._say_started(child.pid, error)
        finally:
            if read_ends:  # after its started line: that line comes first (logrelay)
                sup.relay.adopt(item.name, read_ends)
        return run, error is None

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

        A restart that needs no probe is back once it has exec'd: a notice
        says so (one with a probe says it once ready again).
        """
        if error is not None:
            log.error(f"{self.label}: {error.message}")
        elif self.tracker.restart_times and self.item.ready is None:
            log.notice(f"{self.label} is back (pid {pid})")
        else:
            log.info(f"started {self.label} (pid {pid}): {' '.join(self.item.command)}")

    async def run_task(self) -> None:
        """Run a task to its end; PyinitError (125) unless it exits 0."""
        try:
            run, _ = await self.start_once(None)
        except OSError as e:
            self.life.feed(lifecycle.exited(FAILED_START), time.monotonic())
            raise PyinitError(f"{self.label} failed ({fork_failure(e)}): not starting") from None
        if self.item.ready is None:
            self.life.feed(lifecycle.Ready(), time.monotonic())
        status = await self.sup.wait_exit(run)
        self.current = None
        self.life.feed(lifecycle.exited(status), time.monotonic())
        kill_group(run.pid, signal.SIGKILL)  # what the task left behind in its group
        if status != 0:
            raise PyinitError(f"{self.label} failed ({describe_status(status)}): not starting")
        log.info(f"{self.label} done")

    async def run_sidecar(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start, await the first readiness (reported through ``task_status``), restart per policy.

        A run that exits before the first readiness is restarted by the same
        policy; ``ready-timeout`` bounds the whole wait, restarts and backoffs
        included (:class:`probes.ReadyTimeout`).  A give-up before it raises
        PyinitError with the sidecar's exit code under ``on-giveup=stop``; under
        ``ignore`` the start-up goes on without it.
        """
        ready = False
        timeout = self.item.ready_timeout
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            status, ready, verb, last = await self._one_run(ready, deadline, task_status)
            if self.stopping or self.sup.stopping:
                self.life.feed(lifecycle.exited(status), time.monotonic())
                await self._stopped(ready)
                return
            now = time.monotonic()
            decision = self.tracker.exited(status, now, ready=ready)
            actions = self.life.feed(self._exit_event(status, decision), now)
            exited = verb if ready else f"{verb} before it was ready"
            if decision.action == RESTART:
                waits = (a.until for a in actions if isinstance(a, lifecycle.WaitBackoff))
                until = next(waits, now + decision.delay)
                log.notice(f"{self.label} {exited} ({last}): restarting in {decision.delay:g}s")
                with self._backoff, trio.move_on_at(math.inf if ready else deadline) as bound:
                    await trio.sleep(max(0.0, until - time.monotonic()))
                if bound.cancelled_caught:
                    assert timeout is not None
                    raise probes.not_ready(self.label, timeout, f"it {exited}: {last}")
                if self.stopping or self.sup.stopping:
                    await self._stopped(ready)
                    return
                self._backoff = trio.CancelScope()
                over = self.life.feed(lifecycle.BackoffOver(), time.monotonic())
                if lifecycle.StartRun() in over:
                    continue
                return
            if decision.action == GIVE_UP:
                gave_up = "gave up" if ready else "gave up before it was ready"
                what = f"{self.label} {gave_up} ({decision.reason}; last {last})"
                if self.item.on_giveup == "stop":
                    if not ready:
                        raise PyinitError(f"{what}: stopping the container", decision.exit_code)
                    log.error(f"{what}: stopping the container")
                    for action in actions:
                        if isinstance(action, lifecycle.BeginStop):
                            self.sup.give_up(action.exit_code)
                else:
                    later = "" if ready else "; starting the next item without it"
                    log.warning(f"{what}: staying down (on-giveup=ignore){later}")
                    if not ready:
                        task_status.started()
                return
            log.info(f"{self.label} {exited} ({last}): {decision.reason}")
            return

    def _exit_event(self, status: int, decision: Decision) -> lifecycle.Exited:
        """The policy's decision on a run's end, as the state machine's event."""
        stops = decision.action == GIVE_UP and self.item.on_giveup == "stop"
        return lifecycle.Exited(
            status=status,
            decision=decision.action,
            delay=decision.delay,
            exit_code=decision.exit_code if stops else None,
        )

    async def _one_run(
        self, ready: bool, deadline: float, task_status: trio.TaskStatus[None]
    ) -> tuple[int, bool, str, str]:
        """Start one run and await its end: (wait status, ready, how it ended: verb, detail).

        A refused fork is a run that failed at once (:data:`FAILED_START`).
        ``task_status`` is told at the first readiness.
        """
        channel = probes.open_channel(self.item.ready, self.label, self.uid)
        probe_scope = trio.CancelScope()
        try:
            try:
                run, execd = await self.start_once(channel)
            except OSError as e:
                return FAILED_START, ready, "could not start", fork_failure(e)
            if execd and self.item.ready is None:
                self.life.feed(lifecycle.Ready(), time.monotonic())  # no probe: exec'd is ready
            if not ready:
                ready = execd and await self._first_ready(run, channel, deadline)
                if ready:
                    task_status.started()
            elif self.item.ready is not None:
                self.sup.nursery.start_soon(self._ready_again, run.pid, channel, probe_scope)
                channel = None
            status = await self.sup.wait_exit(run)
        finally:
            probe_scope.cancel()  # a probe of a run that ended must not poll on
            if channel is not None:
                channel.close()
        self.current = None
        kill_group(run.pid, signal.SIGKILL)  # no orphan of it may hold its port
        return status, ready, "exited", describe_status(status)

    async def _stopped(self, ready: bool) -> None:
        """Shutdown began: nothing to restart.  Before readiness, wait to be cancelled."""
        if not ready:
            # Only a stop signal ends the start-up early, and it cancels the
            # start-up's scope: wait for that rather than report a readiness.
            await trio.sleep_forever()

    async def _first_ready(
        self,
        run: Watched,
        channel: probes.NotifySocket | probes.ReadyPipe | None,
        deadline: float,
    ) -> bool:
        """True once ``run`` is ready; False if it exits first.

        :class:`probes.ReadyTimeout` once ``deadline`` (trio's clock) passes.
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
                    deadline=deadline if self.item.ready_timeout is not None else None,
                    run_probe_command=self.run_probe_command,
                )
            except probes.ProbeFailed:
                await trio.sleep_forever()  # its exit follows: watch_exit reports it
            nursery.cancel_scope.cancel()
        if exited:
            return False
        self.life.feed(lifecycle.Ready(), time.monotonic())
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
                self.life.feed(lifecycle.Ready(), time.monotonic())
                log.notice(f"{self.label} is back (pid {pid}): ready again ({probe.text})")
        except (probes.ProbeFailed, PyinitError):
            pass
        finally:
            if channel is not None:
                channel.close()

    async def run_probe_command(self, argv: Sequence[str]) -> int:
        """An ``exec:`` probe: run ``argv`` as the item's user; its exit code."""
        item = self.item.replace(log="raw")
        try:
            with self.sup.reaper.spawning() as watch:
                child, _ = fork_item(item, self.sup.intake.original_mask, {}, {}, tuple(argv))
                run = watch(child.pid)
        except OSError as e:
            log.info(f"{self.label}: probe not run: {fork_failure(e)}")
            return EXIT_SETUP_FAILED  # a failed check: the probe tries again
        try:
            await child.exec_result()
            status = await self.sup.wait_exit(run)
        finally:
            kill_group(child.pid, signal.SIGKILL)
        return os.waitstatus_to_exitcode(status)

    async def stop(self, kill_at: float, reap_by: float) -> None:
        """This item's stop: its stop-signal to its group now, SIGKILL at ``kill_at`` if needed."""
        self.stopping = True
        first = self.item.stop_signal if self.item.kind == SIDECAR else signal.SIGTERM
        now = time.monotonic()
        turn = lifecycle.Stop(first_signal=first, term_at=now, kill_at=kill_at, reap_by=reap_by)
        for action in self.life.feed(turn, now):
            if isinstance(action, lifecycle.CancelBackoff):
                self._backoff.cancel()
            elif isinstance(action, lifecycle.RunStop) and self.current is not None:
                await self._run_stop(self.current, action)

    async def _run_stop(self, run: Watched, action: lifecycle.RunStop) -> None:
        """Carry out a :class:`lifecycle.RunStop` with the one stop primitive."""
        pid = run.pid

        def send(sig: int) -> None:
            if sig == action.first_signal:
                log.info(f"stopping {self.label} (pid {pid}) with {signal_name(sig)}")
            else:
                log.notice(f"{self.label} still running at the deadline: sending SIGKILL")
                self.life.feed(lifecycle.Signalled(signum=sig), time.monotonic())
            kill_group(pid, sig)

        ended_by = self.sup.ended_by(run)
        if await stopping.stop(
            send, ended_by, action.first_signal, action.term_at, action.kill_at, action.reap_by
        ):
            # Gone: not live for the leftovers' turn, even before run_sidecar wakes.
            self.current = None
            if run.status is not None:
                self.life.feed(lifecycle.exited(run.status), time.monotonic())

    # --- until the by-hand actions are merged (handctl): the lead drops these stubs ---

    async def stop_by_hand(self) -> str:
        """Stop this sidecar and keep it down (built on the handctl branch)."""
        raise ControlRefused("not built yet")

    async def start_by_hand(self) -> str:
        """Start this stopped or given-up sidecar (built on the handctl branch)."""
        raise ControlRefused("not built yet")

    async def restart_by_hand(self) -> str:
        """Stop this sidecar and start it again (built on the handctl branch)."""
        raise ControlRefused("not built yet")
