"""The signal intake: pyinit's main thread takes every signal with ``sigwaitinfo``, for life.

Every signal stays blocked in every thread from pyinit's first statement;
this loop is the only place one is ever taken.  That gives, from the
instant the target exists and without waiting for trio:

* forwarding at once (``os.kill`` right after ``sigwaitinfo`` returns),
  rewritten per ``--rewrite``;
* reaping on SIGCHLD (:class:`pyinit.run.reaper.Reaper`);
* each queued real-time signal taken, and forwarded, one by one (a handler
  would see one pending signal for fifty sent);
* ``si_pid``/``si_code``: a SIGPIPE or SIGXFSZ raised by pyinit's own write
  (a dead stderr) is dropped, not forwarded to kill a healthy service.

The event loop (:mod:`pyinit.run.loop`) runs in a second thread once trio is
imported; it :meth:`Intake.attach`\\ es itself and is told of stops and reaps
through ``TrioToken.run_sync_soon``.  When it finishes it calls
:meth:`Intake.finish`, which wakes this loop.  If it fails, this thread
still owns the target and runs the synchronous stop (:meth:`Intake.emergency_stop`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED, exit_code_for_wait_status
from pyinit.plan.signals import (
    JOB_CONTROL_SIGNALS,
    STOP_SIGNALS,
    blockable_signals,
    is_own_signal,
    signal_name,
)
from pyinit.plan.stop import StopDeadline
from pyinit.root.hooks import kill_group
from pyinit.run.descendants import FOREIGN_PROC, descendants, signal_all
from pyinit.run.reaper import Reaper, describe_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.plan import Plan

    CallSoon = Callable[..., object]


class Intake:
    """Forwards, reaps and keeps the stop deadline; the loop attaches to it."""

    def __init__(self, plan: Plan, reaper: Reaper, target: int | None) -> None:
        self.plan = plan
        self.reaper = reaper
        #: The main's pid; None while sidecars and tasks start before it.
        self.target = target
        #: The stop signal that arrived before the main started (pyinit exits 128+N).
        self.early_stop: int | None = None
        #: The signal mask the children restore before exec (loop-started children).
        self.original_mask: tuple[int, ...] = ()
        self.signals = blockable_signals()
        self._own_pid = os.getpid()
        self._main_thread = threading.get_ident()
        self._rewrites = dict(plan.rewrites)
        self._lock = threading.Lock()
        self._call_soon: CallSoon | None = None
        self._on_stop: Callable[[StopDeadline], None] | None = None
        self._deadline: StopDeadline | None = None
        #: The exit code once the supervisor is done; None while it runs.
        self._result: int | None = None
        self._failed = False

    # --- the loop's side ------------------------------------------------------------

    def attach(self, call_soon: CallSoon, on_stop: Callable[[StopDeadline], None]) -> bool:
        """Hand stops to the event loop from now on; False if pyinit is done already.

        ``call_soon`` is the loop's ``TrioToken.run_sync_soon``; ``on_stop``
        is called through it when a stop begins (at once, if it already has).
        """
        with self._lock:
            if self._result is not None:
                return False
            self._call_soon = call_soon
            self._on_stop = on_stop
            if self._deadline is not None:
                call_soon(on_stop, self._deadline)
        return True

    def begin_stop(self) -> StopDeadline:
        """The stop deadline, starting it now if no stop began yet."""
        with self._lock:
            if self._deadline is None:
                self._deadline = StopDeadline(
                    start=time.monotonic(), timeout=self.plan.stop_timeout
                )
                if self._call_soon is not None and self._on_stop is not None:
                    self._safe_call(self._on_stop, self._deadline)
            return self._deadline

    def finish(self, code: int | None) -> None:
        """The loop is done: exit with ``code`` (None: it failed, stop synchronously)."""
        with self._lock:
            self._call_soon = None
            self._failed = code is None
            self._result = EXIT_SETUP_FAILED if code is None else code
        signal.pthread_kill(self._main_thread, signal.SIGCHLD)  # wake the intake

    def _safe_call(self, fn: Callable[..., object], *args: object) -> None:
        call_soon = self._call_soon
        if call_soon is None:
            return
        with contextlib.suppress(RuntimeError):  # trio.RunFinishedError: the loop is ending
            call_soon(fn, *args)

    # --- the main thread ------------------------------------------------------------

    def run(self) -> int:
        """Take signals until the supervisor is done; returns pyinit's exit code."""
        while (result := self._result) is None:
            self.handle(signal.sigwaitinfo(self.signals))
        if self._failed:
            self.emergency_stop()
        return result

    def handle(self, info: signal.struct_siginfo) -> None:
        """One signal: reap on SIGCHLD, drop pyinit's own, forward the rest."""
        signum = info.si_signo
        if signum == signal.SIGCHLD:
            self._reap()
        elif not is_own_signal(info, self._own_pid):
            # (An own signal is dropped without a log line: logging to the
            # dead stderr that raised it would raise it again.)
            self.forward(signum)

    def _reap(self) -> None:
        self.reaper.reap()
        if self.target is None:
            return
        status = self.reaper.status_of(self.target)
        if status is None:
            return
        with self._lock:
            if self._call_soon is not None or self._result is not None:
                return  # the loop (or the emergency stop) takes it from here
            if self.plan.post_hooks:
                return  # the loop is needed: wait for it
            leftovers = descendants()
            if leftovers:
                return
            if leftovers is None:
                log.warning(FOREIGN_PROC)
            # Done before trio was even imported: no need to wait for it.
            log.info(f"target {self.target} exited ({describe_status(status)})")
            self._result = exit_code_for_wait_status(status)

    def forward(self, signum: int) -> None:
        """Send ``signum`` (rewritten) to the target, and start the stop on a stop signal."""
        if self.target is None:
            if signum in STOP_SIGNALS and self.early_stop is None:
                log.info(f"{signal_name(signum)} received before the main started: stopping")
                self.early_stop = signum
                self.begin_stop()
            else:
                log.info(f"{signal_name(signum)} received before the main started: not forwarded")
            return
        if self.reaper.status_of(self.target) is not None:
            log.info(f"{signal_name(signum)} received while winding down: not forwarded")
            return
        sent = self._rewrites.get(signum, signum)
        if not sent:
            log.info(f"{signal_name(signum)} dropped (--rewrite)")
            return
        job_control = signum in JOB_CONTROL_SIGNALS and not self.plan.is_pid1
        if job_control and self.plan.forward_to_group:
            # The target's group is orphaned in its new session: the kernel
            # discards TSTP/TTIN/TTOU sent to it.  Stop it outright (dumb-init).
            sent = signal.SIGSTOP
        self.send_to_target(sent)
        where = f"group {self.target}" if self.plan.forward_to_group else str(self.target)
        log.info(f"forwarded {signal_name(sent)} to {where}")
        if signum in STOP_SIGNALS or sent in STOP_SIGNALS:
            self.begin_stop()
        if job_control:
            # Stop ourselves too, so the shell that started us sees the job
            # stopped; SIGCONT resumes us and is forwarded in turn.  PID 1
            # never stops (the kernel ignores SIGSTOP sent to it).
            os.kill(self._own_pid, signal.SIGSTOP)

    def send_to_target(self, signum: int) -> None:
        """Signal the target (its process group with --signal-group)."""
        if self.target is None:
            return
        try:
            if self.plan.forward_to_group:
                os.killpg(self.target, signum)
            else:
                os.kill(self.target, signum)
        except ProcessLookupError:
            pass  # exited already; the reaper will tell

    # --- the synchronous twin of the loop's stop ---------------------------------------

    def emergency_stop(self) -> None:
        """Without the loop: TERM the target's group, KILL it at the deadline, reap.

        The same deadline as the loop's; signals keep being forwarded meanwhile.
        """
        deadline = self.begin_stop()
        target = self.target
        if target is not None:
            if self.reaper.status_of(target) is None:
                kill_group(target, signal.SIGTERM)
            self._wait_until(deadline.kill_at, lambda: self.reaper.status_of(target) is not None)
            if self.reaper.status_of(target) is None:
                kill_group(target, signal.SIGKILL)
        signal_all(descendants() or [], signal.SIGKILL)
        self._wait_until(deadline.exit_at, lambda: not descendants())

    def _wait_until(self, when: float, done: Callable[[], bool]) -> None:
        self.reaper.reap()
        while not done():
            left = when - time.monotonic()
            if left <= 0:
                return
            info = signal.sigtimedwait(self.signals, left)
            if info is not None:
                self.handle(info)
