"""The entry point of the ``pyinit`` command and of ``python -m pyinit``.

Its first statement blocks every signal, before argparse and the rest of
pyinit are imported: that is ~10 ms earlier than :func:`pyinit.cli.main`
could, and a PID 1 without handlers has unblocked signals discarded by the
kernel.  (The interpreter's own start-up before this line cannot be covered
from Python.)  SIGKILL and SIGSTOP cannot be blocked; the kernel ignores them
in the set.
"""

import signal

_ORIGINAL_MASK = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def main() -> None:
    """Run pyinit with the signal mask it was started with."""
    from pyinit.cli import main as cli_main

    cli_main(original_mask=_ORIGINAL_MASK)


if __name__ == "__main__":
    main()
