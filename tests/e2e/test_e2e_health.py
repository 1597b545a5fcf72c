"""The examples' ``HEALTHCHECK CMD ["pyinitctl", "health"]`` under podman, and pyinitctl status.

``podman healthcheck run CTR`` runs the image's HEALTHCHECK once (podman's periodic timer
needs systemd; the explicit run does not): exit 0 when healthy, 1 and ``unhealthy``
when not.  The sidecar is broken from outside, as a failure would: its script is moved
away and its process killed, so every restart fails at once (a second backoff is
unhealthy, the first is not); then the script is put back and the next restart makes the
container healthy again, the restart budget not spent.  Every wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from .conftest import ContainerFactory, Image
from .helpers import find, processes, wait_redis
from .podman import Container, wait_for
from .test_e2e_services import by_script

pytestmark = pytest.mark.timeout(600)  # the first test of a session also builds the image

EXPORTER = "/usr/local/bin/exporter.py"


def require_pyinitctl(ctr: Container, command: str = "pyinitctl") -> None:
    """Fail, saying so, when the image has no pyinitctl (rather than skip silently)."""
    found = ctr.exec("sh", "-c", f"command -v {command}", check=False)
    assert found.returncode == 0, f"pyinitctl missing: the image has no {command}"


def healthcheck(ctr: Container) -> tuple[int, str]:
    """``podman healthcheck run``: its exit code and what it printed."""
    proc = ctr.podman("healthcheck", "run", ctr.name, check=False, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def wait_health(ctr: Container, healthy: bool, timeout: float) -> None:
    """Run the health check until it answers HEALTHY (exit 0) or unhealthy (exit 1)."""
    seen: list[tuple[int, str]] = []

    def answered() -> bool:
        seen.append(healthcheck(ctr))
        code, out = seen[-1]
        return code == 0 if healthy else (code == 1 and out == "unhealthy")

    wait_for(
        answered,
        timeout,
        "healthy" if healthy else "unhealthy",
        interval=0.3,
        details=lambda: f"answers: {seen[-3:]}\n{ctr.logs()}",
    )


def healthcheck_of(image: Image) -> list[str]:
    """The image's HEALTHCHECK test, as ``podman image inspect`` shows it."""
    check = image.healthcheck
    assert isinstance(check, dict), f"{image.tag} has no HEALTHCHECK"
    test = check.get("Test")
    assert isinstance(test, list), check
    return [str(word) for word in test]


def status(ctr: Container, command: str = "pyinitctl") -> dict[str, dict[str, object]]:
    """``pyinitctl status --json`` by process name."""
    rows = json.loads(ctr.exec(command, "status", "--json").stdout)
    return {row["name"]: row for row in rows}


def move(ctr: Container, source: str, target: str) -> None:
    """Rename a file in the container (as root, through its python3)."""
    ctr.exec("python3", "-c", f"import os; os.rename({source!r}, {target!r})")


@pytest.mark.e2e
def test_healthcheck_follows_the_exporter_sidecar(
    container: ContainerFactory, images: Callable[[str], Image]
) -> None:
    """healthy; status shows both; unhealthy while the exporter cannot start; healthy again."""
    assert healthcheck_of(images("redis-exporter")) == ["CMD", "pyinitctl", "health"]
    ctr = container("redis-exporter")
    wait_redis(ctr)
    require_pyinitctl(ctr)
    wait_health(ctr, healthy=True, timeout=30)

    procs = processes(ctr)
    exporter, server = by_script(procs, EXPORTER), find(procs, "redis-server")
    rows = status(ctr)
    assert set(rows) == {"main", "exporter"}, rows
    assert (rows["main"]["pid"], rows["exporter"]["pid"]) == (server.pid, exporter.pid), rows
    assert (rows["main"]["user"], rows["exporter"]["user"]) == ("redis", "nobody"), rows
    assert (rows["main"]["kind"], rows["exporter"]["kind"]) == ("main", "sidecar"), rows
    table = ctr.exec("pyinitctl", "status").stdout
    assert "exporter" in table and str(exporter.pid) in table, table

    move(ctr, EXPORTER, EXPORTER + ".off")
    ctr.exec("python3", "-c", f"import os; os.kill({exporter.pid}, 9)")
    wait_health(ctr, healthy=False, timeout=20)
    said = ctr.exec("pyinitctl", "health", check=False)
    assert said.returncode == 1, said
    assert "exporter" in said.stderr, said

    move(ctr, EXPORTER + ".off", EXPORTER)
    wait_health(ctr, healthy=True, timeout=40)
    again = status(ctr)["exporter"]
    assert again["pid"] != exporter.pid and again["state"] == "running", again
    assert ctr.running(), ctr.logs()
    ctr.stop(10)
    assert ctr.exit_code() == 0, ctr.logs()


@pytest.mark.e2e
def test_healthcheck_in_the_image_without_python(
    container: ContainerFactory, images: Callable[[str], Image]
) -> None:
    """The standalone folder's pyinitctl answers the HEALTHCHECK and status, no python3 needed."""
    ctl = "/opt/pyinit/pyinitctl"
    assert healthcheck_of(images("redis-standalone")) == ["CMD", ctl, "health"]
    ctr = container("redis-standalone")
    wait_redis(ctr)
    require_pyinitctl(ctr, ctl)
    wait_health(ctr, healthy=True, timeout=30)
    rows = status(ctr, ctl)
    assert list(rows) == ["main"] and rows["main"]["user"] == "redis", rows
    ctr.stop(10)
    assert ctr.exit_code() == 0, ctr.logs()
