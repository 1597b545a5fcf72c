"""Lifecycle messages on stderr, each one line starting with ``pyinit: ``.

Hand-rolled instead of :mod:`logging` on purpose: importing logging costs
start-up time on the exec path, and pyinit needs just three levels.  Errors
are always shown; notices unless ``--quiet``; details only with ``--verbose``.
"""

from __future__ import annotations

import os
import sys

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
    line = f"pyinit: {text}\n".encode(errors="replace")
    try:  # noqa: SIM105 -- contextlib would cost exec-path start-up time
        os.write(sys.stderr.fileno(), line)
    except (OSError, ValueError):
        pass


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
