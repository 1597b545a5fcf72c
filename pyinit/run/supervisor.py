"""Supervise mode: pyinit stays PID 1 and root, and runs the target as a child.

The duties of a container init, each in one method:

* forward every catchable signal to the target (or its process group),
  rewriting some if asked;
* reap every zombie with one ``waitpid(-1)`` loop (:mod:`pyinit.run.reaper`);
* after a stop signal, SIGKILL the target's group once --stop-timeout runs out;
* when the target exits, stop the processes it left behind gracefully
  (TERM, then KILL after the stop timeout), run the --post hooks as root, and
  exit with the target's status.

Start-up order matters.  Every signal is blocked by the first statement of
:mod:`pyinit.__main__`, so anything sent while pyinit and trio load
stays pending in the kernel (a PID 1 without a handler would otherwise have it
discarded).  The target is forked *before* trio is imported, and the signals
are unblocked only once the handlers are installed inside ``trio.run``:
nothing is lost.
"""

from __future__ import annotations

import os
import signal
import time

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED, PyinitError, exit_code_for_wait_status
from pyinit.plan.signals import STOP_SIGNALS, blockable_signals, signal_name
from pyinit.root.hooks import escalation_notice, kill_group, spawn_hook, stop_schedule
from pyinit.root.setup import apply_root_setup
from pyinit.run.reaper import Reaper, describe_status
from pyinit.run.spawn import Child, start_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    import trio

    from pyinit.plan import Hook, Plan

JOB_CONTROL_SIGNALS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: While draining leftovers, how often to look for processes that exited
#: without telling us (grandchildren whose parent is still alive).
DRAIN_POLL_SECONDS = 0.05
#: After SIGKILL, how long to wait for the kernel to tear processes down.
KILL_GRACE_SECONDS = 2.0


def supervise(plan: Plan, original_mask: Iterable[int]) -> int:
    """Run the plan in supervise mode; returns the exit code pyinit should exit with.

    Expects every signal in :func:`pyinit.plan.signals.blockable_signals` to be blocked already.
    """
    if not plan.is_pid1:
        from pyinit.root.prctl import set_child_subreaper

        set_child_subreaper()
    original_mask = tuple(original_mask)
    apply_root_setup(plan)
    child = start_target(plan, original_mask)
    try:
        import trio  # ~0.1 s: paid while the target is already starting
    except BaseException:
        emergency_stop(child.pid, plan.stop_timeout)
        raise
    error = child.exec_error()
    if error is not None:
        _reap_pid(child.pid)
        log.error(error.message)
        return error.exit_code
    log.info(f"started pid {child.pid} as {_who(plan)}: {' '.join(plan.command)}")
    supervisor = Supervisor(plan, child, original_mask)
    try:
        return trio.run(supervisor.run)
    except BaseException as e:  # pyinit's own bug: still stop the target and exit meaningfully
        log.error(f"supervisor failed: {_describe(e)}; stopping the target")
        emergency_stop(child.pid, plan.stop_timeout)
        return EXIT_SETUP_FAILED


def _describe(error: BaseException) -> str:
    """``RuntimeError: boom``, looking inside trio's exception groups for the real error."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


def _who(plan: Plan) -> str:
    return plan.identity.describe() if plan.identity is not None else f"uid {os.getuid()}"


class Supervisor:
    """The running supervisor: the event loop's state while the target lives and after."""

    def __init__(self, plan: Plan, child: Child, original_mask: tuple[int, ...]) -> None:
        self.plan = plan
        self.target = child.pid
        self.target_group = child.pid  # the child leads its own process group
        self.original_mask = original_mask
        self.reaper = Reaper()
        self.reaper.watch(child.pid)
        self.rewrites = dict(plan.rewrites)
        self.target_status: int | None = None
        self.stop_clock_started = False
        self._target_exited: trio.Event | None = None
        self._children_changed: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    async def run(self) -> int:
        """The supervisor's life: forward and reap until the target exits, then wind down."""
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._target_exited = trio.Event()
        self._children_changed = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._install_signal_handlers()
            # Only now: whatever arrived since pyinit's first line is delivered
            # here, to the handlers, and forwarded.
            signal.pthread_sigmask(signal.SIG_SETMASK, self.original_mask)
            self._reap()  # the target may have exited before the handlers existed
            await self._target_exited.wait()
            await self._stop_leftovers()
            await self._run_post_hooks()
            # From here on nothing is forwarded; keep late signals pending
            # rather than running a handler after the event loop is gone.
            signal.pthread_sigmask(signal.SIG_BLOCK, blockable_signals())
            nursery.cancel_scope.cancel()
        assert self.target_status is not None
        return exit_code_for_wait_status(self.target_status)

    # --- signals ---------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        # Our own handlers rather than trio.open_signal_receiver: the handler
        # forwards the signal at once, as soon as trio's wakeup fd interrupts
        # epoll, instead of several loop iterations later from a task.
        for signum in blockable_signals():
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        """Python-level handler: forward now, leave the bookkeeping to the event loop.

        It can run between any two bytecodes of trio's own code, so it makes
        syscalls and calls the one trio function that is safe here,
        ``run_sync_soon``, and nothing else.
        """
        token = self._token
        assert token is not None
        if signum == signal.SIGCHLD:
            token.run_sync_soon(self._reap, idempotent=True)
            return
        sent = self._forward(signum)
        token.run_sync_soon(self._after_forward, signum, sent)

    def _forward(self, signum: int) -> int:
        """Send ``signum`` (rewritten) to the target; the signal sent, or 0 if none was."""
        if self.target_status is not None:
            return 0
        sent = self.rewrites.get(signum, signum)
        if sent:
            self._send_to_target(sent)
        return sent

    def _after_forward(self, signum: int, sent: int) -> None:
        if self.target_status is not None:
            log.info(f"{signal_name(signum)} received while winding down: not forwarded")
            return
        if sent == 0:
            log.info(f"{signal_name(signum)} dropped (--rewrite)")
            return
        where = f"group {self.target_group}" if self.plan.forward_to_group else str(self.target)
        log.info(f"forwarded {signal_name(sent)} to {where}")
        if signum in STOP_SIGNALS or sent in STOP_SIGNALS:
            self._start_stop_clock()
        if signum in JOB_CONTROL_SIGNALS and not self.plan.is_pid1:
            # Like dumb-init: stop ourselves too, so the shell that started us
            # sees the job stopped; SIGCONT resumes us and is forwarded in turn.
            # PID 1 never stops (the kernel ignores SIGSTOP sent to it).
            os.kill(os.getpid(), signal.SIGSTOP)

    def _send_to_target(self, signum: int) -> None:
        try:
            if self.plan.forward_to_group:
                os.killpg(self.target_group, signum)
            else:
                os.kill(self.target, signum)
        except ProcessLookupError:
            pass  # exited already; the reaper will tell

    def _start_stop_clock(self) -> None:
        if self.stop_clock_started or self._nursery is None:
            return
        self.stop_clock_started = True
        self._nursery.start_soon(self._kill_after_stop_timeout)

    async def _kill_after_stop_timeout(self) -> None:
        import trio

        await trio.sleep(self.plan.stop_timeout)
        if self.target_status is None:
            log.notice(
                f"target still running {self.plan.stop_timeout:g}s after the stop signal: "
                "sending SIGKILL"
            )
            kill_group(self.target_group, signal.SIGKILL)

    # --- reaping ---------------------------------------------------------------------

    def _reap(self) -> None:
        reaped = self.reaper.reap()
        if not reaped:
            return
        assert self._children_changed is not None and self._target_exited is not None
        self._children_changed.set()
        status = self.reaper.status_of(self.target)
        if status is not None and self.target_status is None:
            self.target_status = status
            log.info(f"target {self.target} exited ({describe_status(status)})")
            self._target_exited.set()

    async def _wait_children_changed(self, timeout: float) -> None:
        import trio

        assert self._children_changed is not None
        with trio.move_on_after(timeout):
            await self._children_changed.wait()
        self._children_changed = trio.Event()

    # --- winding down ----------------------------------------------------------------

    async def _stop_leftovers(self) -> None:
        """TERM what the target left behind, wait up to the stop timeout, then KILL the rest."""
        import trio

        leftovers = descendants()
        if not leftovers:
            return
        log.info(f"stopping {len(leftovers)} leftover process(es) with SIGTERM")
        _signal_all(leftovers, signal.SIGTERM)
        with trio.move_on_after(self.plan.stop_timeout):
            while descendants():
                await self._wait_children_changed(DRAIN_POLL_SECONDS)
        remaining = descendants()
        if remaining:
            log.notice(f"{len(remaining)} leftover process(es) ignored SIGTERM: sending SIGKILL")
            _signal_all(remaining, signal.SIGKILL)
            with trio.move_on_after(KILL_GRACE_SECONDS):
                while descendants():
                    await self._wait_children_changed(DRAIN_POLL_SECONDS)
        # The last ones may have died between two reaps: collect their zombies
        # now, or they would outlive us as zombies of the real init.
        self._reap()

    async def _run_post_hooks(self) -> None:
        assert self.target_status is not None
        code = exit_code_for_wait_status(self.target_status)
        env = dict(self.plan.env)
        env["PYINIT_EXIT_CODE"] = str(code)
        for hook in self.plan.post_hooks:
            try:
                status = await self._run_hook(hook, env)
            except PyinitError as e:
                log.error(e.message)
                continue
            log.info(f"post hook {hook.label}: {describe_status(status)}")
            if status != 0:
                log.warning(f"post hook {hook.label} failed: {describe_status(status)}")

    async def _run_hook(self, hook: Hook, env: dict[str, str]) -> int:
        """Run a hook as root in its own group; past the stop timeout, TERM then KILL it.

        Spawned here rather than with subprocess, so that our reaper, the only
        waitpid caller, collects its status.
        """
        pid = spawn_hook(hook, env, own_group=True)
        self.reaper.watch(pid)
        status = await self._wait_for_status(pid, self.plan.stop_timeout)
        for sig, wait in stop_schedule():
            if status is not None:
                break
            escalation_notice(hook, sig)
            kill_group(pid, sig)
            status = await self._wait_for_status(pid, wait)
        kill_group(pid, signal.SIGKILL)  # what the hook left behind in its group
        return int(signal.SIGKILL) if status is None else status  # SIGKILL: a wait status

    async def _wait_for_status(self, pid: int, timeout: float) -> int | None:
        """The wait status of watched ``pid`` once the reaper has it, or None after ``timeout``."""
        import trio

        with trio.move_on_after(timeout):
            while self.reaper.status_of(pid) is None:
                await self._wait_children_changed(1.0)
        return self.reaper.status_of(pid)


def descendants() -> list[int]:
    """Pids of every live (non-zombie) descendant of this process.

    Orphans are reparented to PID 1 (or to a subreaper), so everything the
    target left behind is found here, and nothing outside our subtree (a
    ``docker exec`` session, processes of the host) is ever touched.
    """
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    alive = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child.pid)
        except psutil.Error:
            continue
    return alive


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue


def _reap_pid(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def emergency_stop(pid: int, timeout: float) -> None:
    """Without trio: TERM the target's group, wait up to ``timeout``, KILL it, reap everything."""
    kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    reaper = Reaper()
    reaper.watch(pid)
    while time.monotonic() < deadline and reaper.status_of(pid) is None:
        reaper.reap()
        time.sleep(DRAIN_POLL_SECONDS)
    if reaper.status_of(pid) is None:
        kill_group(pid, signal.SIGKILL)
        _reap_pid(pid)
    reaper.reap()
