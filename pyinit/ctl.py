"""``pyinitctl``: look at and steer a running pyinit through its control socket (docs/operate.md).

Run by ``docker exec`` and by HEALTHCHECK every few seconds, so it starts
lean: no argparse (a tiny exact parser), no trio, no psutil; ``json`` only
to draw the status table.  One request line, one answer (the wire protocol
is in docs/operate.md); the exit code is the answer's, or 2 for a usage
error and 3 when the socket cannot be reached.
"""

from __future__ import annotations

import _socket
import os
import sys

from pyinit import DEFAULT_CONTROL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Seconds to wait for an answer: status, health and signal answer at once ...
SHORT_SECONDS = 5.0
#: ... stop, start and restart wait for the stop (its grace, SIGKILL) and the new exec.
LONG_SECONDS = 120.0

#: The longest request line, its newline included (the server's bound).
MAX_REQUEST = 1024

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

HELP = """\
usage: pyinitctl [--control PATH] COMMAND

Look at and steer the processes of a running pyinit (PID 1 of the container).

commands:
  status [--json]      one row per process: main, each sidecar and task
  health               exit 0 healthy, 1 not, with one line saying why
  restart NAME         stop a sidecar (its stop-signal, grace, SIGKILL) and start it again
  stop NAME            stop a sidecar and keep it down until start
  start NAME           start a stopped or given-up sidecar
  signal NAME SIG      send SIG (TERM, SIGTERM, 15) to NAME's process group (main too)

options:
  --control PATH       the control socket (default /run/pyinit/control.sock;
                       env PYINIT_CONTROL)
  -h, --help           show this help

exit status: 0 done/healthy; 1 unhealthy or refused (permission denied,
unknown name, the container is stopping, ...); 2 usage error; 3 the control
socket cannot be reached.  See docs/operate.md."""

#: Each command and how many words follow it.
ARITY = {"status": 0, "health": 0, "restart": 1, "stop": 1, "start": 1, "signal": 2}


class Usage(Exception):
    """A command line pyinitctl does not understand."""


class Unreachable(Exception):
    """The control socket cannot be reached, or did not answer."""


def parse(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> tuple[str, str, bool]:
    """(socket path, request line, --json) from the command line; Usage on anything else."""
    path = environ.get("PYINIT_CONTROL") or DEFAULT_CONTROL
    words = list(argv)
    as_json = False
    while words and words[0].startswith("--control"):
        flag = words.pop(0)
        if flag.startswith("--control="):
            path = flag.partition("=")[2]
        elif flag == "--control" and words:
            path = words.pop(0)
        else:
            raise Usage(f"{flag}: expected --control PATH")
    if not words:
        raise Usage("no command given")
    command, args = words[0], words[1:]
    if command == "status" and args == ["--json"]:
        as_json, args = True, []
    if command not in ARITY:
        raise Usage(f"unknown command {command!r}")
    if len(args) != ARITY[command] or any(not a or " " in a or "\n" in a for a in args):
        raise Usage(f"{command}: expected {_synopsis(command)}")
    if not path:
        raise Usage("--control: empty path")
    request = " ".join([command, *args])
    if len(request.encode(errors="replace")) >= MAX_REQUEST:
        raise Usage(f"{command}: the request is longer than {MAX_REQUEST - 1} bytes")
    return path, request, as_json


def _synopsis(command: str) -> str:
    return {
        "status": "status [--json]",
        "health": "health",
        "signal": "signal NAME SIG",
    }.get(command, f"{command} NAME")


def ask(path: str, request: str, timeout: float) -> tuple[int, str, str]:
    """Send one request; (code, the line to print, the rest of the answer)."""
    if path == "none":
        raise Unreachable("the control socket is disabled (none)")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise Unreachable(_why(e)) from None
        try:
            _send_request(sock, request)
            answer = _read_all(sock)
        except TimeoutError:
            raise Unreachable(f"no answer within {timeout:g}s") from None
        except OSError as e:
            raise Unreachable(f"connection failed: {_why(e)}") from None
    finally:
        sock.close()
    head, _, body = answer.partition(b"\n")
    code_text, _, text = head.decode(errors="replace").partition(" ")
    if not code_text.isdigit():
        raise Unreachable("no valid answer (is that pyinit's control socket?)")
    return int(code_text), text, body.decode(errors="replace")


def _send_request(sock: _socket.socket, request: str) -> bool:
    """Send the request line; False if the server answered and closed first (busy)."""
    try:
        sock.sendall(request.encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        return False  # its answer is still there to read
    return True


def _read_all(sock: _socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _why(e: OSError) -> str:
    text = (e.strerror or str(e)).lower()
    if isinstance(e, FileNotFoundError):
        return f"{text} (is pyinit supervising, with this --control path?)"
    if isinstance(e, PermissionError):
        return f"{text} (the socket's directory is root's: run as root)"
    if isinstance(e, ConnectionRefusedError):
        return f"{text} (pyinit is gone: a stale socket)"
    return text


def status_table(body: str) -> str:
    """The human table of a status answer's JSON body."""
    import json

    processes = json.loads(body)
    header = (
        "NAME",
        "KIND",
        "STATE",
        "PID",
        "USER",
        "UPTIME",
        "RESTARTS",
        "LAST-EXIT",
        "READY",
        "ALIVE",
        "CPU",
        "RSS",
        "COMMAND",
    )
    rows = [header, *(_row(p) for p in processes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _row(p: dict[str, object]) -> tuple[str, ...]:
    last = p.get("last_exit")
    if isinstance(last, dict):
        last_text = str(last["signal"] if last.get("signal") else last.get("code"))
    else:
        last_text = "-"
    ready = p.get("ready")
    command = p.get("command")
    return (
        str(p.get("name")),
        str(p.get("kind")),
        str(p.get("state")),
        _or_dash(p.get("pid")),
        str(p.get("user")),
        _duration(p.get("uptime")),
        f"{p.get('restarts')}/{p.get('restarts_total')}",
        last_text,
        "-" if ready is None else "yes" if ready else "no",
        _or_dash(p.get("alive")),
        "-" if p.get("cpu_seconds") is None else f"{p['cpu_seconds']:.2f}s",
        _size(p.get("rss_bytes")),
        " ".join(str(word) for word in command) if isinstance(command, list) else "",
    )


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(value)


def run(argv: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> int:
    """pyinitctl's whole run; its exit code."""
    if any(word in ("-h", "--help") for word in argv[:3]):
        _write(1, HELP + "\n")
        return 0
    try:
        path, request, as_json = parse(argv, environ)
    except Usage as e:
        _write(2, f"pyinitctl: {e} (see pyinitctl --help)\n")
        return EXIT_USAGE
    command = request.partition(" ")[0]
    timeout = LONG_SECONDS if command in ("restart", "stop", "start") else SHORT_SECONDS
    try:
        code, text, body = ask(path, request, timeout)
    except Unreachable as e:
        _write(2, f"pyinitctl: cannot reach pyinit at {path}: {e}\n")
        return EXIT_UNREACHABLE
    if code == 0 and command == "status":
        _write(1, body if as_json else status_table(body))
    elif code == 0:
        _write(1, text + "\n")
    else:
        _write(2, f"pyinitctl: {text}\n")
    return code


def _write(fd: int, text: str) -> None:
    """Write all of ``text`` to ``fd``; a closed or dead output is not an error."""
    data = text.encode(errors="replace")
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


def main() -> None:
    """The ``pyinitctl`` console script."""
    raise SystemExit(run(sys.argv[1:], os.environ))


if __name__ == "__main__":
    main()
