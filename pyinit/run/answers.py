"""One request to the control server (:mod:`pyinit.run.control`): read it, check the peer, answer.

Imported by the first connection's thread, not before: a PID 1 nobody
asks holds only the accept loop.

* SO_PEERCRED on every connection: root (or pyinit's own uid) may do
  everything, anyone else gets ``1 permission denied`` and nothing happens;
* one request line of at most :data:`MAX_REQUEST` bytes, within
  :data:`REQUEST_SECONDS`; the answer is dropped if the client does not
  read it within :data:`ANSWER_SECONDS`: a silent, slow or hostile client
  holds one thread for a bounded time and never blocks PID 1 or another
  client.

The answer is ``CODE TEXT\\n`` (CODE: pyinitctl's exit code), and for
``status`` a JSON array after it, one object per process per line
(``json`` and ``psutil`` imported on the first ``status``).
"""

from __future__ import annotations

import _socket
import os
import signal
import sys
import time

from pyinit.errors import ControlRefused, one_line, quoted
from pyinit.run import lifecycle
from pyinit.run.control import say_and_close

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan.userspec import Identity
    from pyinit.run.control import Backend, Process

#: The longest request line, its final newline included.
MAX_REQUEST = 1024
#: How long a client has to send its request line.
REQUEST_SECONDS = 2.0
#: How long a client has to take its answer (a status of many processes is a few KiB).
ANSWER_SECONDS = 5.0

USAGE = "expected status, health, restart NAME, stop NAME, start NAME or signal NAME SIG"
MAIN_BY_HAND = "the main cannot be stopped or restarted by hand: stop the container"
STOPPING = "the container is stopping: only status is answered"
#: The requests that act by hand on a sidecar (ItemRun.stop_by_hand, ...).
BY_HAND = ("stop", "start", "restart")


def serve_client(client: _socket.socket, backend: Backend) -> None:
    """Read one request from ``client``, answer it from ``backend`` (the caller closes it)."""
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
        reply = answer(backend, line) if allowed else b"1 permission denied\n"
        client.settimeout(ANSWER_SECONDS)
        client.sendall(reply)
    except _BadRequest as e:
        say_and_close(client, f"1 bad request: {e}\n".encode())
    except OSError:
        pass  # gone, silent or not reading: dropped
    except BaseException as e:  # pyinit's own bug: one answer, never a crash of PID 1
        say_and_close(client, f"1 internal error: {type(e).__name__}: {e}\n".encode())


def answer(backend: Backend, line: str) -> bytes:
    """The whole answer to one request line (without its newline)."""
    words = line.split(" ")
    command, args = words[0], words[1:]
    try:
        if command == "status" and not args:
            return _status_answer(backend.processes())
        if command == "health" and not args:
            code, text = backend.health()
            return f"{code} {text}\n".encode()
        if command == "signal" and len(args) == 2:
            signum = _parse_signal(args[1])
            _refuse_while_stopping(backend)
            return _done(backend.signal(args[0], signum))
        if command in BY_HAND and len(args) == 1:
            _refuse_while_stopping(backend)
            if args[0] == "main":
                raise ControlRefused(MAIN_BY_HAND)
            return _done(backend.by_hand(command, args[0]))
    except ControlRefused as e:
        return f"1 {one_line(e.message)}\n".encode()
    raise _BadRequest(f"{quoted(line, 60)}: {USAGE}")


def _refuse_while_stopping(backend: Backend) -> None:
    if backend.stopping():
        raise ControlRefused(STOPPING)


class _BadRequest(Exception):
    pass


def _done(text: str) -> bytes:
    return f"0 {one_line(text)}\n".encode()


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


def _status_answer(processes: list[Process]) -> bytes:
    """``0 N processes`` and the JSON array, one object per line."""
    import json

    _add_usage(processes)
    lines = [json.dumps(p, separators=(", ", ": ")) for p in processes]
    body = "[\n" + ",\n".join(lines) + "\n]\n"
    count = len(processes)
    return f"0 {count} process{'es' if count != 1 else ''}\n{body}".encode()


def _add_usage(processes: list[Process]) -> None:
    """``uptime``, ``cpu_seconds`` and ``rss_bytes`` (psutil), summed over each process group."""
    import psutil

    groups: dict[int, list[int]] = {}
    wanted = {p["pid"] for p in processes if isinstance(p["pid"], int)}
    for member in psutil.pids():
        try:
            pgid = os.getpgid(member)
        except OSError:
            continue
        if pgid in wanted and member != os.getpid():
            groups.setdefault(pgid, []).append(member)
    now = time.time()
    for process in processes:
        pid = process["pid"]
        process["uptime"] = process["cpu_seconds"] = process["rss_bytes"] = None
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
    for process in processes:  # the documented key order (docs/operate.md)
        ordered = {key: process.get(key) for key in STATUS_KEYS}
        process.clear()
        process.update(ordered)


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
    """A status object from the supervisor's own record of one process (no psutil yet)."""
    running = life.pid is not None and kind != "task"
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
