"""examples/redis with podman: root-owned /data, step-down to redis, save on stop, reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ContainerFactory
from .helpers import find, pid1_cmdline, processes, wait_redis

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)

KEYS = {"greeting": "hello", "answer": "forty-two"}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["supervise", "exec"])
def test_redis_saves_on_stop_and_reloads(
    container: ContainerFactory,
    data_dir: Path,
    image_ids: Callable[[str, str], tuple[int, int]],
    mode: str,
) -> None:
    """podman run -e PYINIT_MODE=MODE; set keys; podman stop; podman start; run again."""
    redis_uid, _ = image_ids("redis", "redis")
    assert data_dir.stat().st_uid == 0, "the volume must start root-owned"

    ctr = container("redis", env={"PYINIT_MODE": mode})
    wait_redis(ctr)
    procs = processes(ctr)
    server = find(procs, "redis-server")
    assert server.user == "redis", procs
    if mode == "exec":
        assert server.pid == 1, f"exec mode: redis-server should be PID 1: {procs}"
    else:
        assert "pyinit" in pid1_cmdline(ctr)[1], pid1_cmdline(ctr)
        init = next(p for p in procs if p.pid == 1)
        assert init.user == "root" and server.ppid == 1, procs
    assert data_dir.stat().st_uid == redis_uid, "--chown /data did not give it to redis"

    for key, value in KEYS.items():
        assert ctr.exec("redis-cli", "set", key, value).stdout.strip() == "OK"
    ctr.stop()
    assert ctr.exit_code() == 0, ctr.logs()
    assert "DB saved on disk" in ctr.stdout + ctr.stderr, ctr.logs()

    dump = data_dir / "dump.rdb"
    assert dump.stat().st_uid == redis_uid, "dump.rdb must belong to the image's redis user"
    content = dump.read_bytes()
    assert all(k.encode() in content and v.encode() in content for k, v in KEYS.items())

    ctr.start()  # the same container again: setup runs again, the data is there
    wait_redis(ctr)
    assert ctr.exec("redis-cli", "get", "greeting").stdout.strip() == "hello", ctr.logs()
    ctr.kill("KILL")
    assert ctr.wait(30) == 137, ctr.logs()

    again = container("redis", env={"PYINIT_MODE": mode})  # a new container, same volume
    wait_redis(again)
    for key, value in KEYS.items():
        assert again.exec("redis-cli", "get", key).stdout.strip() == value, again.logs()
    again.kill("TERM")
    assert again.wait(30) == 0, again.logs()
