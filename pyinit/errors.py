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


class PyinitError(Exception):
    """A failure to report as one ``pyinit: ...`` line and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_SETUP_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(PyinitError):
    """Bad command-line input: names the flag and the offending value (exit 125)."""


def exit_code_for_wait_status(status: int) -> int:
    """Map a ``waitpid`` status to the exit code pyinit reports (128+N for signal N)."""
    import os

    code = os.waitstatus_to_exitcode(status)
    return SIGNAL_EXIT_BASE - code if code < 0 else code
