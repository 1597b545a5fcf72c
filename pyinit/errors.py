"""Exit codes and the one exception type that carries them.

Exit status follows docker's convention, the same in both modes:

* the target's own exit code, or 128+N when signal N killed it;
* 125 when pyinit itself failed before the target ran (bad flag, unknown
  user, setup failed);
* 126 when the command exists but cannot be executed;
* 127 when the command was not found.
"""

from __future__ import annotations

EXIT_SETUP_FAILED = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
SIGNAL_EXIT_BASE = 128

#: The most characters of one user value an error quotes (an item name of 10 kB is cut).
QUOTE_LIMIT = 100
#: The most characters of one ``pyinit:`` line.
LINE_LIMIT = 2000

# C0 and C1 control characters and DEL as visible escapes: a newline or a
# carriage return would start a forged ``pyinit:`` line, ESC or CSI (0x9b)
# would drive the terminal.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})


class PyinitError(Exception):
    """A failure to report as one ``pyinit: ...`` line and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_SETUP_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(PyinitError):
    """Bad command-line input: names the flag and the offending value (exit 125)."""


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """VALUE as an error quotes it: ``repr`` (control characters escaped), cut to LIMIT."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """TEXT made safe as (part of) one log line: control characters escaped, cut to LIMIT."""
    if not text.isprintable():
        text = text.translate(_ESCAPES)
    return text if len(text) <= limit else text[:limit] + "..."


def exit_code_for_wait_status(status: int) -> int:
    """Map a ``waitpid`` status to the exit code pyinit reports (128+N for signal N)."""
    import os

    code = os.waitstatus_to_exitcode(status)
    return SIGNAL_EXIT_BASE - code if code < 0 else code


class ControlRefused(Exception):
    """A pyinitctl request that cannot be carried out: the one line that says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
