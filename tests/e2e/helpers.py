"""Small checks shared by the e2e scenarios: process tables and service readiness.

The images have no ``ps``: the process table is read from /proc by the
image's own python3 through ``podman exec`` (``podman top`` would do for a
person, but its column output is awkward to parse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .podman import Container, wait_for


@dataclass
class Proc:
    """One process: owner, pid, parent, state letter (R, S, Z...), command line."""

    user: str
    pid: int
    ppid: int
    stat: str
    args: str


PS = r"""
import json, os, pwd
rows = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == os.getpid():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
        args = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").strip()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        continue
    fields = stat.rsplit(")", 1)[1].split()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    rows.append([user, int(pid), int(fields[1]), fields[0], args.decode(errors="replace")])
print(json.dumps(rows))
"""


def processes(ctr: Container) -> list[Proc]:
    """The container's process table, pids as the container sees them (this probe left out)."""
    out = ctr.exec("python3", "-c", PS).stdout
    return [Proc(*row) for row in json.loads(out)]


def find(procs: list[Proc], program: str) -> Proc:
    """The first process whose command is PROGRAM (first word of args, any folder)."""
    matches = [p for p in procs if p.args.split()[0].rsplit("/", 1)[-1] == program]
    assert matches, f"no process running {program!r} in {procs}"
    return matches[0]


def zombies(procs: list[Proc]) -> list[Proc]:
    """Processes in state Z (exited, not yet reaped)."""
    return [p for p in procs if p.stat.startswith("Z")]


def pid1_cmdline(ctr: Container) -> list[str]:
    """PID 1's argv, read from /proc/1/cmdline inside the container (no ps needed)."""
    raw = ctr.exec("cat", "/proc/1/cmdline").stdout
    return raw.rstrip("\0").split("\0")


def wait_redis(ctr: Container, timeout: float = 30) -> None:
    """Wait until redis answers PING through ``podman exec CTR redis-cli``."""

    def ready() -> bool:
        ctr.wait_running(timeout)
        return ctr.exec("redis-cli", "ping", check=False).stdout.strip() == "PONG"

    wait_for(ready, timeout, f"redis in {ctr.name}", interval=0.2, details=ctr.logs)


#: What the redis tests store before a stop and expect back after it.
REDIS_KEYS = {"greeting": "hello", "answer": "forty-two"}


def stop_redis_keeping_data(ctr: Container, data_dir: Path, redis_uid: int) -> None:
    """Set REDIS_KEYS, ``podman stop``: exit 0, redis saved, dump.rdb redis's and holding them."""
    for key, value in REDIS_KEYS.items():
        assert ctr.exec("redis-cli", "set", key, value).stdout.strip() == "OK"
    ctr.stop()
    assert ctr.exit_code() == 0, ctr.logs()
    assert "DB saved on disk" in ctr.stdout + ctr.stderr, ctr.logs()
    dump = data_dir / "dump.rdb"
    assert dump.stat().st_uid == redis_uid, "dump.rdb must belong to the image's redis user"
    content = dump.read_bytes()
    assert all(k.encode() in content and v.encode() in content for k, v in REDIS_KEYS.items())


def psql(ctr: Container, sql: str, check: bool = True) -> str:
    """Run SQL as postgres over the unix socket; return psql's unaligned output."""
    return ctr.exec(
        "psql", "-U", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql, check=check
    ).stdout.strip()


def wait_postgres(ctr: Container, timeout: float = 60) -> None:
    """Wait until postgres accepts connections (initdb on first start included)."""

    def ready() -> bool:
        ctr.wait_running(timeout)
        return ctr.exec("pg_isready", "-U", "postgres", check=False).returncode == 0

    wait_for(ready, timeout, f"postgres in {ctr.name}", interval=0.3, details=ctr.logs)
