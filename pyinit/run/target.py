"""Turn the current process into the target: identity, process attributes, exec.

Shared by exec mode (in pyinit's own process) and supervise mode (in the
forked child: main, sidecar or task), so every process steps down and execs
exactly the same way, each from its launch record
(:class:`pyinit.plan.build.Launch`).  Also the signal state a target starts
with, and how pyinit tells its own signals from those sent to it.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub: the C module signal wraps
import errno
import os
import signal

from pyinit.errors import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, PyinitError
from pyinit.plan.build import SESSION_SETSID
from pyinit.plan.capabilities import CAPABILITY_NUMBERS, capability_mask
from pyinit.plan.host import has_controlling_terminal
from pyinit.plan.signals import PYTHON_IGNORED_SIGNALS
from pyinit.root.identity import open_status, step_down, switch_ids, verify_step_down
from pyinit.root.setup import apply_rlimits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import NoReturn

    from pyinit.plan.build import Launch

#: si_code values (<bits/siginfo-consts.h>): sent with kill(2), with tkill/tgkill, by the kernel.
SI_USER = 0
SI_TKILL = -6
SI_KERNEL = 0x80

#: Docker's default PATH, used when the environment has none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The directory pyinit was started in, once PID 1 has left it for ``/``
#: (:func:`leave_start_directory`); None while pyinit is still in it.
_start_directory: str | None = None


def leave_start_directory() -> None:
    """chdir to ``/``, so that PID 1 does not pin the directory it was started in (a volume).

    A process started later without a workdir (a sidecar's restart, ``pyinitctl
    start``) still starts in that directory, as the first ones did.
    """
    global _start_directory
    try:
        _start_directory = os.getcwd()
    except OSError:  # removed already: there is nothing to go back to
        _start_directory = None
    os.chdir("/")


def return_to_start_directory() -> None:
    """In a child started after :func:`leave_start_directory`: enter pyinit's start directory.

    Done as root, before the step-down, so the child's directory is the one a
    child started before it inherited.  Raises PyinitError (125) when it is gone.
    """
    if _start_directory is None:
        return
    try:
        os.chdir(_start_directory)
    except OSError as e:
        raise PyinitError(
            f"cannot enter {_start_directory!r}, the directory pyinit was started in: {e.strerror}"
        ) from None


def turn_into_target(
    launch: Launch, signal_mask: Iterable[int], keep_fds: set[int], env: Mapping[str, str]
) -> NoReturn:
    """The one sequence every mode ends with: close fds, become the target, exec.

    Exec mode runs it in pyinit's own process, supervise mode in the forked
    child (main, sidecar or task), which has already taken its session or
    group (:mod:`pyinit.run.spawn`).  ``keep_fds`` survive (see
    :func:`inherited_fds_to_keep`); ``env`` is ``launch.env`` or one derived
    from it at run time (LISTEN_PID, NOTIFY_SOCKET).  Raises PyinitError
    (125/126/127).
    """
    # A leaked runtime fd must not reach the target (CVE-2024-21626).
    close_inherited_fds(keep=keep_fds)
    become_target(launch, signal_mask=signal_mask)
    exec_command(launch.command, env)


def become_target(launch: Launch, signal_mask: Iterable[int] | None = None) -> None:
    """Apply umask, limits, identity, capabilities, workdir and signal state; all but exec.

    Raises PyinitError (125) when any step fails.
    """
    if launch.no_new_privs or launch.keep_caps:
        # Import before the step-down: the target may not be able to read
        # pyinit's Python installation (a venv or pyenv under /root).
        from pyinit.root import prctl
    if launch.umask is not None:
        os.umask(launch.umask)
    if launch.workdir is None:
        return_to_start_directory()
    # Limits apply to the target only, as root (raising a hard limit needs
    # CAP_SYS_RESOURCE): after this, a new descriptor may be out of reach
    # (nofile=3), so the step-down reads its status through one opened before.
    status_fd = open_status() if launch.rlimits else None
    try:
        apply_rlimits(launch.rlimits)
        if launch.switch_identity and launch.identity is not None:
            if launch.keep_caps:
                _step_down_keeping_caps(launch, status_fd)
            else:
                step_down(launch.identity, launch.extra_groups, status_fd)
    finally:
        if status_fd is not None:
            os.close(status_fd)
    if launch.workdir is not None:
        change_directory(launch)
    if launch.no_new_privs:
        _checked(prctl.set_no_new_privs, "--no-new-privs")
    if launch.session == SESSION_SETSID:
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
        if os.getsid(0) == os.getpid() and not has_controlling_terminal():
            return
        raise PyinitError(
            f"--setsid: pyinit (pid {os.getpid()}) leads process group {os.getpgrp()} "
            "and cannot start a new session in exec mode; use --mode supervise"
        ) from None


def _step_down_keeping_caps(launch: Launch, status_fd: int | None) -> None:
    # PR_SET_KEEPCAPS keeps the permitted set across setresuid; then the sets
    # are cut down to the kept capabilities and those are raised as ambient,
    # the only kind that survives execve of an ordinary binary as non-root.
    from pyinit.root import prctl  # already imported by become_target

    assert launch.identity is not None
    mask = capability_mask(launch.keep_caps)
    _checked(lambda: prctl.set_keep_caps(True), "--keep-cap")
    groups = switch_ids(launch.identity, launch.extra_groups)
    _checked(lambda: prctl.set_capabilities(mask), "--keep-cap")
    for name in launch.keep_caps:
        _checked(lambda n=name: prctl.raise_ambient(CAPABILITY_NUMBERS[n]), f"--keep-cap {name}")
    _checked(lambda: prctl.set_keep_caps(False), "--keep-cap")
    verify_step_down(launch.identity, groups, mask, status_fd)


def _checked(action: object, flag: str) -> None:
    try:
        action()  # type: ignore[operator]
    except OSError as e:
        raise PyinitError(f"{flag}: {e.strerror or e}") from None


def change_directory(launch: Launch) -> None:
    """chdir to the workdir as the target (``~`` is the target's home)."""
    assert launch.workdir is not None
    path = launch.workdir
    if path == "~" or path.startswith("~/"):
        home = launch.identity.home if launch.identity else launch.env.get("HOME", "/")
        path = home + path[1:]
    try:
        os.chdir(path)
    except OSError as e:
        shown = repr(launch.workdir) if path == launch.workdir else f"{launch.workdir!r} ({path})"
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


def inherited_fds_to_keep(launch: Launch, *extra: int) -> set[int]:
    """The fds >= 3 the target keeps: its launch's (LISTEN_FDS, ``--keep-fd``), and ``extra``."""
    return {*extra, *launch.keep_fds}


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


# --- the signal state a target starts with ---------------------------------------


def is_own_signal(info: signal.struct_siginfo, own_pid: int) -> bool:
    """Whether pyinit's own doing raised this signal, so that it must not be forwarded.

    A write to a dead pipe (stderr read by ``head -0``, a crashed log
    collector) raises SIGPIPE, one past ``--rlimit fsize`` SIGXFSZ: the
    kernel sends them with ``si_code`` SI_USER and the writer's own pid.  A
    ``docker kill -s PIPE`` comes from another pid (0 from outside the
    namespace) and is forwarded.  A fault carries a positive, non-SI_KERNEL
    code (SEGV_MAPERR, BUS_ADRERR, ...).
    """
    code = info.si_code
    if code in (SI_USER, SI_TKILL):
        return info.si_pid == own_pid
    return 0 < code < SI_KERNEL and info.si_signo != signal.SIGCHLD


def reset_child_signal_state(mask: Iterable[int] | None = None) -> None:
    """Give a process about to exec the signal state a fresh program expects.

    Python ignores SIGPIPE and SIGXFSZ at start-up, and ignored dispositions
    survive exec: without this, a target writing to a closed pipe gets EPIPE
    instead of dying quietly as shells and C programs expect.  Caught signals
    are reset by exec itself.  ``mask``, when given, replaces the blocked set:
    pyinit blocks every signal from its first statement and hands the target
    the mask pyinit itself was started with.  A SIGPIPE or SIGXFSZ that
    pyinit's own writes left pending (a dead stderr) is discarded first, or
    it would kill the target the moment the mask is restored; one sent by
    somebody else stays pending for the target.

    It calls ``_signal`` (the C module :mod:`signal` wraps) directly: the
    wrappers turn the old disposition and the old mask (every signal, ~30 of
    them real-time ones that no ``Signals`` member names, each a ValueError
    caught) into enum members nobody reads, which cost a forked child ~0.25 ms
    of its ~0.6 ms before exec (copy-on-write faults included), for each
    sidecar.
    """
    if mask is not None:
        _discard_own_pending(PYTHON_IGNORED_SIGNALS)
    for sig in PYTHON_IGNORED_SIGNALS:
        _signal.signal(sig, _signal.SIG_DFL)
    if mask is not None:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)


def _discard_own_pending(signals: Iterable[int]) -> None:
    # No query of the mask first: an unblocked signal is never pending, so the
    # poll just finds nothing.
    pid = os.getpid()
    others = []
    for sig in signals:
        while (info := _signal.sigtimedwait((sig,), 0)) is not None:
            if not is_own_signal(info, pid):
                others.append(sig)
    for sig in others:
        os.kill(pid, sig)  # pending again (still blocked), for the target after exec
