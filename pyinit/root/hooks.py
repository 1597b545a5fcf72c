"""Running hooks (``--pre``, ``--pre-dir``, ``--post``): spawn, wait, bound, report.

A hook is started with ``posix_spawn`` (vfork+exec in glibc: no Python code
runs in the child, so it is safe even from a threaded supervisor), with an
empty signal mask and every signal at its default disposition: Python
ignores SIGPIPE and SIGXFSZ, and the supervisor blocks or ignores others,
none of which a shell script expects to inherit.  (glibc's posix_spawn
leaves its two internal real-time signals, 32 and 33, ignored; no ordinary
program uses them.)  stdin, stdout and stderr are pyinit's own.

**Waiting and reapers.**  :func:`run_hook` reaps its hook with
``waitpid(pid)``: it is for pre hooks, which run before the supervisor's
``waitpid(-1)`` reaper exists.  The supervisor starts its post hooks with
:func:`spawn_hook` and takes their status from its reaper.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from pyinit.errors import PyinitError
from pyinit.plan.build import DEFAULT_STOP_TIMEOUT
from pyinit.plan.stop import StopDeadline, stop_schedule
from pyinit.stopping import escalation_notice, kill_group, stop_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pyinit.plan import Hook

_DEFAULT_SIGNALS = frozenset(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP}


def spawn_hook(hook: Hook, env: Mapping[str, str], *, own_group: bool = False) -> int:
    """Start ``hook`` and return its pid; raises PyinitError (125) if it cannot be started.

    ``own_group`` puts the hook in a new process group, so that a timeout can
    stop the hook's own children too (only for hooks that do not need to
    read the terminal: a background group reading it gets SIGTTIN).
    """
    argv = list(hook.argv)
    try:
        if own_group:
            return os.posix_spawn(
                argv[0], argv, env, setsigmask=(), setsigdef=_DEFAULT_SIGNALS, setpgroup=0
            )
        return os.posix_spawn(argv[0], argv, env, setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
    except OSError as e:
        raise PyinitError(f"{hook.label}: cannot run {hook.argv[0]}: {e.strerror}") from None


def run_hook(hook: Hook, env: Mapping[str, str], *, relay: SignalRelay | None = None) -> int:
    """Run ``hook`` to completion; return its status like ``Popen.returncode``.

    The result is the exit code (>= 0), or ``-N`` when signal N killed the
    hook.  An active ``relay`` hands the signals pyinit receives meanwhile to
    the hook, and after a stop signal bounds it by the stop deadline.  Do
    not call this while a ``waitpid(-1)`` reaper runs (see the module
    docstring).
    """
    if relay is None:
        return os.waitstatus_to_exitcode(os.waitpid(spawn_hook(hook, env), 0)[1])
    pid = spawn_hook(hook, env, own_group=True)
    return os.waitstatus_to_exitcode(relay.wait(hook, pid))


def describe_returncode(code: int) -> str:
    """``exited with 3`` or ``was killed by SIGTERM``, for a run_hook result."""
    if code < 0:
        from pyinit.plan.signals import signal_name

        return f"was killed by {signal_name(-code)}"
    return f"exited with {code}"


class SignalRelay:
    """Relay ``signals`` to the running pre hook while active (a context manager).

    pyinit may be PID 1, and a ``docker stop`` during a long hook must reach
    the hook rather than be dropped.  The signals stay blocked (as they are
    from pyinit's first statement) and are taken with ``sigtimedwait`` while
    a hook runs, so nothing is lost between hooks and no handler is needed.
    The first stop signal starts the ``--stop-timeout`` deadline: the hook
    then gets SIGTERM and SIGKILL on the one stop schedule
    (:func:`pyinit.plan.stop.stop_schedule`, :func:`pyinit.stopping.stop_now`).
    Signals not in ``signals`` stay pending for the target.  Main thread only.
    """

    def __init__(self, signals: Iterable[int], stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        self.signals = tuple(signals)
        self.stop_timeout = stop_timeout
        #: The stop, once a stop signal arrived.
        self.deadline: StopDeadline | None = None
        self._received: list[int] = []
        self._was_blocked: set[int] = set()

    @property
    def received(self) -> list[int]:
        """Signals that arrived while active, in order (including ones pending right now)."""
        while (info := signal.sigtimedwait(self.signals, 0)) is not None:
            self._note(info.si_signo)
        return list(self._received)

    def _note(self, signum: int) -> None:
        from pyinit.plan.signals import STOP_SIGNALS

        self._received.append(signum)
        if signum in STOP_SIGNALS and self.deadline is None:
            self.deadline = StopDeadline(start=time.monotonic(), timeout=self.stop_timeout)

    def wait(self, hook: Hook, pid: int) -> int:
        """Relay signals to ``pid`` until it exits (bounded once a stop began); its wait status."""
        status: list[int] = []
        if not self._relay_until(pid, status, None):
            # A stop began: the one stop, by the deadline.
            assert self.deadline is not None
            (term_at, _), (kill_at, _) = stop_schedule(time.monotonic(), self.deadline.kill_at)

            def send(sig: int) -> None:
                escalation_notice(hook.label, sig)
                kill_group(pid, sig)

            def ended_by(when: float) -> bool:
                return self._relay_until(pid, status, when)

            stop_now(send, ended_by, signal.SIGTERM, term_at, kill_at, self.deadline.exit_at)
        if not status:
            status.append(os.waitpid(pid, 0)[1])  # SIGKILLed: it goes at once
        kill_group(pid, signal.SIGKILL, reaped=True)  # what the hook left behind in its group
        return status[0]

    def _relay_until(self, pid: int, status: list[int], when: float | None) -> bool:
        """Relay signals to ``pid`` until it exits (True, its status appended) or ``when`` passes.

        With ``when`` None: False as soon as a stop began.
        """
        waited = (*self.signals, signal.SIGCHLD)
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                status.append(wait_status)
                return True
            info: signal.struct_siginfo | None
            if when is None:
                if self.deadline is not None:
                    return False
                info = signal.sigwaitinfo(waited)
            else:
                left = when - time.monotonic()
                if left <= 0:
                    return False
                info = signal.sigtimedwait(waited, left)
            if info is not None and info.si_signo != signal.SIGCHLD:
                self._note(info.si_signo)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, info.si_signo)

    def __enter__(self) -> SignalRelay:
        # Blocked already when pyinit runs (its first statement blocks every
        # signal); block them here too for callers that did not.
        self._was_blocked = signal.pthread_sigmask(
            signal.SIG_BLOCK, (*self.signals, signal.SIGCHLD)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._was_blocked)
