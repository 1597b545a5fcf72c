"""Readiness probes (docs/services.md): wait until a sidecar (or the main) is ready.

Two families:

* **push** probes, where the process tells us: ``notify`` (sd_notify
  ``READY=1`` on an abstract AF_UNIX datagram socket of its own) and ``fd:N``
  (s6 notification-fd: a newline on fd N).  Their channel is made *before*
  the fork (:func:`open_channel`) and passed to the spawn; waiting on them
  never polls, so an idle pyinit has no wake-ups.
* **polling** probes: ``tcp:``, ``unix:``, ``file:``, ``exec:``, ``http://``.
  The first call is immediate, then every 100 ms, doubling to 1 s; every
  call is bounded by :data:`PROBE_CALL_TIMEOUT`.

The credentials of every notify datagram are checked (SO_PASSCRED), because
any process in the network namespace can find an abstract socket (in
/proc/net/unix) and send to it: only a process of the item's own user, in
the item's own session or process group, may declare it ready (see
:meth:`NotifySocket.accepts`).

Imports a probe needs (struct, the socket family) happen only when that probe
is used.
"""

from __future__ import annotations

import os
import signal

import trio

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED, PyinitError
from pyinit.plan.services import PROBE_CALL_TIMEOUT, PROBE_FIRST_INTERVAL, PROBE_MAX_INTERVAL
from pyinit.run.spawn import fork_failure
from pyinit.stopping import kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable, Sequence
    from typing import TypeVar

    from pyinit.plan.services import Probe
    from pyinit.plan.userspec import Identity
    from pyinit.run.loop import Supervision
    from pyinit.run.proberunner import ProbeKey
    from pyinit.run.spawn import Child

    T = TypeVar("T")
    Notice = Callable[[str], None]
    RunProbeCommand = Callable[[Sequence[str]], Awaitable[int]]

#: With no ready-timeout, a notice this often names what is still awaited.
NOTICE_INTERVAL = 10.0
#: Largest notify datagram read (systemd's own limit is a page or so).
NOTIFY_DATAGRAM_MAX = 4096
#: File descriptors accepted (and closed at once) with one datagram: BARRIER=1 carries one.
NOTIFY_MAX_FDS = 16
#: Linux 6.5's SO_PASSPIDFD and SCM_PIDFD (Python's socket module lacks them before 3.13),
#: asm-generic values, used only on the machines whose headers take them from there.
SO_PASSPIDFD = 76
SCM_PIDFD = 4
GENERIC_SOCKET_MACHINES = ("x86_64", "i686", "aarch64", "armv7l", "riscv64", "ppc64le")


class ReadyTimeout(PyinitError):
    """Not ready within ``ready-timeout``: exit 125, one line naming the item."""


class ProbeFailed(Exception):
    """A push probe ended without readiness (the fd was closed): the process probably died."""


# --- waiting with a bound or a notice ------------------------------------------------


def not_ready(what: str, timeout: float, awaiting: str = "") -> ReadyTimeout:
    """The :class:`ReadyTimeout` for ``what``, not ready within ``timeout`` seconds."""
    suffix = f" ({awaiting})" if awaiting else ""
    return ReadyTimeout(f"{what} not ready within {timeout:g}s{suffix}", EXIT_SETUP_FAILED)


async def bounded_wait(
    what: str,
    wait: Callable[[], Awaitable[T]],
    timeout: float | None,
    notice: Notice,
    awaiting: str = "",
    deadline: float | None = None,
) -> T:
    """Run ``wait()``; past ``timeout`` seconds raise :class:`ReadyTimeout` naming ``what``.

    ``deadline`` (trio's clock), if given, is when that ``timeout`` ends: a
    wait that began earlier (a sidecar restarted before it was ready) counts.
    With no timeout, wait for ever, calling ``notice`` every
    :data:`NOTICE_INTERVAL` seconds with what is awaited (``awaiting``).
    """
    suffix = f" ({awaiting})" if awaiting else ""
    if timeout is not None:
        with trio.move_on_at(trio.current_time() + timeout if deadline is None else deadline):
            return await wait()
        raise not_ready(what, timeout, awaiting)
    result: list[T] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_remind, what, suffix, notice)
            result.append(await wait())
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_error(group) from None
    return result[0]


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real error inside a nursery's exception group (the group itself if several).

    A Cancelled beside a real error is left out: a process's exit can cancel
    a wait at the moment its pipe's EOF raises ProbeFailed, and trio raises
    Cancelled again at the next checkpoint inside a cancelled scope anyway.
    """
    _, errors = group.split(trio.Cancelled)
    if errors is not None:
        group = errors
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]  # type: ignore[assignment]
    return group


async def _remind(what: str, suffix: str, notice: Notice) -> None:
    waited = 0.0
    while True:
        await trio.sleep(NOTICE_INTERVAL)
        waited += NOTICE_INTERVAL
        notice(f"still waiting for {what} to be ready{suffix}, {waited:g}s so far")


async def wait_ready(
    probe: Probe,
    *,
    name: str,
    channel: NotifySocket | ReadyPipe | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    notice: Notice = log.notice,
    run_probe_command: RunProbeCommand | None = None,
) -> None:
    """Return once ``probe`` says ready.

    ``name`` labels messages (``sidecar db``, ``main``).  ``notify`` and ``fd``
    need the ``channel`` from :func:`open_channel`, made before the fork;
    ``exec`` needs ``run_probe_command(argv) -> exit code``, which runs the
    command as the item's user and, when cancelled (the 1 s bound), kills it.
    Raises :class:`ReadyTimeout` past ``timeout`` (which ends at ``deadline``,
    trio's clock, when given) and :class:`ProbeFailed` when a push probe's
    channel closes first.
    """
    await bounded_wait(
        name,
        lambda: _wait(probe, channel, notice, run_probe_command),
        timeout,
        notice,
        f"waiting for {probe.text}",
        deadline,
    )


async def _wait(
    probe: Probe,
    channel: NotifySocket | ReadyPipe | None,
    notice: Notice,
    run_probe_command: RunProbeCommand | None,
) -> None:
    if probe.kind in ("notify", "fd"):
        if channel is None:
            raise ValueError(f"probe {probe.text} needs the channel opened before the fork")
        await channel.wait(notice)
        return
    await poll(checker(probe, run_probe_command))


# --- polling -------------------------------------------------------------------------


async def poll(check: Callable[[], Awaitable[bool]]) -> None:
    """Call ``check`` until it returns True: at once, then backing off from 100 ms to 1 s.

    Each call is bounded by :data:`PROBE_CALL_TIMEOUT`; one that runs out, or
    raises OSError, counts as not ready.
    """
    interval = PROBE_FIRST_INTERVAL
    while not await check_once(check):
        await trio.sleep(interval)
        interval = min(interval * 2, PROBE_MAX_INTERVAL)


async def check_once(check: Callable[[], Awaitable[bool]]) -> bool:
    """One probe call, bounded by :data:`PROBE_CALL_TIMEOUT`; running out or OSError is False."""
    with trio.move_on_after(PROBE_CALL_TIMEOUT):
        try:
            return await check()
        except OSError:
            pass
    return False


def checker(
    probe: Probe, run_probe_command: RunProbeCommand | None
) -> Callable[[], Awaitable[bool]]:
    """One call of a polling ``probe`` (True: it passed); ``exec:`` needs ``run_probe_command``."""
    kind = probe.kind
    if kind == "tcp":
        host = probe.host or "127.0.0.1"
        port = probe.port
        assert port is not None
        return lambda: check_tcp(host, port)
    if kind == "unix":
        assert probe.path is not None
        return lambda: check_unix(probe.path or "")
    if kind == "file":
        assert probe.path is not None
        return lambda: check_file(probe.path or "")
    if kind == "http":
        assert probe.port is not None
        return lambda: check_http(probe.host or "127.0.0.1", probe.port or 80, probe.path or "/")
    if kind == "exec":
        if run_probe_command is None:
            raise ValueError("an exec: probe needs run_probe_command")
        assert probe.argv
        argv = probe.argv
        runner = run_probe_command

        async def check_exec() -> bool:
            return await runner(argv) == 0

        return check_exec
    raise ValueError(f"unknown probe kind {kind!r}")


async def run_probe_child(
    sup: Supervision, label: str, fork: Callable[[], Child], key: ProbeKey | None = None
) -> int:
    """An ``exec:`` probe's run; its exit code.

    The probe runner (:mod:`pyinit.run.proberunner`) runs probe ``key`` when
    there is one; otherwise, or once it is gone, ``fork()`` forks it here,
    watched, and its end is awaited.  ``label`` names whose probe it is
    (``sidecar db``, ``main``).  A refused fork is a failed check (125: the
    probe tries again).  The probe's group is killed after it, and when its
    call is cancelled (the 1 s bound).
    """
    runner = sup.probe_runner
    index = None if runner is None or key is None else runner.index_of(key)
    if runner is not None and index is not None:
        answer = await runner.run(index, PROBE_CALL_TIMEOUT, sup.nursery)
        if answer is not None:
            code, message = answer
            if message:
                log.info(f"{label}: {message}")
            return code
    try:
        with sup.reaper.spawning() as watch:
            child = fork()
            run = watch(child.pid)
    except OSError as e:
        log.info(f"{label}: probe not run: {fork_failure(e)}")
        return EXIT_SETUP_FAILED
    # Its exec-failure report is not awaited: a probe that cannot exec exits
    # with the failure's code, and its exit is all a check asks (one wake-up
    # of the loop per call, not two).  The pipe stays open until then, so the
    # child's report is written as ever.
    try:
        status = await sup.wait_exit(run)
    finally:
        child.forget_report()
        kill_group(child.pid, signal.SIGKILL, reaped=run.exited)
    return os.waitstatus_to_exitcode(status)


async def check_tcp(host: str, port: int) -> bool:
    """True when a TCP connection to host:port succeeds.

    An IP address (the usual case, ``tcp:PORT`` being 127.0.0.1) is connected to
    directly: one socket, no resolution and no happy-eyeballs nursery, about a
    quarter of the CPU of :func:`trio.open_tcp_stream`, which takes a name.
    """
    family = ip_family(host)
    if family is None:
        stream = await trio.open_tcp_stream(host, port)
        await stream.aclose()
        return True
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    with sock:
        await sock.connect((host, port))
    return True


def ip_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP address of that family, else None (a name)."""
    for family in (trio.socket.AF_INET, trio.socket.AF_INET6):
        try:
            trio.socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def check_unix(path: str) -> bool:
    """True when a stream connection to the unix socket ``path`` (``@name``: abstract) succeeds."""
    address = "\0" + path[1:] if path.startswith("@") else path
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with sock:
        await sock.connect(address)
    return True


async def check_file(path: str) -> bool:
    """True when ``path`` exists."""
    return os.path.exists(path)


async def check_http(host: str, port: int, path: str) -> bool:
    """True when ``GET path`` answers 2xx or 3xx (a raw HTTP/1.0 request: no http.client)."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode("latin-1"))
        head = b""
        while b"\n" not in head and len(head) < 4096:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
    finally:
        await stream.aclose()
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False
    return 200 <= int(parts[1]) < 400


# --- push channels -------------------------------------------------------------------


def open_channel(probe: Probe | None, name: str, uid: int) -> NotifySocket | ReadyPipe | None:
    """The channel a push probe needs, made before the fork (None for other probes).

    ``uid`` is the user the process will run as (:func:`runs_as`): a notify
    datagram from any other user is ignored.  Give the child ``channel.env``
    and ``channel.pass_fds`` (child fd -> our fd), then call
    ``channel.child_started(pid)`` in the parent.
    """
    if probe is None:
        return None
    if probe.kind == "notify":
        return NotifySocket(name, uid)
    if probe.kind == "fd":
        assert probe.fd is not None
        return ReadyPipe(name, probe.fd)
    return None


def runs_as(identity: Identity | None, switch_identity: bool) -> int:
    """The uid a process planned with ``identity``/``switch_identity`` runs as."""
    if identity is not None and switch_identity:
        return identity.uid
    return os.geteuid()


class ReadyPipe:
    """s6 notification-fd: the child gets a pipe's write end as fd N; a newline means ready."""

    def __init__(self, name: str, child_fd: int) -> None:
        self.name = name
        self.child_fd = child_fd
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self.env: dict[str, str] = {}
        self.pass_fds = {child_fd: self.write_fd}
        self._closed = False

    def child_started(self, pid: int) -> None:
        """Close our copy of the write end, so the child's exit is seen as EOF."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    async def wait(self, notice: Notice) -> None:
        """Return at the first newline; :class:`ProbeFailed` on EOF before it."""
        self.child_started(0)
        os.set_blocking(self.read_fd, False)
        while True:
            await trio.lowlevel.wait_readable(self.read_fd)
            try:
                data = os.read(self.read_fd, 4096)
            except BlockingIOError:
                continue
            if not data:
                raise ProbeFailed(
                    f"{self.name} closed fd {self.child_fd} before it wrote a newline"
                )
            if b"\n" in data:
                self.close()
                return

    def close(self) -> None:
        """Close both ends (idempotent)."""
        self.child_started(0)
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.read_fd)
            os.close(self.read_fd)


class NotifySocket:
    """A NOTIFY_SOCKET for one item: an abstract datagram socket, credentials checked.

    Only datagrams whose sender runs as ``uid`` and belongs to the item (see
    :meth:`accepts`) count.  The sender must still exist when the datagram is
    read: ``systemd-notify`` waits on a BARRIER=1 for that, and a daemon that
    notifies itself lives on.
    """

    def __init__(self, name: str, uid: int) -> None:
        import socket

        self.name = name
        self.uid = uid
        self.address = f"pyinit/{os.getpid()}/{name.replace(' ', '-')}/{os.urandom(6).hex()}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            _ask_for_pidfds(self._sock)
            self._sock.bind("\0" + self.address)
        except OSError:
            self._sock.close()
            raise
        self.env = {"NOTIFY_SOCKET": "@" + self.address}
        self.pass_fds: dict[int, int] = {}
        self.leader: int | None = None
        self._trio_sock: trio.socket.SocketType | None = None

    def child_started(self, pid: int) -> None:
        """Accept datagrams from the session or process group that ``pid`` leads only."""
        self.leader = pid

    async def wait(self, notice: Notice) -> None:
        """Return at the first accepted ``READY=1``; STATUS= lines go to ``notice``."""
        while not await self._receive(notice):
            pass

    async def _receive(self, notice: Notice) -> bool:
        """Read one datagram; True if it is an accepted READY=1."""
        import socket

        if self._trio_sock is None:
            self._trio_sock = trio.socket.from_stdlib_socket(self._sock)
        data, ancillary, _flags, _address = await self._trio_sock.recvmsg(
            NOTIFY_DATAGRAM_MAX,
            socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4) + socket.CMSG_SPACE(4 * NOTIFY_MAX_FDS),
        )
        sender = _sender_and_close_fds(ancillary)
        try:
            accepted = self.accepts(sender)
        finally:
            if sender is not None and sender[2] is not None:
                os.close(sender[2])
        if not accepted:
            pid, uid, _ = sender or (None, None, None)
            log.info(f"{self.name}: ignored a notify datagram from pid {pid} (uid {uid})")
            return False
        ready = False
        for line in data.decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                ready = True
            elif key == "STATUS":
                notice(f"{self.name}: {value}")
        return ready

    def accepts(self, sender: tuple[int, int, int | None] | None) -> bool:
        """Whether a datagram from ``sender`` (pid, uid, pidfd, as the kernel vouched) counts.

        Its uid must be the item's: the kernel fills SCM_CREDENTIALS in, and a
        process without CAP_SETUID can only claim a uid it holds, so another
        user's process fails here whatever it does with pids.  Its pid must be
        in the session the item leads (each item has its own, see
        :func:`pyinit.run.spawn.start_item`) or in the group it leads (the
        main without ``--setsid``/``--signal-group`` shares pyinit's session):
        another item cannot join either.  The pid is looked up after the
        datagram arrived; the sender's pidfd (SO_PASSPIDFD, Linux 6.5) proves
        it still named the sender then (see :func:`_still_the_sender`).
        """
        if sender is None or self.leader is None:
            return False
        pid, uid, pidfd = sender
        if pid <= 0 or uid != self.uid:
            return False
        try:
            in_item = self.leader in (os.getsid(pid), os.getpgid(pid))
        except OSError:
            return False  # gone already: its session cannot be told
        return in_item and _still_the_sender(pidfd)

    def close(self) -> None:
        """Close the socket (idempotent); later datagrams are refused."""
        if self._trio_sock is not None:
            self._trio_sock.close()
        self._sock.close()


def _ask_for_pidfds(sock: socket.socket) -> None:
    """Have the kernel pass each sender's pidfd (SO_PASSPIDFD) where it can; else nothing."""
    import contextlib
    import socket

    if os.uname().machine not in GENERIC_SOCKET_MACHINES:
        return
    with contextlib.suppress(OSError):  # before Linux 6.5: the pid alone is checked
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_PASSPIDFD", SO_PASSPIDFD), 1)


def _still_the_sender(pidfd: int | None) -> bool:
    """Whether the sender behind ``pidfd`` is still unreaped, so its pid named it all along.

    A pid is freed for reuse only once its process is reaped; a pidfd that
    can still be signalled (signal 0 sends nothing) means the pid looked up
    before was the sender's.  Without a pidfd (older kernels) the pid is
    taken as it is: only the item's own uid got this far.
    """
    if pidfd is None:
        return True
    import signal

    try:
        signal.pidfd_send_signal(pidfd, 0)
    except PermissionError:
        return True  # it exists; pyinit may just not signal it
    except OSError:
        return False
    return True


def _sender_and_close_fds(
    ancillary: list[tuple[int, int, bytes]],
) -> tuple[int, int, int | None] | None:
    """The sender's (pid, uid, pidfd or None); every fd passed (a BARRIER=1) is closed.

    The caller closes the pidfd.
    """
    import socket
    import struct

    sender = None
    pidfd = None
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_CREDENTIALS and len(payload) >= 12:
            pid, uid, _gid = struct.unpack("iII", payload[:12])
            sender = (pid, uid)
        elif kind == SCM_PIDFD and len(payload) >= 4:
            pidfd = struct.unpack("i", payload[:4])[0]
        elif kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            for fd in struct.unpack(f"{usable // 4}i", payload[:usable]):
                os.close(fd)  # closing it is the barrier's answer
    if sender is None:
        if pidfd is not None:
            os.close(pidfd)
        return None
    return (*sender, pidfd)
