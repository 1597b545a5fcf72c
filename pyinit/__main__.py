"""The entry point of the ``pyinit`` command and of ``python -m pyinit``.

Its first statement blocks every signal, before argparse and the rest of
pyinit are imported: that is ~10 ms earlier than :func:`pyinit.cli.main`
could, and a PID 1 without handlers has unblocked signals discarded by the
kernel.  (The interpreter's own start-up before this line cannot be covered
from Python.)  SIGKILL and SIGSTOP cannot be blocked; the kernel ignores them
in the set.

In the standalone bundle (``sys.frozen``, docs/standalone.md) the environment
the launcher added is removed next, before anything can read or pass it on;
the pip install pays one attribute lookup for it.
"""

import signal

_ORIGINAL_MASK = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())

import sys  # noqa: E402  (already loaded by the interpreter: free)

if getattr(sys, "frozen", False):
    from pyinit.frozen import restore_environment

    restore_environment()


def main() -> None:
    """Run pyinit with the signal mask it was started with."""
    from pyinit.cli import main as cli_main

    cli_main(original_mask=_ORIGINAL_MASK)


if __name__ == "__main__":
    main()
