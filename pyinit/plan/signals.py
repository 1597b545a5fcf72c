"""Signal names and sets: what is forwarded, what stops the target, what is rewritten.

PID 1 is special: the kernel delivers a signal to it only when it has a
handler installed, so the supervisor must catch *every* catchable signal to
forward it.  SIGCHLD drives the reaper and is never forwarded; SIGKILL and
SIGSTOP cannot be caught.  TSTP/TTIN/TTOU are caught too, so that job
control never stops PID 1 itself.
"""

from __future__ import annotations

import signal

from pyinit.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: Signals that ask the target to stop; forwarding one starts the --stop-timeout clock.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

#: Signals Python ignores at start-up that a target must get back at their default.
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})


def forwardable_signals() -> list[signal.Signals]:
    """Every catchable signal except SIGCHLD, including real-time signals."""
    result = [
        s
        for s in signal.valid_signals()
        if isinstance(s, signal.Signals) and s not in _UNCATCHABLE and s != signal.SIGCHLD
    ]
    known = {int(s) for s in result}
    result.extend(
        signal.Signals(n) if n in signal.Signals._value2member_map_ else n  # type: ignore[misc]
        for n in range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
        if n not in known
    )
    return sorted(result)


def blockable_signals() -> list[int]:
    """What pyinit blocks from its first line: every forwardable signal and SIGCHLD."""
    return [int(s) for s in forwardable_signals()] + [int(signal.SIGCHLD)]


def parse_signal(text: str, flag: str) -> int:
    """Parse ``TERM``, ``SIGTERM``, ``sigterm``, ``15`` or ``RTMIN+3`` into a signal number."""
    name = text.strip().upper()
    if not text.isascii():
        # str.upper() maps "\u017f" to "S", str.isdigit() accepts "\u00b2": neither is a signal.
        raise UsageError(f"{flag} {text!r}: unknown signal (e.g. TERM, INT, HUP, 15)")
    if name.isdigit():
        number = int(name)
        if number in signal.valid_signals():
            return number
        raise UsageError(f"{flag} {text!r}: no such signal number")
    name = name.removeprefix("SIG")
    rt = _parse_realtime(name)
    if rt is not None:
        return rt
    if not _is_signal_name(name):
        raise UsageError(f"{flag} {text!r}: unknown signal (e.g. TERM, INT, HUP, 15)")
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
        raise UsageError(f"{flag} {text!r}: expected FROM:TO, e.g. TERM:QUIT")
    src_text, dst_text = text.split(":")
    where = f"{flag} {text!r}:"
    src = parse_signal(src_text, where)
    dst = 0 if dst_text.strip() == "0" else parse_signal(dst_text, where)
    if src in _UNCATCHABLE or src == signal.SIGCHLD:
        raise UsageError(f"{flag} {text!r}: {signal_name(src)} cannot be rewritten")
    return src, dst


def reset_child_signal_state(mask: Iterable[int] | None = None) -> None:
    """Give a process about to exec the signal state a fresh program expects.

    Python ignores SIGPIPE and SIGXFSZ at start-up, and ignored dispositions
    survive exec: without this, a target writing to a closed pipe gets EPIPE
    instead of dying quietly as shells and C programs expect.  Caught signals
    are reset by exec itself.  ``mask``, when given, replaces the blocked set:
    the supervisor blocks signals around its fork and hands the child the mask
    pyinit itself was started with.
    """
    for sig in PYTHON_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
