"""examples/postgres: initdb after the step-down, smart/fast shutdown, stop timeout, recovery."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import BuiltImage, ContainerFactory
from .helpers import find, processes, psql, wait_postgres
from .runc import Container, Mount, wait_for

pytestmark = pytest.mark.timeout(300)

PASSWORD = "s3cret-from-a-file"


def secrets_mount(tmp_path: Path) -> Mount:
    """A read-only /run/secrets holding the password, as docker secrets would."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pgpass").write_text(PASSWORD + "\n")
    return Mount(secrets, "/run/secrets", readonly=True)


def login_over_tcp(ctr: Container, password: str) -> int:
    """Exit status of a password login over TCP (scram-sha-256 in pg_hba.conf)."""
    return ctr.exec(
        "psql",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-XAtc",
        "SELECT 1",
        env={"PGPASSWORD": password},
        check=False,
    ).returncode


@pytest.mark.e2e
def test_postgres_term_is_smart_and_stopsignal_is_fast(
    container: ContainerFactory, data_dir: Path, tmp_path: Path, images: Callable[[str], BuiltImage]
) -> None:
    """First start runs initdb as postgres; TERM = smart shutdown; STOPSIGNAL (INT) = fast."""
    ctr = container(
        "postgres",
        env={"POSTGRES_PASSWORD_FILE": "/run/secrets/pgpass"},
        mounts=(secrets_mount(tmp_path),),
    )
    wait_postgres(ctr)
    procs = processes(ctr)
    assert find(procs, "postgres").user == "postgres", procs
    assert (data_dir / "PG_VERSION").read_text().strip() == "15"
    assert login_over_tcp(ctr, PASSWORD) == 0, "--file-env POSTGRES_PASSWORD not applied"
    assert login_over_tcp(ctr, "wrong") != 0
    psql(ctr, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 3)")

    ctr.kill("TERM")
    assert ctr.wait(60) == 0, ctr.logs()
    assert "received smart shutdown request" in ctr.stderr, ctr.logs()

    assert images("postgres").image.stopsignal == "SIGINT"
    again = container("postgres")
    wait_postgres(again)
    assert psql(again, "SELECT count(*) FROM t") == "3"
    again.kill("SIGINT")
    assert again.wait(60) == 0, again.logs()
    assert "received fast shutdown request" in again.stderr, again.logs()


def wait_for_client(ctr: Container) -> None:
    """Wait until the pg_sleep client is connected and running its query."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
    wait_for(lambda: psql(ctr, sql) == "1", 30, "the psql client to connect")


@pytest.mark.e2e
def test_postgres_stuck_client_hits_stop_timeout_then_recovers(
    container: ContainerFactory, data_dir: Path
) -> None:
    """A connected client holds up the smart shutdown: --stop-timeout 3 SIGKILLs (137).

    The next start recovers from the WAL and no committed row is lost.
    """
    ctr = container("postgres", pyinit_flags=["--stop-timeout", "3"])
    wait_postgres(ctr)
    psql(ctr, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)")
    ctr.exec_background("psql", "-U", "postgres", "-Xc", "SELECT pg_sleep(600)")
    wait_for_client(ctr)

    started = time.monotonic()
    ctr.kill("TERM")
    assert ctr.wait(30) == 137, ctr.logs()
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 15, f"stop took {elapsed:.1f}s with --stop-timeout 3"
    assert "received smart shutdown request" in ctr.stderr, ctr.logs()
    assert "database system is shut down" not in ctr.stderr, ctr.logs()

    again = container("postgres")
    wait_postgres(again)
    assert "automatic recovery in progress" in again.stderr, again.logs()
    assert psql(again, "SELECT count(*) FROM t") == "100"
    again.kill("INT")
    assert again.wait(60) == 0, again.logs()
