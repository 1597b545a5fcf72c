"""examples/webapp and examples/redis-exporter with podman: a main, sidecars and a task.

Each example runs twice: from its /etc/pyinit.toml (the image's ENTRYPOINT)
and from the equivalent flags its README gives (``--entrypoint``).  What is
asserted is what a user sees: PID 1's command line, the users in /proc, the
files and the events log the processes wrote, HTTP answers from inside the
container, ``NAME | line`` in ``podman logs``, and ``podman stop``'s status.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ContainerFactory
from .helpers import Proc, find, pid1_cmdline, processes, wait_redis
from .podman import Container, wait_for

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)

# The flags forms of the two pyinit.toml files, as in the examples' README.md.
WEBAPP_FLAGS = [
    "pyinit",
    "--user", "app",
    "--mkdir", "/data:2770",
    "--chown", "/data",
    "--umask", "007",
    "--stop-timeout", "8",
    "--task", "migrate -- python3 /app/migrate.py",
    "--sidecar", "worker user=worker max-restarts=3/60 -- python3 /app/worker.py",
    "--",
    "gunicorn", "--config", "/app/gunicorn.conf.py", "--chdir", "/app", "app:application",
]  # fmt: skip
EXPORTER_FLAGS = [
    "pyinit",
    "--user", "redis",
    "--chown", "/data",
    "--stop-timeout", "8",
    "--sidecar",
    "exporter user=nobody ready=tcp:9121 ready-timeout=10"
    " -- python3 -u /usr/local/bin/exporter.py",
    "--",
    "redis-server", "--protected-mode", "no",
]  # fmt: skip
FORMS = {"toml": None, "flags": {"webapp": WEBAPP_FLAGS, "redis-exporter": EXPORTER_FLAGS}}

FETCH = (
    "import sys, urllib.request as u\n"
    "data = b'' if sys.argv[2] == 'POST' else None\n"
    "print(u.urlopen(u.Request(sys.argv[1], data=data), timeout=5).read().decode())"
)
# podman stop's --time (then SIGKILL), above the examples' stop-timeout of 8 s.
STOP_TIME = 10


def http(ctr: Container, url: str, method: str = "GET") -> str:
    """The body of METHOD URL, fetched from inside the container ('' if it failed)."""
    ctr.wait_running()  # fails at once, with the logs, if the container has exited
    proc = ctr.exec("python3", "-c", FETCH, url, method, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def start(container: ContainerFactory, name: str, form: str) -> Container:
    """Run example NAME from its TOML file or from its flags form."""
    flags = FORMS[form]
    return container(name, entrypoint=None if flags is None else flags[name])


def events(data: Path) -> list[tuple[str, float, int]]:
    """(event, time, uid) rows of /data/events.log, as the processes wrote them."""
    rows = [line.split() for line in (data / "events.log").read_text().splitlines()]
    return [(event, float(when), int(uid)) for event, when, _pid, uid in rows]


def by_script(procs: list[Proc], script: str) -> Proc:
    """The python3 process running SCRIPT."""
    matches = [p for p in procs if script in p.args.split()[1:3]]
    assert matches, f"no process running {script} in {procs}"
    return matches[0]


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["toml", "flags"])
def test_webapp_task_then_worker_then_gunicorn(
    container: ContainerFactory,
    data_dir: Path,
    image_ids: Callable[[str, str], tuple[int, int]],
    form: str,
) -> None:
    """migrate runs first, gunicorn answers, the worker (as worker) does the jobs, stop in order."""
    app_uid, _ = image_ids("webapp", "app")
    worker_uid, _ = image_ids("webapp", "worker")
    ctr = start(container, "webapp", form)
    ctr.wait_running()
    wait_for(
        lambda: http(ctr, "http://127.0.0.1:8000/") == "{}",
        30,
        "gunicorn to answer on 8000",
        interval=0.3,
        details=ctr.logs,
    )
    assert "pyinit" in " ".join(pid1_cmdline(ctr)[:2]), pid1_cmdline(ctr)

    for _ in range(3):
        assert http(ctr, "http://127.0.0.1:8000/jobs", "POST"), ctr.logs()
    done = data_dir / "done"
    wait_for(
        lambda: len(list(done.glob("*"))) == 3, 30, "the worker to do 3 jobs", details=ctr.logs
    )
    assert http(ctr, "http://127.0.0.1:8000/") == '{"done": 3}', ctr.logs()
    assert {p.read_text() for p in done.iterdir()} == {f"done by uid {worker_uid}\n"}

    procs = processes(ctr)
    init = next(p for p in procs if p.pid == 1)
    worker = by_script(procs, "/app/worker.py")
    arbiter = next(p for p in procs if "gunicorn" in p.args and p.ppid == 1)
    assert init.user == "root" and worker.ppid == 1, procs
    assert (worker.user, arbiter.user) == ("worker", "app"), procs
    status = ctr.exec("cat", f"/proc/{worker.pid}/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(worker_uid)] * 4, status

    # Within the stop budget: had podman needed SIGKILL, the status would be 137.
    ctr.stop(STOP_TIME)
    assert ctr.exit_code() == 0, ctr.logs()  # gunicorn's status: 0 after SIGTERM
    out = ctr.stdout
    for line in ("migrate | schema ready", "worker | waiting for jobs", "worker | job 1 done"):
        assert line in out, ctr.logs()
    assert "worker | stopped" in out, ctr.logs()

    log = events(data_dir)
    names = [event for event, _, _ in log]
    assert names[0] == "migrate", log  # the task ran (and ended) before anything else
    assert names.index("main-start") > names.index("migrate"), log
    assert names.index("main-stop") < names.index("worker-stop"), log  # main first
    uid_of = {event: uid for event, _, uid in log}
    assert uid_of == {
        "migrate": app_uid,
        "worker-start": worker_uid,
        "main-start": app_uid,
        "main-stop": app_uid,
        "worker-stop": worker_uid,
    }, log


def metrics(ctr: Container) -> dict[str, float]:
    """The exporter's /metrics, fetched from inside the container, as a dict."""
    body = http(ctr, "http://127.0.0.1:9121/metrics")
    pairs = (line.split() for line in body.splitlines() if line)
    return {name: float(value) for name, value in pairs}


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["toml", "flags"])
def test_redis_with_exporter_sidecar(container: ContainerFactory, form: str) -> None:
    """The exporter (as nobody) reports redis, is restarted after kill -9, stops after redis."""
    ctr = start(container, "redis-exporter", form)
    wait_redis(ctr)
    assert "pyinit" in " ".join(pid1_cmdline(ctr)[:2]), pid1_cmdline(ctr)
    wait_for(
        lambda: metrics(ctr).get("redis_up") == 1,
        30,
        "the exporter to see redis",
        interval=0.3,
        details=ctr.logs,
    )
    assert ctr.exec("redis-cli", "set", "greeting", "hello").stdout.strip() == "OK"
    assert metrics(ctr)["redis_connected_clients"] >= 1

    procs = processes(ctr)
    exporter = by_script(procs, "/usr/local/bin/exporter.py")
    server = find(procs, "redis-server")
    assert (exporter.user, server.user) == ("nobody", "redis"), procs
    assert exporter.ppid == 1 and server.ppid == 1, procs

    # No kill(1) in the slim image; pyinit restarts the exporter (restart=always).
    ctr.exec("python3", "-c", f"import os; os.kill({exporter.pid}, 9)")

    def restarted() -> bool:
        again = [p for p in processes(ctr) if "/usr/local/bin/exporter.py" in p.args]
        return bool(again) and again[0].pid != exporter.pid and metrics(ctr).get("redis_up") == 1

    wait_for(restarted, 30, "the exporter to be restarted", interval=0.3, details=ctr.logs)
    assert ctr.stdout.count("exporter | listening on 127.0.0.1:9121") == 2, ctr.logs()

    ctr.stop(STOP_TIME)
    assert ctr.exit_code() == 0, ctr.logs()  # redis' status (it saves), not 137: no SIGKILL
    assert "DB saved on disk" in ctr.stdout + ctr.stderr, ctr.logs()


@pytest.mark.e2e
def test_webapp_failing_migration_keeps_gunicorn_down(
    container: ContainerFactory, data_dir: Path
) -> None:
    """A task that fails: exit 125 naming it, and neither the worker nor gunicorn ever started."""
    at = WEBAPP_FLAGS.index("--task")
    flags = [*WEBAPP_FLAGS[:at], "--task", "broken -- python3 -c 'raise SystemExit(3)'"]
    ctr = container("webapp", entrypoint=flags + WEBAPP_FLAGS[at:])
    assert ctr.wait(30) == 125, ctr.logs()
    assert "task broken failed (exit 3)" in ctr.stderr, ctr.logs()
    assert not (data_dir / "events.log").exists(), (data_dir / "events.log").read_text()
