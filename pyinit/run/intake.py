"""The signal intake: pyinit's main thread forwards every signal and reaps every child, for life.

Every signal stays blocked in every thread from pyinit's first statement.
For a plain target (:mod:`pyinit.run.plain`) there is only phase 2, with
no loop: the plain driver takes signals through :meth:`Intake.wait_until`.
Otherwise the main thread takes them in two phases, both running this one
class's :meth:`Intake.handle`:

1. **While trio is imported** (:meth:`Intake.import_loop`, ~40-100 ms, in
   the main thread itself): Python handlers, with the classic signals
   unblocked in this thread only.  A handler runs between two bytecodes of
   the import, with no second thread to wake and no GIL to hand over, so a
   ``docker stop`` in the first milliseconds is forwarded as fast as later.
   SIGPIPE, SIGXFSZ and the real-time signals stay blocked in this phase:
   only ``sigwaitinfo`` tells pyinit's own SIGPIPE from a sent one and
   keeps fifty queued real-time signals fifty; they wait, queued, for
   phase 2.  A target that exits now with nothing left for the loop to do
   (no leftovers, post hooks or services) ends pyinit without the import.
2. **For the rest of pyinit's life** (:meth:`Intake.run`): ``sigwaitinfo``
   with everything blocked, while the event loop (:mod:`pyinit.run.loop`)
   runs in a second thread.  That gives ``si_pid``/``si_code`` (a SIGPIPE or
   SIGXFSZ raised by pyinit's own write to a dead stderr is dropped, not
   forwarded to kill a healthy service) and each queued real-time signal
   one by one.

In both, a signal is forwarded at once (``os.kill``), rewritten per
``--rewrite`` (:meth:`Intake.signal_main`, the one way the main gets a
signal), and SIGCHLD reaps (:class:`pyinit.run.reaper.Reaper`).  With
``--stop-delay`` the first stop signal starts the stop but is held back
(draining) until the driver calls :meth:`Intake.end_drain`.  The
loop :meth:`Intake.attach`\\ es itself and is told of stops and reaps
through ``TrioToken.run_sync_soon``; when it finishes it calls
:meth:`Intake.finish`, which wakes phase 2.  When the main has exited and
nothing needs the loop, phase 2 ends pyinit itself, without waiting for it.
If the loop fails, this thread still owns the target and runs the
synchronous stop (:meth:`Intake.emergency_stop`).
"""

from __future__ import annotations

import _thread
import os
import signal
import time

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED, exit_code_for_wait_status
from pyinit.plan.signals import (
    DEFAULT_IGNORED_SIGNALS,
    JOB_CONTROL_SIGNALS,
    PYTHON_IGNORED_SIGNALS,
    STOP_SIGNALS,
    blockable_signals,
    signal_name,
)
from pyinit.plan.stop import StopDeadline
from pyinit.run.descendants import FOREIGN_PROC, descendants, signal_all
from pyinit.run.lifecycle import Signalled, Stop, exited
from pyinit.run.reaper import describe_status
from pyinit.run.target import is_own_signal
from pyinit.stopping import kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, ModuleType
    from typing import Any

    from pyinit.plan import Plan
    from pyinit.run.lifecycle import Tracked
    from pyinit.run.reaper import Reaper, Watched

    CallSoon = Callable[..., object]
    #: What ``signal.signal`` takes and returns.
    Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Intake:
    """Forwards, reaps and keeps the stop deadline; the loop attaches to it."""

    def __init__(self, plan: Plan, reaper: Reaper, exit_early: bool = True) -> None:
        """``exit_early``: end pyinit from here when the main exited and nothing is left
        for the loop (False: the plain target's driver decides, :mod:`pyinit.run.plain`).
        """
        self.plan = plan
        self.reaper = reaper
        #: The main (its pid, its status once reaped); None while items start before it.
        self._target: Watched | None = None
        #: The stop signal that arrived before the main started (pyinit exits 128+N).
        self._early_stop: int | None = None
        self._exit_early = exit_early
        self.signals = blockable_signals()
        self._own_pid = os.getpid()
        self._main_thread = _thread.get_ident()
        self._rewrites = dict(plan.rewrites)
        self._lock = _thread.allocate_lock()
        self._call_soon: CallSoon | None = None
        self._on_stop: Callable[[StopDeadline], None] | None = None
        self._deadline: StopDeadline | None = None
        #: The exit code once the supervisor is done; None while it runs.
        self._result: int | None = None
        self._failed = False
        #: Signals a running handler has yet to take (see _on_signal).
        self._queued: list[int] = []
        self._in_handler = False
        #: How many reaps found an exited child (a waiter compares it before and after).
        self._reaps = 0
        #: The stop signal held back while draining (--stop-delay); None: no drain.
        self._drain_signal: int | None = None

    # --- what the intake knows ------------------------------------------------------

    @property
    def target(self) -> Watched | None:
        """The main signals go to (its pid, its status once reaped); None before it started."""
        return self._target

    def main_started(self, main: Watched) -> None:
        """The main was forked: signals go to it from now on."""
        self._target = main

    @property
    def early_stop(self) -> int | None:
        """The stop signal that arrived before the main started (pyinit exits 128+N)."""
        return self._early_stop

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

    @property
    def deadline(self) -> StopDeadline | None:
        """The stop deadline once a stop began, else None."""
        return self._deadline

    @property
    def stopping(self) -> bool:
        """True once a stop began, a drain (--stop-delay) included: report not ready."""
        return self._deadline is not None

    @property
    def draining(self) -> bool:
        """True while a stop signal is held back for the main (--stop-delay)."""
        return self._drain_signal is not None

    def end_drain(self) -> None:
        """The drain is over (its time is up, or the main exited): forward the held signal."""
        with self._lock:
            signum, self._drain_signal = self._drain_signal, None
        if signum is not None:
            self.signal_main(signum, "drained: forwarded")

    def finish(self, code: int | None) -> None:
        """The loop is done: exit with ``code`` (None: it failed, stop synchronously).

        The first call wins: the loop calls it once the stop is over, before
        it is torn down, and its thread once more when it returns.
        """
        with self._lock:
            if self._result is not None:
                return
            self._call_soon = None
            self._failed = code is None
            self._result = EXIT_SETUP_FAILED if code is None else code
        signal.pthread_kill(self._main_thread, signal.SIGCHLD)  # wake the intake

    def _safe_call(self, fn: Callable[..., object], *args: object) -> None:
        call_soon = self._call_soon
        if call_soon is None:
            return
        try:  # noqa: SIM105  (no contextlib on a plain target's path: docs/design.md)
            call_soon(fn, *args)
        except RuntimeError:  # trio.RunFinishedError: the loop is ending
            pass

    # --- the main thread ------------------------------------------------------------

    def import_loop(self) -> ModuleType:
        """Import the event loop (and trio) here, forwarding and reaping from handlers meanwhile.

        Returns :mod:`pyinit.run.loop`.  If the main exits meanwhile and
        nothing is left for the loop to do, pyinit exits from the handler.
        """
        handled = handler_signals(self.signals)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            try:
                with _no_ldconfig():
                    from pyinit.run import loop
            finally:
                # pthread_sigmask runs the handlers of signals that arrived
                # just before the block, before it returns.
                signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        finally:
            # A child forked later must not run pyinit's handler between
            # restoring its mask and exec.  One that arrived since the block
            # above stays pending for sigwaitinfo: a default-ignored signal
            # gets a handler that does nothing, as SIG_DFL would discard it.
            for signum, handler in previous.items():
                signal.signal(signum, _after_import(signum, handler))
        return loop

    def _on_signal(self, signum: int, frame: object) -> None:
        # Python runs a handler between two bytecodes of whatever runs,
        # another handler included: a nested one only queues its signal, or
        # it would take the intake's lock a second time.
        self._queued.append(signum)
        if self._in_handler:
            return
        self._in_handler = True
        try:
            while self._queued:
                signum = self._queued.pop(0)
                if signum == signal.SIGCHLD:
                    self._reap()
                else:
                    self.forward(signum)
        finally:
            self._in_handler = False
        if self._result is not None:
            # Done: leave now, from inside the import.  (An exception raised
            # here could land in a weakref callback of importlib's and be
            # printed and ignored.)  Every log line is written already.
            os._exit(self._result)
        if self._queued:  # queued between the loop's end and the flag's reset
            self._on_signal(self._queued.pop(0), frame)

    def run(self, main_life: Tracked) -> int:
        """Take signals until the supervisor is done; returns pyinit's exit code.

        If the loop failed, the synchronous stop follows (``main_life``: the
        main's state, advanced by it).
        """
        while (result := self._result) is None:
            self.handle(signal.sigwaitinfo(self.signals))
        if self._failed:
            self.emergency_stop(main_life)
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
        reaped = self.reaper.reap(tell=False)
        if reaped:
            self._reaps += 1
        if not self._finish_on_main_exit():
            self.reaper.tell(reaped)  # the loop takes it from here

    def _finish_on_main_exit(self) -> bool:
        """End pyinit here if the main has exited and nothing is left for the loop to do.

        Then the loop (loaded or not) is never told of the exit: its
        shutdown sequence would stop nothing and run nothing.
        """
        target = self.target
        status = None if target is None else target.status
        if target is None or status is None or not self._exit_early:
            return False
        with self._lock:
            if self._result is not None or self.plan.post_hooks or self.plan.items:
                return False
            if self.plan.notify_socket:
                return False  # STOPPING=1 goes to pyinit's own manager first
            leftovers = descendants(self.reaper.helpers())
            if leftovers:
                return False
            if leftovers is None:
                log.warning(FOREIGN_PROC)
            self._call_soon = None
            log.info(f"target {target.pid} exited ({describe_status(status)})")
            self._result = self.plan.exit_code_for_main(exit_code_for_wait_status(status))
            return True

    def forward(self, signum: int) -> None:
        """Send ``signum`` (rewritten) to the target, and start the stop on a stop signal.

        With ``--stop-delay`` the first stop signal starts the stop (and the
        drain) but is held back until :meth:`end_drain`; a second one during
        the drain is forwarded at once and ends it (Ctrl-C twice).
        """
        if self.target is None:
            if signum in STOP_SIGNALS and self._early_stop is None:
                log.info(f"{signal_name(signum)} received before the main started: stopping")
                self._early_stop = signum
                self.begin_stop()
            else:
                log.info(f"{signal_name(signum)} received before the main started: not forwarded")
            return
        if self.target.exited:
            log.info(f"{signal_name(signum)} received while winding down: not forwarded")
            return
        sent = self._rewrites.get(signum, signum)
        stops = bool(sent) and (signum in STOP_SIGNALS or sent in STOP_SIGNALS)
        if stops and self._hold_for_drain(signum):
            return
        sent = self.signal_main(signum)
        if stops:
            self.begin_stop()
        if sent and signum in JOB_CONTROL_SIGNALS and not self.plan.is_pid1:
            # Stop ourselves too, so the shell that started us sees the job
            # stopped; SIGCONT resumes us and is forwarded in turn.  PID 1
            # never stops (the kernel ignores SIGSTOP sent to it).
            os.kill(self._own_pid, signal.SIGSTOP)

    def _hold_for_drain(self, signum: int) -> bool:
        """Start the drain with a first stop signal (True: held back); end it with a second."""
        with self._lock:
            held = self._drain_signal
            drain = held is None and self._deadline is None and self.plan.stop_delay > 0
            self._drain_signal = signum if drain else None
        if drain:
            log.info(
                f"{signal_name(signum)}: draining for {self.plan.stop_delay:g}s before the main "
                "gets it (--stop-delay)"
            )
            self.begin_stop()
            return True
        if held is not None:
            log.info(f"second {signal_name(signum)} during the drain: forwarded at once")
        return False

    def signal_main(self, signum: int, verb: str = "forwarded") -> int:
        """Send the main what ``signum`` is under ``--rewrite``; the signal sent (0: none).

        The one way the main gets a signal from pyinit: forwarded, after a
        drain, or SIGTERM when the stop is not its own (a give-up).  Never to
        a main already reaped (its pid may be another process's by now).
        """
        target = self.target
        if target is None or target.exited:
            return 0
        sent = self._rewrites.get(signum, signum)
        if not sent:
            log.info(f"{signal_name(signum)} dropped (--rewrite)")
            return 0
        job_control = signum in JOB_CONTROL_SIGNALS and not self.plan.is_pid1
        if job_control and self.plan.forward_to_group and signum not in self._rewrites:
            # The target's group is orphaned in its new session: the kernel
            # discards TSTP/TTIN/TTOU sent to it.  Stop it outright (dumb-init),
            # unless --rewrite says what it gets instead (dumb-init's -r wins too).
            sent = signal.SIGSTOP
        self.send_to_target(sent)
        where = f"group {target.pid}" if self.plan.forward_to_group else str(target.pid)
        log.info(f"{verb} {signal_name(sent)} to {where}")
        return sent

    def send_to_target(self, signum: int) -> None:
        """Signal the target (its process group with --signal-group), as it is: no rewrite."""
        target = self.target
        if target is None or target.exited:
            return  # never signal a pid the kernel may have given to another process
        try:
            if self.plan.forward_to_group:
                os.killpg(target.pid, signum)
            else:
                os.kill(target.pid, signum)
        except ProcessLookupError:
            pass  # exited already; the reaper will tell

    # --- the synchronous twin of the loop's stop ---------------------------------------

    def emergency_stop(self, main_life: Tracked) -> None:
        """Without the loop: SIGTERM to every process at once, SIGKILL at the deadline, reap.

        The loop that knew the turns failed: every process (the target's
        group and all below pyinit) gets its stop signal now, so still none
        is SIGKILLed before it had one.  The same deadline and the same stop
        (:func:`pyinit.stopping.stop_now`) as the loop's; signals keep being
        forwarded meanwhile.  ``main_life`` is the main's state, advanced here.
        """
        from pyinit.stopping import stop_now

        deadline = self.begin_stop()
        self._drain_signal = None  # every process gets SIGTERM now: no drain
        target = self.target
        now = time.monotonic()
        main_life.feed(
            Stop(
                first_signal=signal.SIGTERM,
                term_at=now,
                kill_at=deadline.kill_at,
                reap_by=deadline.exit_at,
            ),
            now,
        )

        def alive() -> bool:
            target_alive = target is not None and not target.exited
            return target_alive or bool(descendants())

        def send(sig: int) -> None:
            if sig == signal.SIGKILL:
                log.notice("still running at the deadline: sending SIGKILL to everything")
                main_life.feed(Signalled(signum=sig), time.monotonic())
            if target is not None and not target.exited:
                kill_group(target.pid, sig)
            signal_all(descendants() or [], sig)

        def ended_by(when: float) -> bool:
            ended = self.wait_until(when, lambda: not alive())
            if target is not None and target.status is not None:
                main_life.feed(exited(target.status), time.monotonic())
            return ended

        stop_now(
            send, ended_by, signal.SIGTERM, time.monotonic(), deadline.kill_at, deadline.exit_at
        )

    def wait_for_reap(self, until: float) -> None:
        """Forward and reap until a child is reaped or ``until`` passes; main thread."""
        before = self._reaps  # reaps happen only in this thread, inside wait_until
        self.wait_until(until, lambda: self._reaps != before)

    def wait_until(self, when: float, done: Callable[[], bool]) -> bool:
        """Forward and reap until ``done()`` (True) or ``when`` passes (False); main thread."""
        self._reap()
        while not done():
            left = when - time.monotonic()
            if left <= 0:
                return False
            info: signal.struct_siginfo | None
            if left == float("inf"):
                info = signal.sigwaitinfo(self.signals)
            else:
                info = signal.sigtimedwait(self.signals, left)
            if info is not None:
                self.handle(info)
        return True


def _after_import(signum: int, previous: Handler) -> Handler:
    """The disposition ``signum`` gets back after the import: ``previous``, unless that
    would discard one pending (SIG_DFL of a default-ignored signal: a SIGCHLD lost)."""
    if previous == signal.SIG_DFL and signum in DEFAULT_IGNORED_SIGNALS:
        return _do_nothing
    return previous


def _do_nothing(signum: int, frame: FrameType | None) -> None:
    """A default-ignored signal's handler once trio is loaded: it never runs in pyinit.

    Every thread of pyinit blocks it (sigwaitinfo takes it); a forked child
    keeps it blocked until just before exec, which resets a caught signal
    to SIG_DFL.  Arriving in between, it does nothing, as SIG_DFL would.
    """


def handler_signals(signals: list[int]) -> list[int]:
    """What the import-time handlers take: all but SIGPIPE, SIGXFSZ and the real-time signals."""
    realtime = range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    return [s for s in signals if s not in PYTHON_IGNORED_SIGNALS and s not in realtime]


class _no_ldconfig:
    """Keep trio's import from forking ``/sbin/ldconfig -p`` from PID 1.

    trio's thread cache asks ``ctypes.util.find_library("pthread")`` to name
    its threads, and glibc's answer comes from running ldconfig: a fork from
    PID 1 whose child our ``waitpid(-1)`` would race.  Without an answer trio
    just does not name its threads.
    """

    def __enter__(self) -> None:
        import ctypes.util

        self._real = ctypes.util.find_library
        ctypes.util.find_library = lambda name: None

    def __exit__(self, *exc: object) -> None:
        import ctypes.util

        ctypes.util.find_library = self._real
