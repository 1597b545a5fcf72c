"""A bare-bones PID 1 in pure Python (stdlib only): the floor for any Python init.

Used by the benchmark harness as a reference row next to tini/dumb-init/catatonit:
it shows what Python itself costs (interpreter start-up, memory, signal latency)
as opposed to what pyinit's own design (trio, planning, logging) adds.

It does the least a correct init must: block the catchable signals, fork and
exec the target with a clean signal state, then wait with ``sigwaitinfo``:
SIGCHLD reaps every child (orphans included), anything else is forwarded to
the target. It exits with the target's status. Not for production use.

    python3 -I benchmarks/minimal_init.py -- COMMAND [ARG...]
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def _status_to_code(status: int) -> int:
    """Docker's convention: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    """Run ``argv`` (after an optional ``--``) as the supervised target."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: minimal_init.py -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    catchable = set(signal.valid_signals()) - _UNCATCHABLE
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, catchable)
    # SIGCHLD must not be ignored, or the kernel reaps for us and we lose statuses.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    while True:
        info = signal.sigwaitinfo(catchable)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)
            continue
        while True:
            try:
                child, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if child == 0:
                break
            if child == pid:
                return _status_to_code(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
