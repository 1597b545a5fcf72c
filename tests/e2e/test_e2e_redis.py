"""examples/redis with podman: root-owned /data, step-down to redis, save on stop, reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ContainerFactory
from .helpers import (
    REDIS_KEYS,
    find,
    pid1_cmdline,
    processes,
    stop_redis_keeping_data,
    wait_redis,
)

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)


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

    stop_redis_keeping_data(ctr, data_dir, redis_uid)

    ctr.start()  # the same container again: setup runs again, the data is there
    wait_redis(ctr)
    assert ctr.exec("redis-cli", "get", "greeting").stdout.strip() == "hello", ctr.logs()
    ctr.kill("KILL")
    assert ctr.wait(30) == 137, ctr.logs()

    again = container("redis", env={"PYINIT_MODE": mode})  # a new container, same volume
    wait_redis(again)
    for key, value in REDIS_KEYS.items():
        assert again.exec("redis-cli", "get", key).stdout.strip() == value, again.logs()
    again.kill("TERM")
    assert again.wait(30) == 0, again.logs()
