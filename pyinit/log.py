"""Lifecycle messages on stderr, each one line starting with ``pyinit: ``.

Hand-rolled instead of :mod:`logging` on purpose: importing logging costs
start-up time on the exec path, and pyinit needs just three levels.  Errors
are always shown; notices unless ``--quiet``; details only with ``--verbose``.
"""

from __future__ import annotations

import os
import signal

_PIPE = (signal.SIGPIPE,)

QUIET = 0
NORMAL = 1
VERBOSE = 2

_level = NORMAL


def set_level(level: int) -> None:
    """Set how much is printed: QUIET, NORMAL or VERBOSE."""
    global _level
    _level = level


def level() -> int:
    """The current verbosity level."""
    return _level


def _emit(text: str) -> None:
    # One write per line: the supervisor and its children share stderr, and
    # a single write(2) keeps lines from interleaving mid-line.
    # fd 2 itself, not sys.stderr: that is None when pyinit was started with
    # stderr closed.  A dead reader (EPIPE, and a SIGPIPE that the signal
    # intake recognises as our own) or a full disk must never stop pyinit.
    line = f"pyinit: {text}\n".encode(errors="replace")
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


def error(text: str) -> None:
    """Print an error; always shown."""
    _emit(text)


def warning(text: str) -> None:
    """Print a warning; hidden by --quiet."""
    if _level >= NORMAL:
        _emit(f"warning: {text}")


def notice(text: str) -> None:
    """Print a notice; hidden by --quiet."""
    if _level >= NORMAL:
        _emit(text)


def info(text: str) -> None:
    """Print a lifecycle detail; shown only with --verbose."""
    if _level >= VERBOSE:
        _emit(text)
