"""The entry point of the ``pyinit`` command and of ``python -m pyinit``.

Its first statements turn the cyclic garbage collector off for the start-up
and block every signal, before argparse and the rest of pyinit are imported:
that is ~10 ms earlier than :func:`pyinit.cli.main` could, and a PID 1
without handlers has unblocked signals discarded by the kernel.  (The
interpreter's own start-up before these lines cannot be covered from
Python.)  SIGKILL and SIGSTOP cannot be blocked; the kernel ignores them in
the set.

The start-up (imports, parser, plan) makes tens of thousands of objects that
live as long as pyinit and next to no garbage cycles: the collector would
scan them about eight times for nothing, ~1 ms of the exec path.
:func:`pyinit.cli.execute` turns it back on, with those objects frozen out
of every later collection, before anything is carried out
(docs/design.md, "Start-up cost is a feature").  ``gc`` is built into the
interpreter: importing it loads nothing.

In the standalone bundle (``sys.frozen``, docs/standalone.md) the environment
the launcher added is removed next, before anything can read or pass it on;
the pip install pays one attribute lookup for it.
"""

import gc

gc.disable()

import signal  # noqa: E402  (after gc.disable: the collector would run during enum's import)

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
