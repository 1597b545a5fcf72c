"""Signal names and sets: what is forwarded, what stops the target, what is rewritten.

PID 1 is special: the kernel delivers a signal to it only when it has a
handler installed, so the supervisor must catch *every* catchable signal to
forward it.  SIGCHLD drives the reaper and is never forwarded; SIGKILL and
SIGSTOP cannot be caught.  TSTP/TTIN/TTOU are caught too, so that job
control never stops PID 1 itself.
"""

from __future__ import annotations

import signal

from pyinit.errors import UsageError, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: Signals that ask the target to stop; forwarding one starts the --stop-timeout clock.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

#: Signals Python ignores at start-up that a target must get back at their default.
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

#: Job-control signals: they must never stop PID 1, and when pyinit is not
#: PID 1 they stop the target and then pyinit itself.
JOB_CONTROL_SIGNALS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

#: si_code values (<bits/siginfo-consts.h>): sent with kill(2), with tkill/tgkill, by the kernel.
SI_USER = 0
SI_TKILL = -6
SI_KERNEL = 0x80

_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


def forwardable_signals() -> list[int]:
    """Every catchable signal except SIGCHLD, real-time signals included."""
    return sorted(
        int(s) for s in signal.valid_signals() if s not in _UNCATCHABLE and s != signal.SIGCHLD
    )


def blockable_signals() -> list[int]:
    """What pyinit blocks from its first line: every forwardable signal and SIGCHLD."""
    return [*forwardable_signals(), int(signal.SIGCHLD)]


def parse_signal(text: str, flag: str) -> int:
    """Parse ``TERM``, ``SIGTERM``, ``sigterm``, ``15`` or ``RTMIN+3`` into a signal number."""
    name = text.strip().upper()
    if not text.isascii():
        # str.upper() maps "\u017f" to "S", str.isdigit() accepts "\u00b2": neither is a signal.
        raise UsageError(f"{flag} {quoted(text)}: unknown signal (e.g. TERM, INT, HUP, 15)")
    if name.isdigit():
        number = int(name)
        if number in signal.valid_signals():
            return number
        raise UsageError(f"{flag} {quoted(text)}: no such signal number")
    name = name.removeprefix("SIG")
    rt = _parse_realtime(name)
    if rt is not None:
        return rt
    if not _is_signal_name(name):
        raise UsageError(f"{flag} {quoted(text)}: unknown signal (e.g. TERM, INT, HUP, 15)")
    return int(signal.Signals["SIG" + name])


def _parse_realtime(name: str) -> int | None:
    for base_name, base, sign in (("RTMIN", signal.SIGRTMIN, 1), ("RTMAX", signal.SIGRTMAX, -1)):
        if name == base_name:
            return base
        for op in ("+", "-"):
            prefix = base_name + op
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                offset = int(name[len(prefix) :]) * (1 if op == "+" else -1)
                number = base + offset
                if signal.SIGRTMIN <= number <= signal.SIGRTMAX and offset * sign >= 0:
                    return number
    return None


def _is_signal_name(name: str) -> bool:
    """Whether ``SIG`` + ``name`` is a member of :class:`signal.Signals` (not SIG_DFL etc.)."""
    return name.isalnum() and ("SIG" + name) in signal.Signals.__members__


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``SIGRTMIN+2`` for real-time signals; the number otherwise."""
    try:
        return signal.Signals(number).name
    except ValueError:
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return f"SIGRTMIN+{number - signal.SIGRTMIN}"
        return str(number)


def parse_rewrite(text: str, flag: str = "--rewrite") -> tuple[int, int]:
    """Parse ``FROM:TO`` (e.g. ``TERM:QUIT``); TO may be 0 to drop the signal, as in dumb-init."""
    if text.count(":") != 1:
        raise UsageError(f"{flag} {quoted(text)}: expected FROM:TO, e.g. TERM:QUIT")
    src_text, dst_text = text.split(":")
    where = f"{flag} {quoted(text)}:"
    src = parse_signal(src_text, where)
    dst = 0 if dst_text.strip() == "0" else parse_signal(dst_text, where)
    if src in _UNCATCHABLE or src == signal.SIGCHLD:
        raise UsageError(f"{flag} {quoted(text)}: {signal_name(src)} cannot be rewritten")
    return src, dst


def is_own_signal(info: signal.struct_siginfo, own_pid: int) -> bool:
    """Whether pyinit's own doing raised this signal, so that it must not be forwarded.

    A write to a dead pipe (stderr read by ``head -0``, a crashed log
    collector) raises SIGPIPE, one past ``--rlimit fsize`` SIGXFSZ: the
    kernel sends them with ``si_code`` SI_USER and the writer's own pid.  A
    ``docker kill -s PIPE`` comes from another pid (0 from outside the
    namespace) and is forwarded.  A fault carries a positive, non-SI_KERNEL
    code (SEGV_MAPERR, BUS_ADRERR, ...).
    """
    code = info.si_code
    if code in (SI_USER, SI_TKILL):
        return info.si_pid == own_pid
    return 0 < code < SI_KERNEL and info.si_signo != signal.SIGCHLD


def reset_child_signal_state(mask: Iterable[int] | None = None) -> None:
    """Give a process about to exec the signal state a fresh program expects.

    Python ignores SIGPIPE and SIGXFSZ at start-up, and ignored dispositions
    survive exec: without this, a target writing to a closed pipe gets EPIPE
    instead of dying quietly as shells and C programs expect.  Caught signals
    are reset by exec itself.  ``mask``, when given, replaces the blocked set:
    pyinit blocks every signal from its first statement and hands the target
    the mask pyinit itself was started with.  A SIGPIPE or SIGXFSZ that
    pyinit's own writes left pending (a dead stderr) is discarded first, or
    it would kill the target the moment the mask is restored; one sent by
    somebody else stays pending for the target.
    """
    if mask is not None:
        _discard_own_pending(PYTHON_IGNORED_SIGNALS)
    for sig in PYTHON_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _discard_own_pending(signals: Iterable[int]) -> None:
    import os

    pid = os.getpid()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    others = []
    for sig in signals:
        if sig not in blocked:
            continue  # not blocked: nothing of it can be pending
        while (info := signal.sigtimedwait([sig], 0)) is not None:
            if not is_own_signal(info, pid):
                others.append(sig)
    for sig in others:
        os.kill(pid, sig)  # pending again (still blocked), for the target after exec
