"""examples/postgres with podman: initdb after the step-down, smart/fast shutdown, recovery."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ContainerFactory, Image
from .helpers import find, processes, psql, wait_postgres
from .podman import Container, wait_for

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)

PASSWORD = "s3cret-from-a-file"


def secrets_volume(tmp_path: Path) -> str:
    """A read-only /run/secrets holding the password, as docker/podman secrets would."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pgpass").write_text(PASSWORD + "\n")
    return f"{secrets}:/run/secrets:ro"


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
def test_postgres_term_is_smart_and_podman_stop_is_fast(
    container: ContainerFactory, data_dir: Path, tmp_path: Path, images: Callable[[str], Image]
) -> None:
    """First start runs initdb as postgres; kill -s TERM = smart; podman stop (INT) = fast."""
    assert images("postgres").stopsignal in ("SIGINT", "2", "INT")
    ctr = container(
        "postgres",
        env={"POSTGRES_PASSWORD_FILE": "/run/secrets/pgpass"},
        volumes=(secrets_volume(tmp_path),),
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

    ctr.start()  # same container, same volume: the rows are there
    wait_postgres(ctr)
    assert psql(ctr, "SELECT count(*) FROM t") == "3"
    ctr.stop()
    assert ctr.exit_code() == 0, ctr.logs()
    assert "received fast shutdown request" in ctr.stderr, ctr.logs()


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
    ctr.exec_detached("psql", "-U", "postgres", "-Xc", "SELECT pg_sleep(600)")
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
    again.stop()
    assert again.exit_code() == 0, again.logs()
