"""Small checks shared by the e2e scenarios: process tables and service readiness."""

from __future__ import annotations

from dataclasses import dataclass

from .runc import Container, wait_for


@dataclass
class Proc:
    """One row of ``ps -eo user,pid,ppid,stat,args`` inside a container."""

    user: str
    pid: int
    ppid: int
    stat: str
    args: str


def processes(ctr: Container) -> list[Proc]:
    """The container's process table, as ``runc exec ID ps`` shows it (ps itself left out)."""
    out = ctr.exec("ps", "-eo", "user:32,pid,ppid,stat,args").stdout
    rows = []
    for line in out.splitlines()[1:]:
        user, pid, ppid, stat, args = line.split(None, 4)
        rows.append(Proc(user, int(pid), int(ppid), stat, args))
    return [p for p in rows if not p.args.startswith("ps -eo")]


def find(procs: list[Proc], program: str) -> Proc:
    """The first process whose command is PROGRAM (first word of args, any folder)."""
    matches = [p for p in procs if p.args.split()[0].rsplit("/", 1)[-1] == program]
    assert matches, f"no process running {program!r} in {procs}"
    return matches[0]


def zombies(procs: list[Proc]) -> list[Proc]:
    """Processes in state Z (exited, not yet reaped)."""
    return [p for p in procs if p.stat.startswith("Z")]


def wait_redis(ctr: Container, timeout: float = 30) -> None:
    """Wait until redis answers PING through ``runc exec ID redis-cli``."""

    def ready() -> bool:
        ctr.wait_running(timeout)
        return ctr.exec("redis-cli", "ping", check=False).stdout.strip() == "PONG"

    wait_for(ready, timeout, f"redis in {ctr.id}", interval=0.2, details=ctr.logs)


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

    wait_for(ready, timeout, f"postgres in {ctr.id}", interval=0.3, details=ctr.logs)
