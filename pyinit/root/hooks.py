"""Running hooks (``--pre``, ``--pre-dir``, ``--post``): spawn, wait, bound, report.

A hook is started with ``posix_spawn`` (vfork+exec in glibc: no Python code
runs in the child, so it is safe even from a threaded supervisor), with an
empty signal mask and every signal at its default disposition: Python
ignores SIGPIPE and SIGXFSZ, and the supervisor blocks or ignores others,
none of which a shell script expects to inherit.  (glibc's posix_spawn
leaves its two internal real-time signals, 32 and 33, ignored; no ordinary
program uses them.)  stdin, stdout and stderr are pyinit's own.

**Waiting and reapers.**  :func:`run_hook` reaps its hook with
``waitpid(pid)``.  It must not be called while another part of the process
runs a ``waitpid(-1)`` reaper (the supervisor's): the reaper could collect
the hook's status first and this function would then fail with
ChildProcessError.  A supervisor that reaps with ``waitpid(-1)`` should
either pause its reaper around the call, or use :func:`spawn_hook` and take
the hook's status from its reaper (``os.waitstatus_to_exitcode`` turns a raw
wait status into what :func:`describe_returncode` expects).
Pre hooks run before the supervisor starts, so plain waiting is fine there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from pyinit import log
from pyinit.errors import PyinitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pyinit.plan import Hook

#: Seconds between SIGTERM and SIGKILL for a hook that outlived its timeout.
DEFAULT_KILL_AFTER = 2.0

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


def run_hook(
    hook: Hook,
    env: Mapping[str, str],
    timeout: float | None = None,
    *,
    kill_after: float = DEFAULT_KILL_AFTER,
    relay: SignalRelay | None = None,
) -> int:
    """Run ``hook`` to completion; return its status like ``Popen.returncode``.

    The result is the exit code (>= 0), or ``-N`` when signal N killed the
    hook.  With ``timeout``, a hook still running after ``timeout`` seconds
    gets SIGTERM (its whole process group: the hook runs in its own), and
    SIGKILL ``kill_after`` seconds later.  An active ``relay`` forwards the
    signals pyinit receives to the hook while it runs.  Do not call this
    while a ``waitpid(-1)`` reaper runs (see the module docstring).
    """
    if relay is None:
        pid = spawn_hook(hook, env, own_group=timeout is not None)
    else:
        # Hold the relayed signals until the relay knows the pid: one the hook
        # causes at once (or a `docker stop` right then) must reach the hook.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, relay.signals)
        try:
            pid = spawn_hook(hook, env, own_group=timeout is not None)
            relay.pid = pid
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        status = _waitpid(pid) if timeout is None else _wait_bounded(hook, pid, timeout, kill_after)
    finally:
        if relay is not None:
            relay.pid = None
    return os.waitstatus_to_exitcode(status)


def describe_returncode(code: int) -> str:
    """``exited with 3`` or ``was killed by SIGTERM``, for a run_hook result."""
    if code < 0:
        from pyinit.plan.signals import signal_name

        return f"was killed by {signal_name(-code)}"
    return f"exited with {code}"


def _waitpid(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def stop_schedule(kill_after: float = DEFAULT_KILL_AFTER) -> tuple[tuple[int, float], ...]:
    """How a hook that outlived its timeout is stopped: (signal to its group, then wait) steps.

    Shared by pre hooks (:func:`run_hook`) and the supervisor's post hooks.
    """
    return ((signal.SIGTERM, kill_after), (signal.SIGKILL, kill_after))


def kill_group(pgid: int, sig: int) -> None:
    """Signal process group ``pgid`` (or just the process, if it leads no group); never raises."""
    for send in (os.killpg, os.kill):
        try:
            send(pgid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def escalation_notice(hook: Hook, sig: int) -> None:
    """Tell the user a hook outlived its time and what it is being sent."""
    from pyinit.plan.signals import signal_name

    log.warning(f"{hook.label} still running: sending {signal_name(sig)}")


def _wait_bounded(hook: Hook, pid: int, timeout: float, kill_after: float) -> int:
    status = _wait_for(pid, timeout)
    for sig, wait in stop_schedule(kill_after):
        if status is not None:
            break
        escalation_notice(hook, sig)
        kill_group(pid, sig)
        status = _wait_for(pid, wait)
    if status is None:
        status = _waitpid(pid)  # SIGKILLed: it cannot take long now
    # Whatever the hook started and left behind in its group goes too.
    kill_group(pid, signal.SIGKILL)
    return status


def _wait_for(pid: int, seconds: float) -> int | None:
    """Wait up to ``seconds`` for ``pid``; its wait status, or None if still running."""
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return _poll_for(pid, seconds)
    try:
        import select

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, int(seconds * 1000))):
            return None
    finally:
        os.close(pidfd)
    return _waitpid(pid)


def _poll_for(pid: int, seconds: float) -> int | None:
    # Kernels before 5.3 have no pidfd: poll with a short sleep.
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class SignalRelay:
    """Relay ``signals`` to the running hook while active (a context manager).

    Installed around the pre hooks: pyinit may be PID 1, and a ``docker stop``
    during a long hook must reach the hook rather than be dropped.  Signals
    that arrive are recorded in ``received`` so the caller can decide not to
    start the target afterwards.  Main thread only.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self.signals = tuple(signals)
        #: The hook currently running, or None between hooks.
        self.pid: int | None = None
        #: Signals that arrived while active, in order.
        self.received: list[int] = []
        self._previous: dict[int, object] = {}
        self._was_blocked: set[int] = set()

    def _relay(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def __enter__(self) -> SignalRelay:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._relay)
        # pyinit blocks signals from its first line (so none is lost before the
        # supervisor runs): unblock ours, or the handlers would never run.
        # Ones already pending are delivered now and land in ``received``.
        self._was_blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)
        return self

    def __exit__(self, *exc: object) -> None:
        again = [s for s in self.signals if s in self._was_blocked]
        signal.pthread_sigmask(signal.SIG_BLOCK, again)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
