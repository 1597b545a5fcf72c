"""Lifecycle messages on stderr, each one line starting with ``pyinit: ``.

Hand-rolled instead of :mod:`logging` on purpose: importing logging costs
start-up time on the exec path, and pyinit needs just three levels.  Errors
are always shown; notices unless ``--quiet``; details only with ``--verbose``.
"""

from __future__ import annotations

import os
import signal

from pyinit.errors import one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

_PIPE = (signal.SIGPIPE,)
_PIPE_BUF = 4096
#: How long a line waits for a stalled stderr before it is dropped (PID 1 must not hang on it).
STALLED_WAIT_MS = 1000

QUIET = 0
NORMAL = 1
VERBOSE = 2

#: --log-format values.
TEXT = "text"
JSON = "json"

_level = NORMAL
_format = TEXT
_with_time = False
#: Formats one of pyinit's lines (level, text) when --log-time or --log-format json asks.
_formatter: Callable[[str, str], bytes] | None = None
_writer: Callable[[bytes], None] | None = None
_stalled = False
_select: ModuleType | None = None


def set_level(level: int) -> None:
    """Set how much is printed: QUIET, NORMAL or VERBOSE."""
    global _level
    _level = level


def level() -> int:
    """The current verbosity level."""
    return _level


def set_format(log_format: str, with_time: bool) -> None:
    """Write lines as ``log_format`` (TEXT or JSON), with RFC 3339 UTC times if ``with_time``.

    The default (TEXT, no time) imports nothing: the exec path stays lean.
    """
    global _format, _with_time, _formatter
    _format, _with_time = log_format, with_time
    _formatter = None
    if log_format == JSON:
        from pyinit.logformat import own_json

        _formatter = own_json
    elif with_time:
        from pyinit.logformat import stamp

        def _stamped(level: str, text: str) -> bytes:
            return b"%s %s" % (stamp(), _text_line(level, text))

        _formatter = _stamped


def output_format() -> tuple[str, bool]:
    """(--log-format, --log-time) as set: how the relay writes sidecars' and tasks' lines."""
    return _format, _with_time


def set_writer(writer: Callable[[bytes], None] | None) -> None:
    """Hand every line to ``writer`` (the supervisor's relay: never blocks); None: write fd 2."""
    global _writer
    _writer = writer


def write_line(line: bytes) -> None:
    """Write one finished line to fd 2, or drop it if a stalled reader leaves no room for 1 s."""
    if not _room_for(line):
        return
    # Blocked SIGPIPE while writing: once exec mode has restored the
    # target's signal state, a dead stderr would otherwise kill pyinit.
    was_blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _PIPE)
    try:
        os.write(2, line)
    except BrokenPipeError:
        if signal.SIGPIPE not in was_blocked:
            signal.sigtimedwait(_PIPE, 0)  # ours: discard it before unblocking
    except OSError:
        pass
    finally:
        if signal.SIGPIPE not in was_blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, was_blocked)


def guard_stalls() -> None:
    """From now on a line waits at most STALLED_WAIT_MS for a stalled stderr (PID 1's rule).

    Exec mode does not call it: a process about to become the target may
    block on its stderr as the target would.
    """
    global _select
    import select

    _select = select


def _room_for(line: bytes) -> bool:
    # stderr is shared with the target, so it must not be made O_NONBLOCK.
    # POLLOUT on a pipe means PIPE_BUF bytes are free: a line that short is
    # then written at once, in one piece.  Longer lines, terminals and files
    # are written as they are.  Once a line was dropped, the next ones do not
    # wait until one gets through: a stall costs PID 1 one wait, not one per line.
    global _stalled
    select = _select
    if select is None or len(line) > _PIPE_BUF:
        return True
    poller = select.poll()
    poller.register(2, select.POLLOUT)
    try:
        room = bool(poller.poll(0 if _stalled else STALLED_WAIT_MS))
    except OSError:
        return True
    _stalled = not room
    return room


def _text_line(level: str, text: str) -> bytes:
    """``pyinit: TEXT`` (``pyinit: warning: TEXT`` for a warning) as one line of bytes."""
    shown = f"warning: {text}" if level == "warning" else text
    return f"pyinit: {one_line(shown)}\n".encode(errors="replace")


def _emit(level: str, text: str) -> None:
    # One write per line: the supervisor and its children share stderr, and
    # a single write(2) keeps lines from interleaving mid-line.
    # fd 2 itself, not sys.stderr: that is None when pyinit was started with
    # stderr closed.  A dead reader (EPIPE, and a SIGPIPE that the signal
    # intake recognises as our own) or a full disk must never stop pyinit.
    # Whatever a message quotes, it stays one line without terminal escapes.
    formatter = _formatter
    line = _text_line(level, text) if formatter is None else formatter(level, one_line(text))
    writer = _writer
    if writer is None:
        write_line(line)
    else:
        writer(line)


def error(text: str) -> None:
    """Print an error; always shown."""
    _emit("error", text)


def warning(text: str) -> None:
    """Print a warning; hidden by --quiet."""
    if _level >= NORMAL:
        _emit("warning", text)


def notice(text: str) -> None:
    """Print a notice; hidden by --quiet."""
    if _level >= NORMAL:
        _emit("notice", text)


def info(text: str) -> None:
    """Print a lifecycle detail; shown only with --verbose."""
    if _level >= VERBOSE:
        _emit("info", text)
