"""Start the target as a child: fork, hand it the terminal, step down, exec.

pyinit owns the fork and the exec (no ``subprocess``): the child must step
down with exactly the code exec mode uses, the parent's reaper must be the
only ``waitpid`` caller, and every signal must stay blocked from before the
fork until the supervisor's handlers are installed, so that nothing sent in
the start-up window is lost.

An exec failure in the child (command not found, step-down refused) comes
back to the parent through a close-on-exec pipe: EOF means exec succeeded;
otherwise the child wrote ``CODE:MESSAGE``.

The child runs as little Python as it can between fork and exec, and
imports nothing there: every page it touches is copied from the parent
(an ``import`` in the child cost ~0.5 ms and ~140 page faults per sidecar,
repeated for each).  Hence ``fcntl`` is imported here, in the parent, and
``try``/``except`` instead of :mod:`contextlib` (which a plain target's
supervisor does not otherwise need).
"""

from __future__ import annotations

import fcntl
import os
import sys

from pyinit.errors import EXIT_SETUP_FAILED, PyinitError
from pyinit.plan.build import SESSION_DETACHED, SESSION_GROUP, SESSION_OWN
from pyinit.run.target import close_inherited_fds, inherited_fds_to_keep, turn_into_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket
    from collections.abc import Callable, Iterable, Mapping
    from typing import NoReturn

    from pyinit.plan import Plan
    from pyinit.plan.build import Launch
    from pyinit.plan.services import Item
    from pyinit.run.reaper import Reaper, Watched


class Child:
    """A started child: its pid, and the pipe that reports an exec failure.

    Read the report once, with :meth:`exec_error` (blocking: the launcher)
    or :meth:`exec_result` (awaited: the event loop); either closes the pipe.
    """

    def __init__(self, pid: int, error_fd: int) -> None:
        self.pid = pid
        self.error_fd = error_fd

    def exec_error(self) -> PyinitError | None:
        """Block until the child has exec'd (None) or failed (the error it reported)."""
        chunks = []
        try:
            while chunk := _read_retrying(self.error_fd):
                chunks.append(chunk)
        finally:
            os.close(self.error_fd)
        return _reported_error(b"".join(chunks))

    async def exec_result(self) -> PyinitError | None:
        """:meth:`exec_error` without blocking the event loop (trio, imported only here)."""
        import trio

        fd = self.error_fd
        os.set_blocking(fd, False)
        chunks = []
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    chunk = _read_retrying(fd)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
        return _reported_error(b"".join(chunks))

    def forget_report(self) -> None:
        """Close the report pipe unread: the caller judges the child by its exit status
        (a child that fails before exec exits with the failure's code)."""
        os.close(self.error_fd)


def _read_retrying(fd: int) -> bytes:
    """One read of up to 4096 bytes, retried when a signal interrupts it."""
    while True:
        try:
            return os.read(fd, 4096)
        except InterruptedError:
            continue


def _reported_error(report: bytes) -> PyinitError | None:
    """The child's report (``CODE:MESSAGE``) as an error; None if it wrote nothing (it exec'd)."""
    if not report:
        return None
    code_text, _, message = report.decode(errors="replace").partition(":")
    return PyinitError(message, int(code_text) if code_text.isdigit() else EXIT_SETUP_FAILED)


class Started:
    """An item the launcher forked before the loop existed; the loop adopts it."""

    def __init__(
        self, run: Watched, error: PyinitError | None, read_ends: dict[int, int], at: float
    ) -> None:
        #: Its pid and, once reaped, its status.
        self.run = run
        #: Why it could not exec (it has exited then), or None.
        self.error = error
        #: {child fd 1/2: our read end} of its log pipes, for the relay.
        self.read_ends = read_ends
        #: time.monotonic() of the fork.
        self.at = at


def fork_failure(error: OSError) -> str:
    """How a refused fork reads in a log line: ``fork failed: Resource temporarily unavailable``."""
    return f"fork failed: {error.strerror or error}"


def started_line(plan: Plan, pid: int) -> str:
    """The log line for the main's start: ``started pid N as USER: COMMAND``."""
    who = plan.identity.describe() if plan.identity is not None else f"uid {os.getuid()}"
    return f"started pid {pid} as {who}: {' '.join(plan.command)}"


def terminal_fd() -> int | None:
    """stdin when it is a terminal whose foreground pyinit holds (``docker run -it``), else None.

    A pyinit started in the background of an interactive shell must not take
    the terminal away from that shell.
    """
    try:
        return 0 if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp() else None
    except OSError:
        return None


def start_target(
    plan: Plan, original_mask: Iterable[int], pass_fds: Mapping[int, int] | None = None
) -> Child:
    """Fork the main (``plan.launch``); it gets its own process group or session, and the terminal.

    ``pass_fds`` (child fd -> our fd: the ``--ready fd:N`` pipe) are given to
    it besides the LISTEN_FDS and ``--keep-fd`` ones (the plan refuses a
    number that is both).  Call with every forwardable signal blocked; the
    child restores ``original_mask`` just before exec.
    """
    launch = plan.launch
    tty = terminal_fd()
    # A detached session (--setsid) has no controlling terminal.  pyinit then
    # keeps its own: a terminal that is still some session's cannot be taken
    # (TIOCSCTTY, an open without O_NOCTTY) by a target without CAP_SYS_ADMIN.
    if tty is not None and launch.session == SESSION_OWN:
        _release_controlling_terminal(tty)
    mask = tuple(original_mask)
    fds = dict(pass_fds or {})
    pid, read_fd = _fork(lambda error_fd: _child_main(launch, mask, error_fd, tty, fds))
    if launch.session == SESSION_GROUP:
        # Also set it here: whichever of parent and child runs first, the group
        # exists before the parent might signal it.
        try:  # noqa: SIM105  (no contextlib: see the module docstring)
            os.setpgid(pid, pid)
        except OSError:
            pass
    return Child(pid, read_fd)


def _fork(child_main: Callable[[int], NoReturn]) -> tuple[int, int]:
    """Fork; the child runs ``child_main(error_fd)``.  Returns (pid, the read end of error_fd).

    error_fd is close-on-exec: EOF on the read end means the child exec'd.
    A refused fork (EAGAIN: the pids cgroup or RLIMIT_NPROC is full; ENOMEM)
    raises OSError and leaves nothing open (:func:`fork_failure` words it).
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        os.close(read_fd)
        child_main(write_fd)
    os.close(write_fd)
    return pid, read_fd


def fork_helper(reaper: Reaper, serve: Callable[[int], object]) -> tuple[Watched, socket]:
    """Fork one of pyinit's own helpers (a status's figures, the probe runner); its socket's end.

    The child runs ``serve(fd)`` on its end of a socket pair, then ``os._exit``
    (0, or 1 if ``serve`` raised): forked from a process that may have other
    threads, it turns the collector off (no finalizer of PID 1's objects runs
    there), closes every inherited descriptor but its socket at once, and
    never returns into pyinit's code.  It is forked inside
    ``reaper.spawning()`` and watched as a helper: the one reaper collects
    it, no stop takes it for a leftover, it is never taken for the main.
    A refused fork raises OSError and leaves nothing open.
    """
    import _socket

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    # Nothing of PID 1's buffered output may be copied into the child.
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with reaper.spawning() as watch:
            pid = os.fork()
            if pid == 0:
                _helper_main(theirs.fileno(), serve)
            watched = watch(pid, helper=True)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return watched, ours


def _helper_main(fd: int, serve: Callable[[int], object]) -> NoReturn:
    code = 1
    try:
        import gc

        gc.disable()
        close_inherited_fds({fd})
        serve(fd)
        code = 0
    finally:
        os._exit(code)


def _child_main(
    launch: Launch,
    original_mask: tuple[int, ...],
    error_fd: int,
    tty: int | None,
    fds: dict[int, int],
) -> NoReturn:
    try:
        if launch.session in (SESSION_OWN, SESSION_DETACHED):
            os.setsid()
            if tty is not None and launch.session == SESSION_OWN:
                _acquire_controlling_terminal(tty)
        else:
            os.setpgid(0, 0)
            if tty is not None:
                # SIGTTOU is still blocked here, so tcsetpgrp from what is now a
                # background group succeeds instead of stopping us: hand the
                # terminal over *before* the signal mask is restored.
                os.tcsetpgrp(tty, os.getpid())
        env = _socket_activation_env(launch, os.getpid())
        error_fd = _install_fds(fds, error_fd)
        keep = inherited_fds_to_keep(launch, error_fd, *fds)
        turn_into_target(launch, original_mask, keep, env)
    except PyinitError as e:
        _report(error_fd, e.exit_code, e.message)
        os._exit(e.exit_code)
    except BaseException as e:  # never let the child return into the supervisor
        _report(error_fd, EXIT_SETUP_FAILED, f"internal error in child: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)


def _install_fds(fds: dict[int, int], error_fd: int) -> int:
    """In the child: dup each of our fds onto its child number; returns error_fd, maybe moved.

    The sources are moved above every number involved first: a source, or
    the error pipe, may itself be one of the target numbers.
    """
    if not fds:
        return error_fd
    floor = max([*fds, *fds.values(), error_fd]) + 1
    if error_fd in fds:
        error_fd = fcntl.fcntl(error_fd, fcntl.F_DUPFD_CLOEXEC, floor)
    moved = {child: fcntl.fcntl(ours, fcntl.F_DUPFD, floor) for child, ours in fds.items()}
    for child, ours in moved.items():
        os.dup2(ours, child)  # without close-on-exec: the target keeps it
    return error_fd


def _report(fd: int, code: int, message: str) -> None:
    try:  # noqa: SIM105
        os.write(fd, f"{code}:{message}".encode(errors="replace"))
    except OSError:
        pass


def _release_controlling_terminal(tty: int) -> None:
    """Give up the terminal so the target's new session can make it its own (dumb-init's way)."""
    import signal
    import termios  # here in the parent: the child's _acquire_controlling_terminal uses it

    if os.getsid(0) != os.getpid():
        return  # only a session leader's TIOCNOTTY frees the terminal for another session
    try:  # noqa: SIM105
        fcntl.ioctl(tty, termios.TIOCNOTTY)
    except OSError:
        pass
    # The kernel answers a session leader's TIOCNOTTY with SIGHUP and SIGCONT to
    # the foreground group, which is us.  They are blocked and pending now:
    # discard them, or the supervisor would forward a SIGHUP to the target.
    while signal.sigtimedwait([signal.SIGHUP, signal.SIGCONT], 0) is not None:
        pass


def _acquire_controlling_terminal(tty: int) -> None:
    import termios  # imported already, by the parent's _release_controlling_terminal

    # Works when the terminal is no session's controlling terminal any more
    # (the supervisor gave it up with TIOCNOTTY); otherwise the target simply
    # runs without one, as with --setsid.
    try:  # noqa: SIM105
        fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
    except OSError:
        pass


def _socket_activation_env(launch: Launch, child_pid: int) -> Mapping[str, str]:
    # LISTEN_PID names the process the fds are for: it was pyinit, now it is the target.
    if not launch.listen_fds:
        return launch.env
    return {**launch.env, "LISTEN_PID": str(child_pid)}


def fork_item(
    item: Item,
    original_mask: Iterable[int],
    extra_env: Mapping[str, str],
    pass_fds: dict[int, int],
    command: tuple[str, ...] | None = None,
) -> tuple[Child, dict[int, int]]:
    """Fork one run of a sidecar or task; (the child, {child fd 1/2: our read end} to relay).

    It is started as ``item.launch`` says, with ``extra_env`` (its readiness
    channel's NOTIFY_SOCKET) added to that environment; ``command``, when
    given, runs instead of the item's, the rest unchanged (an ``exec:``
    probe runs as its item).  With ``log=prefix`` its stdout and stderr are
    pipes whose read ends the caller relays; with ``log=raw`` it inherits
    pyinit's.
    """
    launch = item.launch
    if launch is None:
        raise PyinitError(f"internal error: {item.kind} {item.name} has no launch record")
    if command is not None:
        launch = launch.replace(command=command)
    env = {**launch.env, **extra_env} if extra_env else launch.env
    write_ends: dict[int, int] = {}
    read_ends: dict[int, int] = {}
    if item.log == "prefix":
        for fd in (1, 2):
            read_ends[fd], write_ends[fd] = os.pipe2(os.O_CLOEXEC)
    try:
        child = start_item(launch, original_mask, write_ends, pass_fds, env)
    except BaseException:
        for fd in read_ends.values():
            os.close(fd)
        raise
    finally:
        for fd in write_ends.values():
            os.close(fd)
    return child, read_ends


def start_item(
    launch: Launch,
    original_mask: Iterable[int],
    stdio: dict[int, int],
    pass_fds: dict[int, int],
    env: Mapping[str, str],
) -> Child:
    """Fork a sidecar or task as its ``launch`` says, exec'd with ``env``.

    The child leads a session of its own (so its session id and process
    group id are its pid), never has a terminal, gets stdin from /dev/null,
    ``stdio`` (child fd 1/2 -> our fd: the log pipes; absent: inherited) and
    ``pass_fds`` (child fd -> our fd: a readiness pipe).  Call inside
    ``reaper.spawning()`` with every forwardable signal blocked.

    Its own session is the wall between items: ``setpgid`` only joins a
    group of the caller's own session, so no other item can join this one's
    group (and speak for it on its notify socket, or be stopped with it).
    The parent does not ``setpgid`` the child, as :func:`start_target` does
    for a group: a group leader could not ``setsid``.  A signal sent to the
    group before the child's ``setsid`` reaches the child alone
    (:func:`pyinit.root.hooks.kill_group`), and waits, blocked, until exec.
    """
    mask = tuple(original_mask)
    fds = {**stdio, **pass_fds}
    pid, read_fd = _fork(lambda error_fd: _item_child_main(launch, mask, error_fd, fds, env))
    return Child(pid, read_fd)


def _item_child_main(
    launch: Launch,
    original_mask: tuple[int, ...],
    error_fd: int,
    fds: dict[int, int],
    env: Mapping[str, str],
) -> NoReturn:
    try:
        os.setsid()  # launch.session is SESSION_DETACHED for every item
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        error_fd = _install_fds(fds, error_fd)
        turn_into_target(launch, original_mask, inherited_fds_to_keep(launch, error_fd, *fds), env)
    except PyinitError as e:
        _report(error_fd, e.exit_code, e.message)
        os._exit(e.exit_code)
    except BaseException as e:  # never let the child return into the supervisor
        _report(error_fd, EXIT_SETUP_FAILED, f"internal error in child: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)
