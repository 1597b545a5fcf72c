"""examples/nginx with podman: nginx entirely as www-data, port 80 through NET_BIND_SERVICE."""

from __future__ import annotations

import pytest

from .conftest import ContainerFactory
from .helpers import processes
from .podman import Container, wait_for

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)

FETCH = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:80/').status)"


def http_status(ctr: Container) -> str:
    """The status of GET / on port 80, fetched from inside the container."""
    return ctr.exec("python3", "-c", FETCH, check=False).stdout.strip()


@pytest.mark.e2e
def test_nginx_serves_port_80_as_www_data(container: ContainerFactory) -> None:
    """Master and workers run as www-data, port 80 answers, podman stop (SIGQUIT) exits 0."""
    ctr = container("nginx", data=None)
    wait_for(
        lambda: http_status(ctr) == "200",
        30,
        "nginx to answer on port 80",
        interval=0.3,
        details=ctr.logs,
    )
    procs = processes(ctr)
    nginx = [p for p in procs if p.args.startswith("nginx")]
    assert nginx and all(p.user == "www-data" for p in nginx), procs
    capeff = ctr.podman("top", ctr.name, "pid", "capeff").stdout
    master = next(p for p in nginx if p.ppid == 1)
    row = next(line for line in capeff.splitlines() if line.split()[0] == str(master.pid))
    assert row.split(None, 1)[1].strip() == "NET_BIND_SERVICE", capeff
    ctr.stop()
    assert ctr.exit_code() == 0, ctr.logs()
