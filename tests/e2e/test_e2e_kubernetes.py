"""examples/kubernetes with ``podman kube play`` and ``podman kube down``: the pods as written.

The manifests are played as they are (only with ``--network none``, as every
container of this tier); their images are the webapp and redis-exporter example
images, tagged with the names the manifests use.  Asserted: the pod serves, args
replace the config's command, PID 1 is pyinit, who runs as whom, the non-root
notices (redis-exporter runs with ``runAsUser``), and that the stop is graceful and
ends within the pod's ``terminationGracePeriodSeconds``, the data kept in its
volume.  The stop is ``podman pod stop`` then ``podman kube down``: see
:meth:`Pod.down`.  The pods' exec ``livenessProbe`` (``pyinitctl health``) becomes the
container's health check in podman: ``podman healthcheck run`` answers healthy, as the
pod's user (root, or redis with ``PYINIT_CONTROL`` under /tmp).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import rootfs
from .conftest import Image
from .helpers import pid1_cmdline, processes, wait_redis
from .podman import Container, Podman, wait_for
from .test_e2e_health import require_pyinitctl, wait_health
from .test_e2e_services import http

pytestmark = pytest.mark.timeout(600)

MANIFESTS = rootfs.REPO_ROOT / "examples" / "kubernetes"


def manifest_field(name: str, key: str) -> str:
    """The first ``key: value`` of a manifest, value as written."""
    found = re.search(rf"^\s*{key}: (.+)$", (MANIFESTS / name).read_text(), re.M)
    assert found, f"{name} has no {key}"
    return found.group(1).strip()


class Pod:
    """A manifest played with ``podman kube play``; ``down()`` measures ``podman kube down``."""

    def __init__(self, podman: Podman, manifest: str, container: str) -> None:
        self.podman = podman
        self.path = MANIFESTS / manifest
        self.ctr = Container(podman, container)
        self.name = manifest_field(manifest, "name")
        self.volume = manifest_field(manifest, "claimName")
        self.grace = int(manifest_field(manifest, "terminationGracePeriodSeconds"))

    def play(self) -> None:
        """A fresh volume, then ``podman kube play --network none MANIFEST``."""
        self.podman("volume", "rm", "--force", self.volume, check=False)
        self.podman("kube", "play", "--network", "none", str(self.path), timeout=120)

    def data(self) -> Path:
        """The volume's folder on this machine."""
        fmt = "{{.Mountpoint}}"
        return Path(self.podman("volume", "inspect", "--format", fmt, self.volume).stdout.strip())

    def down(self) -> float:
        """``podman pod stop`` then ``podman kube down``; the seconds the stop took.

        Debian 12's podman (4.3) has ``kube down`` SIGKILL the containers at once,
        without their stop signal (podman issue 22397, fixed in podman 5.1); its own
        workaround, ``pod stop`` first, is what a kubelet does: the stop signal, then
        SIGKILL after the grace period.
        """
        started = time.monotonic()
        self.podman("pod", "stop", self.name, timeout=self.grace + 60)
        took = time.monotonic() - started
        self.podman("kube", "down", str(self.path), timeout=120)
        return took

    def remove(self) -> None:
        """Teardown: the pod (if still there) and its volume."""
        self.podman("kube", "down", str(self.path), check=False, timeout=120)
        self.podman("volume", "rm", "--force", self.volume, check=False)


@pytest.fixture
def pods(podman: Podman, images: Callable[[str], Image]) -> Iterator[Callable[[str], Pod]]:
    """``pods("webapp")`` plays examples/kubernetes/webapp.yaml, its image built and tagged."""
    made: list[Pod] = []

    def play(name: str) -> Pod:
        manifest = f"{name}.yaml"
        # podman names a pod's container POD-CONTAINER (metadata.name, the first container).
        container = f"{manifest_field(manifest, 'name')}-{manifest_field(manifest, '- name')}"
        podman("tag", images(name).tag, manifest_field(manifest, "image"))
        pod = Pod(podman, manifest, container)
        made.append(pod)
        pod.play()
        return pod

    yield play
    for pod in made:
        pod.remove()


@pytest.mark.e2e
def test_webapp_pod_serves_and_stops_within_its_grace_period(pods: Callable[[str], Pod]) -> None:
    """Root setup then step-down; args give gunicorn 2 workers; kube down stops in order."""
    pod = pods("webapp")
    ctr = pod.ctr
    wait_for(
        lambda: http(ctr, "http://127.0.0.1:8000/") == "{}",
        60,
        "gunicorn to answer on 8000",
        interval=0.3,
        details=ctr.logs,
    )
    assert http(ctr, "http://127.0.0.1:8000/jobs", "POST"), ctr.logs()
    wait_for(lambda: any((pod.data() / "done").glob("*")), 30, "the worker to do the job")
    assert "pyinit" in " ".join(pid1_cmdline(ctr)[:2]), pid1_cmdline(ctr)
    require_pyinitctl(ctr)
    wait_health(ctr, healthy=True, timeout=30)
    procs = processes(ctr)
    assert next(p for p in procs if p.pid == 1).user == "root", procs
    arbiter = next(p for p in procs if "gunicorn" in p.args and p.ppid == 1)
    workers = [p for p in procs if p.ppid == arbiter.pid]
    assert arbiter.user == "app" and len(workers) == 2, f"args: --workers 2: {procs}"
    assert any(p.user == "worker" and "/app/worker.py" in p.args for p in procs), procs

    took = pod.down()
    assert took < pod.grace, f"kube down took {took:.1f}s"
    # Written by gunicorn's and the worker's SIGTERM handlers: a graceful stop, main first.
    events = [line.split()[0] for line in (pod.data() / "events.log").read_text().splitlines()]
    assert events[-2:] == ["main-stop", "worker-stop"], events


@pytest.mark.e2e
def test_redis_exporter_pod_as_non_root_keeps_its_data(
    pods: Callable[[str], Pod], image_ids: Callable[[str, str], tuple[int, int]]
) -> None:
    """runAsUser: redis: the notices say what is skipped; kube down saves; the volume keeps it."""
    uid, gid = image_ids("redis-exporter", "redis")
    manifest = "redis-exporter.yaml"
    assert (manifest_field(manifest, "runAsUser"), manifest_field(manifest, "runAsGroup")) == (
        str(uid),
        str(gid),
    ), "the manifest's runAsUser/runAsGroup must be the image's redis user"
    pod = pods("redis-exporter")
    ctr = pod.ctr
    wait_redis(ctr, timeout=60)
    assert ctr.exec("redis-cli", "set", "greeting", "hello").stdout.strip() == "OK"
    notices = [line for line in ctr.stderr.splitlines() if line.startswith("pyinit: ")]
    assert notices == [
        f"pyinit: running as uid {uid} without CAP_SETUID/CAP_SETGID: sidecar 'exporter' runs"
        f" as uid {uid}, not 'nobody' (--if-not-root fail makes this an error)",
        f"pyinit: running as uid {uid}, not root: skipping root setup",
    ], ctr.logs()
    procs = processes(ctr)
    assert next(p for p in procs if p.pid == 1).user == "redis", procs
    assert "pyinit" in " ".join(pid1_cmdline(ctr)[:2]), pid1_cmdline(ctr)
    assert (pod.data() / "appendonlydir").is_dir(), "args: --dir /var/lib/redis --appendonly yes"
    require_pyinitctl(ctr)
    wait_health(ctr, healthy=True, timeout=30)  # the probe runs as redis, like pyinit

    took = pod.down()
    assert took < pod.grace, f"kube down took {took:.1f}s"
    # redis writes dump.rdb at a graceful shutdown (no save point is reached this soon).
    assert b"greeting" in (pod.data() / "dump.rdb").read_bytes()
