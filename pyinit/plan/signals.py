"""Signal names and sets: what is forwarded, what stops the target, what is rewritten.

PID 1 is special: the kernel delivers a signal to it only when it has a
handler installed, so the supervisor must catch *every* catchable signal to
forward it.  SIGCHLD drives the reaper and is never forwarded; SIGKILL and
SIGSTOP cannot be caught.  TSTP/TTIN/TTOU are caught too, so that job
control never stops PID 1 itself.
"""

from __future__ import annotations

import signal

from pyinit.errors import SIGNAL_EXIT_BASE, UsageError, quoted

#: Signals that ask the target to stop; forwarding one starts the --stop-timeout clock.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})

#: Signals Python ignores at start-up that a target must get back at their default.
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

#: Signals whose default action is to be ignored.  Setting one to SIG_DFL (or SIG_IGN)
#: discards it if it is pending, blocked or not (POSIX sigaction; Linux does): a SIGCHLD
#: lost that way leaves an exited child unreaped until another child exits.
DEFAULT_IGNORED_SIGNALS = frozenset(
    {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH}
)

#: Job-control signals: they must never stop PID 1, and when pyinit is not
#: PID 1 they stop the target and then pyinit itself.
JOB_CONTROL_SIGNALS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})

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


#: Exit codes that are pyinit's own word that the main never ran (docs/usage.md,
#: "Exit status"): setup failed, cannot execute, not found.  Never a success.
RESERVED_EXIT_CODES = range(125, 128)


def parse_success_exit(text: str, flag: str = "--success-exit") -> int:
    """Parse one ``--success-exit`` value: an exit code ``0``-``255``, or a signal name for 128+N.

    ``143`` and ``TERM`` (or ``SIGTERM``) are the same code: a main that exits
    143 on SIGTERM, as a JVM does, and one that SIGTERM killed.  A bare number
    is always an exit code, never a signal number.  125-127 are refused: they
    say the main could not run, which no policy may turn into a success.
    """
    word = text.strip()
    if word.isascii() and word.isdigit():
        code = int(word)
        if code > 255:
            raise UsageError(f"{flag} {quoted(text)}: an exit code is 0-255")
    else:
        try:
            code = SIGNAL_EXIT_BASE + parse_signal(text, flag)
        except UsageError:
            raise UsageError(
                f"{flag} {quoted(text)}: expected an exit code 0-255 or a signal name "
                "(TERM means 143: killed by SIGTERM, or exited 143 on it)"
            ) from None
    if code in RESERVED_EXIT_CODES:
        raise UsageError(
            f"{flag} {quoted(text)}: {code} is pyinit's own status (125 setup failed, "
            "126 cannot execute, 127 not found), never a success"
        )
    return code
