"""examples/redis-standalone with podman: pyinit as a folder, in an image without Python.

The image's build stage runs packaging/standalone.sh on a pristine Debian 12 (apt and
pip only); the image copies the folder in with ``COPY --from=``.  Checked here: the
folder needs nothing from the image but glibc, at most the glibc floor
docs/standalone.md states; pyinit itself is PID 1 (no launcher above it) and forwards
SIGTERM; nothing of the bundle reaches the target's environment; a read-only root with
no writable /tmp works; redis runs as redis and ``podman stop`` keeps its data; the
image has no python3.
"""

from __future__ import annotations

import importlib.util
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from . import rootfs
from .conftest import ContainerFactory, Image
from .helpers import wait_redis
from .podman import Container, Podman, wait_for

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image

NAME = "redis-standalone"
ENTRY = "/opt/pyinit/pyinit"
KEYS = {"greeting": "hello", "answer": "forty-two"}
# What PyInstaller's launcher sets for itself: none of it may reach a target.
BUNDLE_MARKS = ("_PYI_", "_MEI", "LD_LIBRARY_PATH_ORIG", "/opt/pyinit")


def check_bundle_module() -> ModuleType:
    """packaging/check_bundle.py, imported from its path (it is a script, not a package)."""
    path = rootfs.REPO_ROOT / "packaging" / "check_bundle.py"
    spec = importlib.util.spec_from_file_location("check_bundle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_floor() -> tuple[int, int]:
    """The glibc floor docs/standalone.md promises."""
    text = (rootfs.REPO_ROOT / "docs" / "standalone.md").read_text()
    found = re.search(r"glibc floor: 2\.(\d+)", text)
    assert found, "docs/standalone.md states no 'glibc floor: 2.NN'"
    return 2, int(found.group(1))


def top(ctr: Container) -> list[tuple[int, str, str]]:
    """(pid, user, args) of every process in the container (podman top: no ps needed)."""
    out = ctr.podman("top", ctr.name, "pid", "user", "args").stdout.splitlines()[1:]
    rows = [line.split(None, 2) for line in out if line.strip()]
    return [(int(r[0]), r[1], r[2] if len(r) > 2 else "") for r in rows]


@pytest.fixture(scope="module")
def bundle(
    podman: Podman, images: Callable[[str], Image], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The image's /opt/pyinit, copied out to the host."""
    tag = images(NAME).tag
    out = tmp_path_factory.mktemp("bundle")
    name = f"pyinit-e2e-copy-{uuid.uuid4().hex[:8]}"
    podman("create", "--name", name, tag)
    try:
        podman("cp", f"{name}:/opt/pyinit", str(out))
    finally:
        podman("rm", "--force", name, check=False)
    return out / "pyinit"


@pytest.mark.e2e
def test_bundle_needs_only_glibc_at_most_the_stated_floor(bundle: Path) -> None:
    """readelf over every ELF file: NEEDED is in the folder or glibc's; GLIBC_x.y <= floor."""
    check = check_bundle_module()
    launcher = bundle / "pyinit"
    # The reading itself works (else the check below would pass on nothing).
    assert check.needed_libraries(launcher) == ["libc.so.6"], "launcher: libc only (static zlib)"
    assert check.glibc_versions(launcher)
    assert len(check.elf_files(bundle)) > 5
    problems, floor = check.check(bundle)
    assert problems == []
    assert floor <= documented_floor(), f"the bundle needs glibc {floor}"


@pytest.mark.e2e
def test_redis_as_redis_pid1_is_pyinit_stop_keeps_data(
    container: ContainerFactory,
    data_dir: Path,
    image_ids: Callable[[str, str], tuple[int, int]],
) -> None:
    """redis as redis under pyinit (PID 1, nothing above it); podman stop saves; no python3."""
    redis_uid, _ = image_ids(NAME, "redis")
    ctr = container(NAME)
    wait_redis(ctr)
    procs = top(ctr)
    init = [p for p in procs if p[2].startswith(ENTRY)]
    assert [p[0] for p in init] == [1], f"one pyinit, PID 1, no launcher process: {procs}"
    assert init[0][1] == "root"
    server = next(p for p in procs if p[2].startswith("redis-server"))
    assert server[1] == "redis", procs
    # As redis: root in the container lacks CAP_SYS_PTRACE to read another user's environ.
    environ = ctr.exec("cat", f"/proc/{server[0]}/environ", user="redis").stdout.split("\0")
    assert "USER=redis" in environ, environ
    assert not [
        v for v in environ if v.startswith("LD_LIBRARY_PATH") or any(m in v for m in BUNDLE_MARKS)
    ]
    python = ctr.exec("sh", "-c", "ls /bin /usr/bin /usr/local/bin | grep -i python", check=False)
    assert python.stdout == "", f"the image has Python: {python.stdout}"

    for key, value in KEYS.items():
        assert ctr.exec("redis-cli", "set", key, value).stdout.strip() == "OK"
    ctr.stop()
    assert ctr.exit_code() == 0, ctr.logs()
    assert "DB saved on disk" in ctr.stdout + ctr.stderr, ctr.logs()
    dump = data_dir / "dump.rdb"
    assert dump.stat().st_uid == redis_uid
    content = dump.read_bytes()
    assert all(k.encode() in content and v.encode() in content for k, v in KEYS.items())


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["supervise", "exec"])
def test_target_gets_the_containers_environment(container: ContainerFactory, mode: str) -> None:
    """`-- env`: the container's LD_LIBRARY_PATH and PYTHONPATH as given, nothing of the bundle."""
    given = {"PYINIT_MODE": mode, "LD_LIBRARY_PATH": "/opt/custom/lib", "PYTHONPATH": "/srv/py"}
    ctr = container(NAME, cmd=["env"], env=given)
    assert ctr.wait(60) == 0, ctr.logs()
    lines = ctr.stdout.splitlines()
    assert "LD_LIBRARY_PATH=/opt/custom/lib" in lines, ctr.logs()
    assert "PYTHONPATH=/srv/py" in lines, ctr.logs()
    leaked = [line for line in lines if any(mark in line for mark in BUNDLE_MARKS)]
    assert leaked == [], ctr.logs()


@pytest.mark.e2e
def test_read_only_root_without_tmp_and_sigterm(
    podman: Podman, images: Callable[[str], Image], data_dir: Path
) -> None:
    """--read-only, /tmp not writable either: pyinit starts, forwards SIGTERM, exits 143."""
    tag = images(NAME).tag
    name = f"pyinit-e2e-ro-{uuid.uuid4().hex[:8]}"
    script = "touch /data/started && exec sleep 300"
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--read-only",
        "--read-only-tmpfs=false",
        "-v",
        f"{data_dir}:/data",
        tag,
        "sh",
        "-c",
        script,
    )
    ctr = Container(podman, name)
    try:
        wait_for(
            lambda: (data_dir / "started").exists(), 60, "the target to start", details=ctr.logs
        )
        assert ctr.exec("sh", "-c", "ls -A /tmp").stdout == ""
        assert ctr.exec("sh", "-c", "touch /tmp/x", check=False).returncode != 0, "root is writable"
        ctr.kill("TERM")
        assert ctr.wait(30) == 143, ctr.logs()
    finally:
        podman("rm", "--force", "--time=0", name, check=False)
