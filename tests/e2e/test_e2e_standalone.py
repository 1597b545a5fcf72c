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
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from . import rootfs
from .conftest import ContainerFactory, Image
from .helpers import stop_redis_keeping_data, wait_redis
from .podman import Container, Podman, wait_for

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image

NAME = "redis-standalone"
ENTRY = "/opt/pyinit/pyinit"
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
        podman("rm", "--force", "--volumes", name, check=False)  # and its anonymous /data
    return out / "pyinit"


@pytest.mark.e2e
def test_bundle_needs_only_glibc_at_most_the_stated_floor(bundle: Path) -> None:
    """readelf over every ELF file: NEEDED is in the folder or glibc's; GLIBC_x.y <= floor."""
    check = check_bundle_module()
    launcher = bundle / "pyinit"
    # The reading itself works (else the check below would pass on nothing).
    assert check.needed_libraries(launcher) == ["libc.so.6"], "launcher: libc only (static zlib)"
    assert check.glibc_versions(launcher)
    assert check.missing_entries(bundle) == [], "pyinitctl beside pyinit"
    assert check.needed_libraries(bundle / "pyinitctl") == ["libc.so.6"]
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
    python = ctr.exec("sh", "-c", "ls /bin /usr/bin /usr/local/bin | grep -i python", check=False)
    assert python.stdout == "", f"the image has Python: {python.stdout}"

    stop_redis_keeping_data(ctr, data_dir, redis_uid)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["supervise", "exec"])
def test_target_gets_the_containers_environment(container: ContainerFactory, mode: str) -> None:
    """`-- env` (and, supervising, a task's `env`): the container's variables, no bundle.

    (redis-server itself cannot be asked: it overwrites its /proc/PID/environ for its title.)
    """
    given = {"PYINIT_MODE": mode, "LD_LIBRARY_PATH": "/opt/custom/lib", "PYTHONPATH": "/srv/py"}
    flags = ["--task", "t -- env"] if mode == "supervise" else None
    ctr = container(NAME, cmd=["env"], env=given, pyinit_flags=flags)
    assert ctr.wait(60) == 0, ctr.logs()
    lines = ctr.stdout.splitlines()
    outputs = {"target": [line for line in lines if not line.startswith("t | ")]}
    if flags:
        outputs["task"] = [line[4:] for line in lines if line.startswith("t | ")]
    for who, out in outputs.items():
        assert "LD_LIBRARY_PATH=/opt/custom/lib" in out, f"{who}\n{ctr.logs()}"
        assert "PYTHONPATH=/srv/py" in out, f"{who}\n{ctr.logs()}"
        leaked = [line for line in out if any(mark in line for mark in BUNDLE_MARKS)]
        assert leaked == [], f"{who}\n{ctr.logs()}"


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["supervise", "exec"])
def test_no_new_privs_through_ctypes(container: ContainerFactory, mode: str) -> None:
    """--no-new-privs (prctl through ctypes) works: the bundle's stand-in for PyInstaller's
    ctypes hook (packaging/pyimod03_ctypes.py) leaves ctypes itself whole."""
    ctr = container(
        NAME,
        cmd=["grep", "NoNewPrivs", "/proc/self/status"],
        env={"PYINIT_MODE": mode},
        pyinit_flags=["--no-new-privs"],
    )
    assert ctr.wait(60) == 0, ctr.logs()
    assert ctr.stdout.split() == ["NoNewPrivs:", "1"], ctr.logs()


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


def host_library_paths() -> dict[str, str]:
    """Library name -> path on this machine (``ldconfig -p``)."""
    out = subprocess.run(
        ["ldconfig", "-p"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = re.findall(r"^\s+(\S+) \([^)]*\) => (\S+)$", out, re.M)
    paths: dict[str, str] = {}
    for name, path in found:
        paths.setdefault(name, path)
    return paths


def libc_only_tree(bundle: Path, root: Path) -> None:
    """ROOT holding the bundle at /opt/pyinit, glibc's libraries it needs, passwd/group: no more."""
    check = check_bundle_module()
    shutil.copytree(bundle, root / "opt" / "pyinit", symlinks=True)
    needed = {lib for f in check.elf_files(bundle) for lib in check.needed_libraries(f)}
    interp = re.search(
        r"interpreter: (\S+)\]", check.readelf("--program-headers", str(bundle / "pyinit"))
    )
    assert interp, "the launcher names no program interpreter"
    host = host_library_paths()
    for path in [interp.group(1), *(host[lib] for lib in sorted(needed) if check.is_glibc(lib))]:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/nonexistent\nnobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "proc").mkdir()


@pytest.mark.e2e
def test_runs_as_pid1_in_a_tree_holding_only_libc(bundle: Path, tmp_path: Path) -> None:
    """chroot into bundle + glibc alone: PID 1 pyinit steps down and runs a target (itself)."""
    root = tmp_path / "root"
    libc_only_tree(bundle, root)
    script = (
        'mount -t proc proc "$1/proc" && exec chroot "$1" /opt/pyinit/pyinit'
        " --user nobody -- /opt/pyinit/pyinit --version"
    )
    proc = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    details = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0 and proc.stdout.startswith("pyinit "), details
