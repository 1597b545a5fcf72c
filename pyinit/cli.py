"""Command line: ``pyinit [OPTIONS] [--] COMMAND [ARG...]``.

Parses options (argparse), builds the plan, then hands it to exec mode or to
the supervisor.  The supervisor is imported only when the plan says
supervise, and trio later still, in the main thread, only when the
supervisor needs its event loop: the exec path stays lean.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

from pyinit import __version__, log
from pyinit.errors import EXIT_SETUP_FAILED, PyinitError, UsageError
from pyinit.plan import (
    CHOWN_POLICIES,
    DEFAULT_STOP_TIMEOUT,
    LOG_FORMATS,
    MODES,
    NON_ROOT_POLICIES,
    UNHEALTHY_POLICIES,
    Plan,
    build_plan,
)
from pyinit.plan.signals import blockable_signals
from pyinit.plan.sources import apply_environment, name_the_variable

# argparse without gettext: its own fallback when gettext cannot be imported
# leaves its messages untranslated, as pyinit's own are (and `_Parser._hint`
# reads them in English).  gettext would import `locale` on the first message
# looked up, even with no catalogue anywhere: ~1.5 ms and ~0.25 MiB of PID 1's
# memory for nothing.  Only while argparse loads; a later `import gettext` works.
_WITHOUT_GETTEXT = "gettext" not in sys.modules
if _WITHOUT_GETTEXT:
    sys.modules["gettext"] = None  # type: ignore[assignment]  # the import system's "absent"
import argparse  # noqa: E402

if _WITHOUT_GETTEXT:
    del sys.modules["gettext"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import NoReturn

DESCRIPTION = """\
A container init: root setup, a gosu-compatible step-down to the service user,
then exec the target (it keeps the PID) or supervise it as PID 1 (forward
signals, reap zombies, stop timeout, post hooks)."""

EPILOG = """\
exit status: the target's status (128+N if killed by signal N; 0 for a
--success-exit code); 125 pyinit failed before the target ran; 126 command not
executable; 127 command not found.

example: ENTRYPOINT ["pyinit", "--user", "redis", "--chown", "/data", "--"]"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the width up front.

    Left to itself it imports :mod:`shutil` just to ask for the terminal
    size, ~3 ms on every start even when no help is printed.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_width())


def _terminal_width() -> int:
    columns = os.environ.get("COLUMNS", "")
    if columns.isascii() and columns.isdigit() and int(columns) > 2:
        return int(columns) - 2
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns - 2
    except (OSError, ValueError):
        return 78


class _Parser(argparse.ArgumentParser):
    """argparse with pyinit's one-line ``pyinit: ...`` errors and exit 125."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}{self._hint(message)}")

    def _hint(self, message: str) -> str:
        """What to do about ``message``: for an unknown option, the likely cause."""
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown == message or not unknown.startswith("-"):
            return " (see pyinit --help)"
        word = unknown.split(" ")[0].partition("=")[0]
        meant = [o for o in self._option_string_actions if o.startswith(word) and o[1] == "-"]
        if word.startswith("--") and len(meant) == 1:
            return f": pyinit's flags are never abbreviated, did you mean {meant[0]}?"
        # Most often a command's option with the -- forgotten (an ENTRYPOINT
        # without it, then `docker run IMAGE --port 7000`).
        return (
            ": not a pyinit option; if it is the command's, end pyinit's options with --:"
            " pyinit [OPTIONS] -- COMMAND [ARG...]"
        )


class _ItemAction(argparse.Action):
    """``--sidecar``/``--task``: one shared list of ``(kind, text)``, in the order given."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every pyinit option."""
    p = _Parser(
        prog="pyinit",
        usage="pyinit [OPTIONS] [--] COMMAND [ARG...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    ident = p.add_argument_group("identity (step-down)")
    ident.add_argument(
        "-u",
        "--user",
        metavar="SPEC",
        help="user[:group] or uid[:gid], as gosu/docker (env PYINIT_USER)",
    )
    ident.add_argument(
        "--groups",
        action="append",
        default=[],
        metavar="G[,G...]",
        help="add supplementary groups (names or gids) to the target's",
    )
    ident.add_argument(
        "--keep-groups",
        action="store_true",
        help="keep the supplementary groups the runtime gave pyinit (docker --group-add, "
        "Kubernetes fsGroup/supplementalGroups), except root's",
    )
    ident.add_argument(
        "--if-not-root",
        choices=NON_ROOT_POLICIES,
        default="skip",
        help="started as non-root without CAP_SETUID/CAP_SETGID: skip root setup and the "
        "step-down with a notice and run as the current user (default), or fail with 125",
    )
    ident.add_argument(
        "--no-new-privs",
        action="store_true",
        help="PR_SET_NO_NEW_PRIVS: setuid binaries cannot regain privileges",
    )
    ident.add_argument(
        "--keep-cap",
        action="append",
        default=[],
        metavar="CAP",
        help="keep capability CAP (e.g. NET_BIND_SERVICE) as ambient for the target",
    )

    setup = p.add_argument_group("root setup (as root, before the step-down)")
    setup.add_argument(
        "--mkdir",
        action="append",
        default=[],
        metavar="PATH[:MODE][=OWNER]",
        help="create absolute PATH and parents, owned by OWNER (a user spec) or the target, "
        "mode MODE",
    )
    setup.add_argument(
        "--chown",
        action="append",
        default=[],
        metavar="PATH[=OWNER]",
        help="give PATH and everything below to OWNER (a user spec) or the target "
        "(never follows symlinks)",
    )
    setup.add_argument(
        "--chown-policy",
        choices=CHOWN_POLICIES,
        default="always",
        help="always walk the tree (default), or only when PATH itself is not "
        "owned by the target (like fsGroupChangePolicy OnRootMismatch)",
    )
    setup.add_argument(
        "--chown-cross-mounts",
        action="store_true",
        help="let --chown descend into other mounted file systems",
    )
    setup.add_argument("--umask", metavar="MASK", help="umask for the target (octal, e.g. 027)")
    setup.add_argument(
        "--rlimit",
        action="append",
        default=[],
        metavar="NAME=SOFT[:HARD]",
        help="resource limit, e.g. nofile=65536, core=0, stack=unlimited",
    )
    setup.add_argument(
        "--workdir", metavar="DIR", help="working directory of the target (~ = the target's home)"
    )
    setup.add_argument(
        "--file-env",
        action="append",
        default=[],
        metavar="NAME",
        help="set NAME from the file named by NAME_FILE (env PYINIT_FILE_ENV=A,B)",
    )
    setup.add_argument(
        "--pre",
        action="append",
        default=[],
        metavar="CMD",
        help="run CMD with /bin/sh -c as root before the step-down (in order)",
    )
    setup.add_argument(
        "--pre-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="run the executables in DIR as root, in lexical order (after --pre)",
    )

    run = p.add_argument_group("running the target")
    run.add_argument(
        "-m",
        "--mode",
        choices=MODES,
        default=None,
        help="exec, supervise, or auto (default: supervise when PID 1 or given a supervise-only "
        "option, else exec; env PYINIT_MODE)",
    )
    run.add_argument(
        "--post",
        action="append",
        default=[],
        metavar="CMD",
        help="supervise: run CMD as root after the target exited, "
        "with PYINIT_EXIT_CODE set (in order)",
    )
    run.add_argument(
        "--stop-timeout",
        metavar="SECS",
        help="supervise: one deadline from the stop signal (or the target's exit) to pyinit's "
        f"exit, covering the target, leftovers and --post hooks (default {DEFAULT_STOP_TIMEOUT:g};"
        " env PYINIT_STOP_TIMEOUT)",
    )
    run.add_argument(
        "--stop-delay",
        metavar="SECS",
        help="supervise: on a stop signal, report not ready at once (STOPPING=1, health) and "
        "forward the signal to the main SECS later, inside --stop-timeout (default 0; "
        "env PYINIT_STOP_DELAY)",
    )
    run.add_argument(
        "--success-exit",
        action="append",
        default=[],
        metavar="CODE",
        help="supervise: exit 0 when the main exits CODE (0-255), or is killed by signal "
        "CODE (TERM = 143), e.g. a JVM's 143 on SIGTERM (repeatable)",
    )
    run.add_argument(
        "--control",
        metavar="PATH|none",
        help="supervise: the control socket pyinitctl talks to (default "
        "/run/pyinit/control.sock; none: no socket; env PYINIT_CONTROL)",
    )
    run.add_argument(
        "--signal-group",
        action="store_true",
        help="supervise: forward signals to the target's process group; the target "
        "runs in its own session (dumb-init's default)",
    )
    run.add_argument(
        "--rewrite",
        action="append",
        default=[],
        metavar="FROM:TO",
        help="supervise: forward signal FROM as TO, e.g. TERM:QUIT (TO 0 drops it)",
    )
    run.add_argument(
        "--setsid",
        action="store_true",
        help="run the target in a new session without a controlling terminal "
        "(blocks TIOCSTI keystroke injection into a root terminal)",
    )
    run.add_argument(
        "--keep-fd",
        action="append",
        default=[],
        metavar="FD",
        help="pass inherited descriptor FD to the target, in both modes "
        "(others >= 3 are closed; LISTEN_FDS ones are kept)",
    )
    run.add_argument(
        "--only-for",
        action="append",
        default=[],
        metavar="NAME",
        help="root setup, step-down, secrets, hooks and items only when the command's basename "
        "is NAME or matches it (a glob: mongo*); a first argument starting with '-' runs the "
        "first NAME with the arguments; any other command runs as it is (repeatable)",
    )

    services = p.add_argument_group("sidecars and tasks (see docs/services.md)")
    for kind, what in (("sidecar", "a long-running helper"), ("task", "a one-shot job")):
        services.add_argument(
            f"--{kind}",
            action=_ItemAction,
            dest="items",
            const=kind,
            default=[],
            metavar="'NAME [KEY=VALUE ...] -- CMD [ARG...]'",
            help=f"start {what} before the main (repeatable, in start order)",
        )
    services.add_argument(
        "--ready", metavar="PROBE", help="readiness of the main, e.g. tcp:8080 or notify"
    )
    services.add_argument(
        "--alive",
        metavar="PROBE",
        help="liveness of the main: PROBE (as --ready, but not notify or fd:N) every "
        "--alive-every seconds from readiness on; --alive-failures failures in a row = dead",
    )
    services.add_argument(
        "--alive-every", metavar="SECS", help="with --alive: seconds between checks (default 10)"
    )
    services.add_argument(
        "--alive-failures",
        metavar="N",
        help="with --alive: failed checks in a row that mean dead (default 3)",
    )
    services.add_argument(
        "--on-unhealthy",
        choices=UNHEALTHY_POLICIES,
        help="with --alive: a dead main makes health unhealthy (ignore, the default) and "
        "also stops the container as SIGTERM would (stop: exit 143)",
    )
    services.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="PATH",
        help="read options and [[start]] items from TOML file PATH, or from the *.toml files "
        "of directory PATH (repeatable, merged in order; env PYINIT_CONFIG)",
    )

    out = p.add_argument_group("output")
    out.add_argument(
        "--dry-run", action="store_true", help="print the plan and exit 0, changing nothing"
    )
    out.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    out.add_argument("-v", "--verbose", action="store_true", help="log the lifecycle on stderr")
    out.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    out.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=log.TEXT,
        help="pyinit's own lines and the sidecars' and tasks' relayed lines as text "
        "(default: 'pyinit: ...', 'NAME | line') or json (one object per line: time, name, "
        "stream, line; level for pyinit's own); the main's output is never touched",
    )
    out.add_argument(
        "--log-time",
        action="store_true",
        help="start each text line with its RFC 3339 UTC time (2026-12-07T21:40:37.123Z)",
    )
    out.add_argument("--version", action="version", version=f"pyinit {__version__}")
    p.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]", help=argparse.SUPPRESS
    )
    return p


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse argv over the config files and the PYINIT_* variables; strip the ``--`` separator.

    One order (docs/usage.md): flags > PYINIT_* environment > config files > defaults.
    """
    flags_only = build_parser().parse_args(argv)
    options = flags_only
    paths = flags_only.config or [p for p in [environ.get("PYINIT_CONFIG")] if p]
    file_command: list[str] = []
    sources: tuple[object, ...] = ()
    if paths:
        from pyinit.plan.config import parse_with_config

        try:
            options, file_command, sources = parse_with_config(paths, build_parser, argv)
        except UsageError as e:
            if flags_only.config:
                raise
            raise name_the_variable(e, "--config", "PYINIT_CONFIG", paths[0]) from None
    options.config_sources = sources
    apply_environment(options, flags_only, environ, ", ".join(paths) or None)
    command = list(options.command)
    if command and command[0] == "--":
        command = command[1:]
    options.command = command or file_command
    if options.mode is None:
        options.mode = "auto"
    elif options.mode not in MODES:
        raise UsageError(f"PYINIT_MODE={options.mode!r}: expected one of {', '.join(MODES)}")
    if options.verbose and options.quiet:
        raise UsageError("--verbose and --quiet exclude each other")
    if options.json and not options.dry_run:
        raise UsageError("--json goes with --dry-run")
    return options


def run(argv: Sequence[str], environ: Mapping[str, str], original_mask: Iterable[int] = ()) -> int:
    """Parse, plan, and run; returns an exit code (exec mode does not return).

    ``original_mask`` is the signal mask pyinit was started with (the target gets it back).
    """
    options = parse_options(argv, environ)
    log.set_level(log.VERBOSE if options.verbose else log.QUIET if options.quiet else log.NORMAL)
    # Before planning: a refused plan's line is in the format asked for too.
    log.set_format(options.log_format, options.log_time)
    plan = build_plan(options, environ)
    if options.dry_run:
        from pyinit.plan.render import render_plan

        _write_stdout(render_plan(plan, environ, as_json=options.json))
        return 0
    for notice in plan.notices:
        log.notice(notice)
    if plan.only_for is not None:
        log.info(f"--only-for: {plan.only_for.note}")
    return execute(plan, original_mask)


def _write_stdout(text: str) -> None:
    """Write to fd 1; a closed or dead stdout (``--dry-run | head -0``) is not an error."""
    data = text.encode()
    try:
        while data:
            data = data[os.write(1, data) :]
    except OSError:
        pass


def hold_closed_stdio() -> None:
    """Put a close-on-exec /dev/null on each of fds 0-2 that pyinit was started without.

    Otherwise pyinit's own next descriptor (the exec-error pipe, a /proc
    read) would become the target's stdin/stdout/stderr.  Close-on-exec: the
    target gets the closed descriptors it was given, as with tini and gosu.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                held = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                held = os.pipe2(os.O_CLOEXEC)[0]
            if held != fd:
                os.dup2(held, fd, inheritable=False)
                os.close(held)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:  # Python found the descriptor closed at start-up
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def execute(plan: Plan, original_mask: Iterable[int]) -> int:
    """Carry out a finished plan in its mode."""
    if plan.mode == "supervise":
        from pyinit.run.supervisor import supervise

        collect_from_now_on()
        return supervise(plan, original_mask)
    from pyinit.run.execmode import run_exec_mode

    collect_from_now_on()
    run_exec_mode(plan, original_mask)


def collect_from_now_on() -> None:
    """Turn the cyclic garbage collector back on if :mod:`pyinit.__main__` turned it off.

    What the start-up made is frozen first (moved out of every later
    collection, see :func:`gc.freeze`): the modules, the plan and pyinit's
    own objects live as long as pyinit does, and enabling the collector over
    them would scan them all at the next allocation.  Root setup, the
    supervisor and its event loop then run with the collector as any
    program does.  The garbage frozen with them, ~50 kB, is mostly the parser's.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None, original_mask: Iterable[int] | None = None) -> NoReturn:
    """Run pyinit and exit with its documented status.

    ``original_mask`` is the signal mask pyinit was started with, when the
    caller (:mod:`pyinit.__main__`) has already blocked every signal.
    """
    if original_mask is None:
        # First thing: block every signal pyinit may forward.  As PID 1 a
        # signal with no handler is discarded by the kernel; blocked, it stays
        # pending until the supervisor's handlers exist (or exec hands the
        # original mask back to the target).  Nothing sent is lost.
        original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blockable_signals())
    hold_closed_stdio()
    try:
        code = run(sys.argv[1:] if argv is None else argv, os.environ, original_mask)
    except PyinitError as e:
        log.error(e.message)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # a bug in pyinit: still one line and a documented code
        log.error(f"internal error: {type(e).__name__}: {e}")
        code = EXIT_SETUP_FAILED
    if "pyinit.run.supervisor" in sys.modules:
        # Supervise mode is done and everything is reaped.  The loop thread
        # (a daemon) may still be running, and the interpreter's teardown of
        # trio's modules costs 30-50 ms of a container's stop.
        os._exit(code)
    _flush_quietly()
    raise SystemExit(code)


def _flush_quietly() -> None:
    """Flush Python's stdio; a dead stdout must not turn into a traceback at exit."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            # Keep the interpreter from flushing (and failing) again at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
