#!/usr/bin/env python3
"""Run pyinit in place of tini or dumb-init, to run their own test suites against it.

Link this file as ``tini`` or ``dumb-init`` first on PATH (or call it as
``peer_adapter.py tini ARGS...``): it maps that tool's flags and environment
variables to pyinit's, as docs/migrate-tini-dumb-init.md's tables do, and
execs ``python3 -m pyinit --mode supervise ...`` with this checkout on
PYTHONPATH.  A flag pyinit lacks (tini's ``-p``, ``-l``) is refused with 125
and named; an unknown one is passed on for pyinit to refuse.  pyinit never
gets a control socket (``--control none``): the suites run it on the host.
Nothing here is a test; pytest does not collect it.

Environment: ``PEER_ADAPTER_PYTHON`` (default: this interpreter),
``PEER_ADAPTER_TREE`` (default: this checkout).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TREE = os.environ.get("PEER_ADAPTER_TREE") or str(Path(__file__).resolve().parent.parent)
PYTHON = os.environ.get("PEER_ADAPTER_PYTHON") or sys.executable


def run_pyinit(args: list[str]) -> None:
    """exec pyinit with ``args``, from this checkout, without a control socket."""
    env = dict(os.environ, PYTHONPATH=TREE, PYINIT_CONTROL="none")
    os.execve(PYTHON, [PYTHON, "-m", "pyinit", "--control", "none", *args], env)


def refuse(flag: str, why: str) -> None:
    """Stop with 125, as pyinit does for a flag it does not have."""
    sys.stderr.write(f"peer_adapter: {flag}: {why}\n")
    sys.exit(125)


def dumb_init(args: list[str]) -> list[str]:
    """dumb-init's getopt ``+hvVcr:`` and DUMB_INIT_SETSID/DUMB_INIT_DEBUG, as pyinit flags."""
    group = os.environ.get("DUMB_INIT_SETSID", "1") != "0"
    verbose = os.environ.get("DUMB_INIT_DEBUG", "") == "1"
    out = ["--mode", "supervise"]
    while args and args[0].startswith("-") and args[0] != "-":
        flag = args.pop(0)
        if flag == "--":
            break
        if flag in ("-c", "--single-child"):
            group = False
        elif flag in ("-v", "--verbose"):
            verbose = True
        elif flag in ("-h", "--help", "-V", "--version"):
            run_pyinit(["--help" if flag in ("-h", "--help") else "--version"])
        elif flag in ("-r", "--rewrite"):
            out.append("--rewrite" if not args else "--rewrite=" + args.pop(0))
        elif flag.startswith(("--rewrite=", "-r")):
            value = flag.split("=", 1)[1] if flag.startswith("--") else flag[2:]
            out.append("--rewrite=" + value)
        else:
            out.append(flag)
    out += ["--signal-group"] if group else []
    # dumb-init is silent unless asked: pyinit's equivalent is -q.
    return [*out, "--verbose" if verbose else "--quiet", "--", *args]


def tini(args: list[str]) -> list[str]:
    """tini's getopt ``p:hvwgle:s`` and TINI_* variables, as pyinit flags."""
    group = "TINI_KILL_PROCESS_GROUP" in os.environ
    verbose = int(os.environ.get("TINI_VERBOSITY") or 1) > 1
    out = ["--mode", "supervise"]
    while args and args[0].startswith("-") and args[0] != "-":
        word = args.pop(0)
        if word == "--":
            break
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in "ep":
                value = letters or (args.pop(0) if args else "")
                letters = ""
                if letter == "p":
                    refuse("-p", "pyinit has no parent death signal")
                out.append("--success-exit=" + value if value else "--success-exit")
            elif letter == "g":
                group = True
            elif letter in "vw":
                verbose = True  # -w: pyinit's -v logs every reaped process
            elif letter == "h":
                run_pyinit(["--help"])
            elif letter == "l":
                refuse("-l", "pyinit prints no license")
            elif letter != "s":  # -s: not PID 1, pyinit is always a subreaper
                out.append("-" + letter)
    out += ["--signal-group"] if group else []
    return [*out, *(["--verbose"] if verbose else []), "--", *args]


def main(argv: list[str]) -> None:
    """Map the tool named by argv[0] (or argv[1]) to pyinit and exec it."""
    name, args = Path(argv[0]).name, argv[1:]
    if name not in ("tini", "dumb-init") and args:
        name, args = args[0], args[1:]
    if name == "tini":
        run_pyinit(tini(args))
    elif name == "dumb-init":
        run_pyinit(dumb_init(args))
    refuse(name, "call this as tini or dumb-init")


if __name__ == "__main__":
    main(sys.argv)
