"""Turn the current process into the target: identity, process attributes, exec.

Shared by exec mode (in pyinit's own process) and supervise mode (in the
forked child), so both modes step down and exec exactly the same way.
"""

from __future__ import annotations

import errno
import os

from pyinit.errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, PyinitError
from pyinit.plan.capabilities import CAPABILITY_NUMBERS, capability_mask
from pyinit.plan.signals import reset_child_signal_state
from pyinit.root.identity import open_status, step_down, switch_ids, verify_step_down
from pyinit.root.setup import apply_rlimits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import NoReturn

    from pyinit.plan import Plan

#: Docker's default PATH, used when the environment has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def turn_into_target(
    plan: Plan, signal_mask: Iterable[int], keep_fds: set[int], env: Mapping[str, str]
) -> NoReturn:
    """The one sequence every mode ends with: close fds, become the target, exec.

    Exec mode runs it in pyinit's own process, supervise mode in the forked
    child (main, sidecar or task).  Raises PyinitError (125/126/127).
    """
    # A leaked runtime fd must not reach the target (CVE-2024-21626).
    close_inherited_fds(keep=keep_fds)
    become_target(plan, signal_mask=signal_mask)
    exec_command(plan.command, env)


def become_target(plan: Plan, signal_mask: Iterable[int] | None = None) -> None:
    """Apply umask, identity, capabilities, workdir and signal state; everything but exec.

    Raises PyinitError (125) when any step fails.
    """
    if plan.no_new_privs or plan.keep_caps:
        # Import before the step-down: the target may not be able to read
        # pyinit's Python installation (a venv or pyenv under /root).
        from pyinit.root import prctl
    if plan.umask is not None:
        os.umask(plan.umask)
    # Limits apply to the target only, as root (raising a hard limit needs
    # CAP_SYS_RESOURCE): after this, a new descriptor may be out of reach
    # (nofile=3), so the step-down reads its status through one opened before.
    status_fd = open_status() if plan.rlimits else None
    try:
        apply_rlimits(plan)
        if plan.switch_identity and plan.identity is not None:
            if plan.keep_caps:
                _step_down_keeping_caps(plan, status_fd)
            else:
                step_down(plan.identity, plan.extra_groups, status_fd)
    finally:
        if status_fd is not None:
            os.close(status_fd)
    if plan.workdir is not None:
        change_directory(plan)
    if plan.no_new_privs:
        _checked(prctl.set_no_new_privs, "--no-new-privs")
    if plan.setsid:
        new_session()
    reset_child_signal_state(signal_mask)


def new_session() -> None:
    """setsid(): no controlling terminal, so the target cannot TIOCSTI into root's.

    setsid fails for a process-group leader (exec mode started by a runtime or
    with ``setsid``).  Leading a session that has no terminal already meets
    the goal; otherwise fail clearly: only a fork (supervise mode) helps.
    """
    try:
        os.setsid()
    except PermissionError:
        if os.getsid(0) == os.getpid() and not _has_controlling_terminal():
            return
        raise PyinitError(
            f"--setsid: pyinit (pid {os.getpid()}) leads process group {os.getpgrp()} "
            "and cannot start a new session in exec mode; use --mode supervise"
        ) from None


def _has_controlling_terminal() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _step_down_keeping_caps(plan: Plan, status_fd: int | None) -> None:
    # PR_SET_KEEPCAPS keeps the permitted set across setresuid; then the sets
    # are cut down to the kept capabilities and those are raised as ambient,
    # the only kind that survives execve of an ordinary binary as non-root.
    from pyinit.root import prctl  # already imported by become_target

    assert plan.identity is not None
    mask = capability_mask(plan.keep_caps)
    _checked(lambda: prctl.set_keep_caps(True), "--keep-cap")
    groups = switch_ids(plan.identity, plan.extra_groups)
    _checked(lambda: prctl.set_capabilities(mask), "--keep-cap")
    for name in plan.keep_caps:
        _checked(lambda n=name: prctl.raise_ambient(CAPABILITY_NUMBERS[n]), f"--keep-cap {name}")
    _checked(lambda: prctl.set_keep_caps(False), "--keep-cap")
    verify_step_down(plan.identity, groups, mask, status_fd)


def _checked(action: object, flag: str) -> None:
    try:
        action()  # type: ignore[operator]
    except OSError as e:
        raise PyinitError(f"{flag}: {e.strerror or e}") from None


def change_directory(plan: Plan) -> None:
    """chdir to --workdir as the target (``~`` is the target's home)."""
    assert plan.workdir is not None
    path = plan.workdir
    if path == "~" or path.startswith("~/"):
        home = plan.identity.home if plan.identity else plan.env.get("HOME", "/")
        path = home + path[1:]
    try:
        os.chdir(path)
    except OSError as e:
        shown = repr(plan.workdir) if path == plan.workdir else f"{plan.workdir!r} ({path})"
        raise PyinitError(f"--workdir {shown}: {e.strerror} (as uid {os.getuid()})") from None


def exec_command(command: Sequence[str], env: Mapping[str, str]) -> NoReturn:
    """execve ``command``, looked up on the target's PATH; raises PyinitError 126/127.

    The lookup runs with the target's permissions, after the step-down.  A
    PATH directory the target cannot search (e.g. /root) is skipped, as runc
    does, so "not found anywhere" is 127 even where ``os.execvpe`` would
    report EACCES; 126 is kept for a file found but not executable.
    """
    name = command[0]
    argv = list(command)
    if not name:
        # execve refuses an empty argv[0]; docker says "not found in $PATH" (127).
        raise PyinitError("'': command not found (empty command name)", EXIT_NOT_FOUND)
    if "/" in name:
        try:
            os.execve(name, argv, env)
        except OSError as e:
            raise _exec_error(name, e) from None
    found_unexecutable: OSError | None = None
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        path = os.path.join(directory or ".", name)
        try:
            os.execve(path, argv, env)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
                continue
            if e.errno == errno.EACCES and not _is_file(path):
                continue  # an unsearchable directory on PATH: not found *there*
            found_unexecutable = found_unexecutable or e
    if found_unexecutable is not None:
        raise _exec_error(name, found_unexecutable)
    raise PyinitError(
        f"{name}: command not found (looked in PATH as uid {os.getuid()})", EXIT_NOT_FOUND
    )


def _is_file(path: str) -> bool:
    try:
        return os.path.isfile(path)
    except OSError:
        return False


def _exec_error(name: str, error: OSError) -> PyinitError:
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return PyinitError(f"{name}: no such file or directory", EXIT_NOT_FOUND)
    reason = {
        errno.EACCES: "permission denied",
        errno.ENOEXEC: "exec format error (not a binary and no #! line)",
        errno.EISDIR: "is a directory",
    }.get(error.errno or 0, error.strerror or str(error))
    if error.errno == errno.EACCES and os.path.isdir(name):
        reason = "is a directory"
    return PyinitError(
        f"{name}: cannot execute: {reason} (as uid {os.getuid()})", EXIT_CANNOT_EXECUTE
    )


def inherited_fds_to_keep(plan: Plan, *extra: int) -> set[int]:
    """The fds >= 3 the target keeps: the LISTEN_FDS ones, ``--keep-fd``, and ``extra``."""
    return {*extra, *plan.keep_fds, *range(3, 3 + plan.listen_fds)}


def close_inherited_fds(keep: set[int]) -> None:
    """Close every descriptor >= 3 except those in ``keep``."""
    start = 3
    for fd in sorted(f for f in keep if f >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 1 << 16
