"""The control server: what ``pyinitctl`` talks to (docs/operate.md), for both kinds of run.

One implementation serves a plain target (:mod:`pyinit.run.plain`: no
trio) and the event loop (:mod:`pyinit.run.loop`):

* a daemon thread blocks in ``accept()`` on the socket
  :func:`pyinit.root.control.open_control` made: no wake-up while idle;
* each connection is served in a short thread of its own, at most
  :data:`MAX_CLIENTS` at once (one more is told ``1 busy`` and closed, as
  is one arriving when the kernel refuses a thread: a full pids cgroup);
* SO_PEERCRED on every connection: root (or pyinit's own uid) may do
  everything, anyone else gets ``1 permission denied`` and nothing happens;
* one request line of at most :data:`MAX_REQUEST` bytes, within
  :data:`REQUEST_SECONDS`; the answer is dropped if the client does not
  read it within :data:`ANSWER_SECONDS`: a silent, slow or hostile client
  holds one thread for a bounded time and never blocks PID 1 or another
  client.

The answer is ``CODE TEXT\\n`` (CODE: pyinitctl's exit code), and for
``status`` a JSON array after it, one object per process per line.  What
is answered comes from a :class:`Backend`: :class:`PlainBackend` (the main
only) or :class:`pyinit.run.loopcontrol.LoopBackend` (the main, sidecars and
tasks, read and acted on in the loop's own thread through its trio token),
imported with the loop only.

``status``'s CPU and RSS figures come from psutil in a short-lived child
(:func:`with_figures`), which writes the JSON body too: PID 1 never imports
psutil, and ``json`` only for a status whose child failed.
"""

from __future__ import annotations

import _socket
import _thread
import os
import signal
import sys
import time

from pyinit.errors import ControlRefused, one_line, quoted
from pyinit.run import lifecycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pyinit.plan import Plan
    from pyinit.plan.userspec import Identity
    from pyinit.root.control import Listener
    from pyinit.run.posthooks import HookRun
    from pyinit.run.reaper import Reaper, Watched

    Process = dict[str, object]

#: Connections served at once; one more is told "busy".
MAX_CLIENTS = 8
#: The longest request line, its final newline included.
MAX_REQUEST = 1024
#: How long a client has to send its request line.
REQUEST_SECONDS = 2.0
#: How long a client has to take its answer (a status of many processes is a few KiB).
ANSWER_SECONDS = 5.0
#: How long ``status`` waits for its CPU and RSS figures before it answers without them.
FIGURES_SECONDS = 2.0

#: At most this many reads (64 KiB each) of what a refused client sent are discarded.
DRAIN_READS = 4

USAGE = "expected status, health, restart NAME, stop NAME, start NAME or signal NAME SIG"
MAIN_BY_HAND = "the main cannot be stopped or restarted by hand: stop the container"
STOPPING = "the container is stopping: only status is answered"
#: The requests that act by hand on a sidecar (ItemRun.stop_by_hand, ...).
BY_HAND = ("stop", "start", "restart")


class Backend:
    """What the server asks; each answer is the one line to print, or ControlRefused."""

    def stopping(self) -> bool:
        """True once the container's stop began."""
        raise NotImplementedError

    def processes(self) -> list[Process]:
        """One status object per process, without the psutil fields (pid included)."""
        raise NotImplementedError

    def health(self) -> tuple[int, str]:
        """0 and ``healthy``, or 1 and what is not."""
        raise NotImplementedError

    def signal(self, name: str, signum: int) -> str:
        """Send ``signum`` to NAME's process group."""
        raise NotImplementedError

    def by_hand(self, action: str, name: str) -> str:
        """``stop``, ``start`` or ``restart`` NAME by hand."""
        raise NotImplementedError


class Server:
    """The accept thread and the client threads over one :class:`Listener`."""

    def __init__(self, listener: Listener, backend: Backend, reaper: Reaper) -> None:
        self.listener = listener
        self.backend = backend
        #: Collects the status figures' child, as every child.
        self.reaper = reaper
        self._lock = _thread.allocate_lock()
        self._clients = 0
        self._closed = False

    def start(self) -> bool:
        """Start accepting; False (after one notice) if no thread can be had."""
        try:
            _thread.start_new_thread(self._accept_loop, ())
        except RuntimeError:
            from pyinit import log

            log.notice(f"control socket {self.listener.path}: no thread for it; running without it")
            self.close()
            return False
        return True

    def close(self) -> None:
        """Stop accepting and remove the socket (at pyinit's exit)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.listener.close()

    def _accept_loop(self) -> None:
        sock = self.listener.sock
        while True:
            try:
                # _socket's accept (accept4 with SOCK_CLOEXEC): socket.py costs
                # PID 1 its imports for one wrapper.
                fd, _ = sock._accept()  # type: ignore[attr-defined]
            except OSError:
                if self._closed:
                    return
                time.sleep(0.1)  # out of descriptors or memory: try again, without spinning
                continue
            client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            if not self._take_slot():
                _say_and_close(client, b"1 busy: too many requests at once, try again\n")
                continue
            try:
                _thread.start_new_thread(self._serve, (client,))
            except RuntimeError:  # the kernel refuses a thread (a full pids cgroup)
                self._free_slot()
                _say_and_close(client, b"1 busy: pyinit cannot start a thread now, try again\n")

    def _take_slot(self) -> bool:
        with self._lock:
            if self._clients >= MAX_CLIENTS:
                return False
            self._clients += 1
            return True

    def _free_slot(self) -> None:
        with self._lock:
            self._clients -= 1

    def _serve(self, client: _socket.socket) -> None:
        try:
            client.settimeout(REQUEST_SECONDS)
            allowed = _allowed(client)  # the peer as it connected, before anything is read
            # The line is read even for a refused peer: closing a socket with
            # unread data resets it, and the client would lose its answer.
            try:
                line = _read_request(client)
            except _BadRequest:
                if allowed:
                    raise
                line = ""
            answer = self.answer(line) if allowed else b"1 permission denied\n"
            client.settimeout(ANSWER_SECONDS)
            client.sendall(answer)
        except _BadRequest as e:
            _say_and_close(client, f"1 bad request: {e}\n".encode())
        except OSError:
            pass  # gone, silent or not reading: dropped
        except BaseException as e:  # pyinit's own bug: one answer, never a crash of PID 1
            _say_and_close(client, f"1 internal error: {type(e).__name__}: {e}\n".encode())
        finally:
            client.close()
            self._free_slot()

    def answer(self, line: str) -> bytes:
        """The whole answer to one request line (without its newline)."""
        words = line.split(" ")
        command, args = words[0], words[1:]
        try:
            if command == "status" and not args:
                processes = self.backend.processes()
                body = with_figures(self.reaper, processes) or status_body(processes)
                return status_answer(processes, body)
            if command == "health" and not args:
                code, text = self.backend.health()
                return f"{code} {text}\n".encode()
            if command == "signal" and len(args) == 2:
                signum = _parse_signal(args[1])
                self._refuse_while_stopping()
                return _done(self.backend.signal(args[0], signum))
            if command in BY_HAND and len(args) == 1:
                self._refuse_while_stopping()
                if args[0] == "main":
                    raise ControlRefused(MAIN_BY_HAND)
                return _done(self.backend.by_hand(command, args[0]))
        except ControlRefused as e:
            return f"1 {one_line(e.message)}\n".encode()
        raise _BadRequest(f"{quoted(line, 60)}: {USAGE}")

    def _refuse_while_stopping(self) -> None:
        if self.backend.stopping():
            raise ControlRefused(STOPPING)


class _BadRequest(Exception):
    pass


def _done(text: str) -> bytes:
    return f"0 {one_line(text)}\n".encode()


def _say_and_close(client: _socket.socket, line: bytes) -> None:
    """A short answer that never waits: the socket's buffer takes it, or it is dropped."""
    try:
        client.settimeout(0.0)
        client.send(line)
        # What the client sent already: left unread, closing would reset the
        # connection and the client would lose the answer.
        for _ in range(DRAIN_READS):
            if not client.recv(65536):
                break
    except OSError:
        pass
    client.close()


def _allowed(client: _socket.socket) -> bool:
    """Whether the peer (SO_PEERCRED, as it connected) is root or pyinit's own uid."""
    creds = client.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    return uid in (0, os.geteuid())


def _read_request(client: _socket.socket) -> str:
    """The one request line: at most MAX_REQUEST bytes, UTF-8, its newline taken off."""
    data = b""
    while b"\n" not in data:
        chunk = client.recv(MAX_REQUEST + 1 - len(data))
        if not chunk:
            raise _BadRequest("no request line (the connection ended before a newline)")
        data += chunk
        if len(data) > MAX_REQUEST and b"\n" not in data[:MAX_REQUEST]:
            raise _BadRequest(f"longer than {MAX_REQUEST} bytes")
    line = data.partition(b"\n")[0]
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise _BadRequest("not UTF-8") from None
    return text.removesuffix("\r")


def _parse_signal(text: str) -> int:
    from pyinit.errors import UsageError
    from pyinit.plan.signals import parse_signal

    try:
        return parse_signal(text, "signal")
    except UsageError as e:
        raise ControlRefused(e.message) from None


# --- status ----------------------------------------------------------------------------


def status_answer(processes: list[Process], body: str) -> bytes:
    """``0 N processes`` and the JSON array ``body``."""
    count = len(processes)
    return f"0 {count} process{'es' if count != 1 else ''}\n{body}".encode()


def status_body(processes: list[Process]) -> str:
    """The JSON array, one object per line, the documented keys in order (absent: null)."""
    import json  # in the figures child; in PID 1 only when that child failed

    lines = [
        json.dumps({key: p.get(key) for key in STATUS_KEYS}, separators=(", ", ": "))
        for p in processes
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def with_figures(reaper: Reaper, processes: list[Process]) -> str | None:
    """:func:`status_body` with ``uptime``, ``cpu_seconds`` and ``rss_bytes``, from psutil.

    psutil runs in a short-lived helper child (:func:`_write_figures`): PID 1 never
    imports it, and every page the child touches is its own.  The child is
    watched as one of pyinit's helpers, so the one reaper collects it and
    no stop takes it for a leftover.  None, after at most one log line, if
    the fork was refused or the child did not answer within
    :data:`FIGURES_SECONDS` (then it is killed).
    """
    from pyinit.run.spawn import fork_failure, fork_helper

    pyinit = os.getpid()
    try:
        child, ours = fork_helper(reaper, lambda fd: _write_figures(processes, fd, pyinit))
    except OSError as e:
        from pyinit import log

        log.notice(f"status without CPU and RSS: {fork_failure(e)}")
        return None
    try:
        body = _read_until(ours, time.monotonic() + FIGURES_SECONDS)
    finally:
        ours.close()
    if body is not None and body.endswith(b"]\n"):
        return body.decode()
    reaper.kill(child, signal.SIGKILL)  # hung (or failed): the reaper collects it
    from pyinit import log

    why = f"no answer within {FIGURES_SECONDS:g}s" if body is None else "psutil failed"
    log.notice(f"status without CPU and RSS: {why}")
    return None


def _read_until(sock: _socket.socket, deadline: float) -> bytes | None:
    """Everything ``sock`` gives until its end; None if that takes past ``deadline``."""
    chunks: list[bytes] = []
    try:
        while True:
            sock.settimeout(max(0.0, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:  # the timeout (TimeoutError) included
        return None


def _write_figures(processes: list[Process], fd: int, pyinit: int) -> None:
    """In the helper child (:func:`pyinit.run.spawn.fork_helper`): the body, psutil's figures in."""
    _add_usage(processes, {pyinit, os.getpid()})
    data = status_body(processes).encode()
    while data:
        data = data[os.write(fd, data) :]


def _add_usage(processes: list[Process], skip: set[int]) -> None:
    """``uptime``, ``cpu_seconds`` and ``rss_bytes`` (psutil), summed over each process group.

    The processes in ``skip`` (pyinit and this child) are never counted.
    """
    import psutil

    groups: dict[int, list[int]] = {}
    wanted = {p["pid"] for p in processes if isinstance(p["pid"], int)}
    for member in psutil.pids():
        try:
            pgid = os.getpgid(member)
        except OSError:
            continue
        if pgid in wanted and member not in skip:
            groups.setdefault(pgid, []).append(member)
    now = time.time()
    for process in processes:
        pid = process["pid"]
        if not isinstance(pid, int):
            continue
        cpu, rss = 0.0, 0
        for member in groups.get(pid, [pid]):
            try:
                proc = psutil.Process(member)
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
                    if member == pid:
                        process["uptime"] = round(max(0.0, now - proc.create_time()), 2)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        process["cpu_seconds"] = round(cpu, 2)
        process["rss_bytes"] = rss


#: The keys of a status object, in order (docs/operate.md).
STATUS_KEYS = (
    "name",
    "kind",
    "state",
    "pid",
    "user",
    "uptime",
    "restarts",
    "restarts_total",
    "last_exit",
    "ready",
    "alive",
    "cpu_seconds",
    "rss_bytes",
    "command",
)


def process_status(
    name: str,
    kind: str,
    life: lifecycle.Life,
    user: str,
    command: tuple[str, ...],
    restarts: tuple[int, int] = (0, 0),
    alive: str | None = None,
) -> Process:
    """A status object from the supervisor's own record of one process (no psutil figures)."""
    running = life.pid is not None and kind not in ("task", "hook")
    return {
        "name": name,
        "kind": kind,
        "state": life.state,
        "pid": life.pid,
        "user": user,
        "restarts": restarts[0],
        "restarts_total": restarts[1],
        "last_exit": _last_exit(life.last_status),
        "ready": (life.state == lifecycle.RUNNING) if running else None,
        "alive": alive,
        "command": list(command),
    }


def hook_statuses(hooks: Sequence[HookRun]) -> list[Process]:
    """The status objects of the post hooks run so far (kind ``hook``, as root)."""
    # A list copy first: the plain driver appends from another thread.
    return [
        process_status(run.name, "hook", run.life.life, user_name(None), run.hook.argv)
        for run in list(hooks)
    ]


def _last_exit(status: int | None) -> dict[str, object] | None:
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return {"code": None, "signal": signal.Signals(os.WTERMSIG(status)).name}
    return {"code": os.waitstatus_to_exitcode(status), "signal": None}


def user_name(identity: Identity | None) -> str:
    """Who a process runs as: its user's name, else its uid; pyinit's own without a user."""
    if identity is not None:
        return identity.name if identity.name is not None else str(identity.uid)
    uid = os.geteuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def signal_group(pid: int | None, name: str, signum: int) -> str:
    """Send ``signum`` to the process group a running process leads; the line to print."""
    from pyinit.plan.signals import signal_name

    if pid is None:
        raise ControlRefused(f"{name} is not running")
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        raise ControlRefused(f"{name} is not running") from None
    return f"sent {signal_name(signum)} to {name} (process group {pid})"


def not_healthy(state: str) -> str:
    """What a state that is not healthy says in ``health``'s line."""
    if state == lifecycle.RUNNING:
        return "failed its liveness checks"
    if state == lifecycle.STARTING:
        return "is starting (not ready)"
    if state == lifecycle.BACKOFF:
        return "is in backoff (restarting)"
    return f"is {state}"


# --- the plain target -------------------------------------------------------------------


class PlainBackend(Backend):
    """A plain target's: the main only (no loop, no trio).

    ``life`` is the main's state (readable from any thread: its record is
    replaced whole), ``main`` its watched child, ``stopping`` says whether
    the container's stop began.
    """

    def __init__(
        self,
        plan: Plan,
        life: lifecycle.Tracked,
        main: Watched,
        stopping: Callable[[], bool],
        hooks: Sequence[HookRun] = (),
    ) -> None:
        self.plan = plan
        self.life = life
        self.main = main
        self._stopping = stopping
        self._hooks = hooks

    def stopping(self) -> bool:
        """True once the stop deadline runs."""
        return self._stopping()

    def processes(self) -> list[Process]:
        """The main's status object, then the post hooks run so far (in the stop)."""
        life = self.life.life
        main = process_status(
            "main", "main", life, user_name(self.plan.identity), self.plan.command
        )
        return [main, *hook_statuses(self._hooks)]

    def health(self) -> tuple[int, str]:
        """Healthy while the main runs and no stop began (a plain target has no probes)."""
        if self.stopping():
            return 1, "unhealthy: the container is stopping"
        state = self.life.state
        if state != lifecycle.RUNNING:
            return 1, f"unhealthy: main {not_healthy(state)}"
        return 0, "healthy"

    def signal(self, name: str, signum: int) -> str:
        """Only the main: its process group (it leads one)."""
        if name != "main":
            raise ControlRefused(f"no process named {quoted(name)} (known: main)")
        pid = None if self.main.exited else self.main.pid
        return signal_group(pid, "main", signum)

    def by_hand(self, action: str, name: str) -> str:
        """Nothing but the main runs here, and it is not stopped or restarted by hand."""
        raise ControlRefused(f"no process named {quoted(name)} (known: main)")


def serve(listener: Listener, backend: Backend, reaper: Reaper) -> Server | None:
    """Serve ``backend`` on ``listener`` from now on; None if no thread could be had."""
    server = Server(listener, backend, reaper)
    return server if server.start() else None
