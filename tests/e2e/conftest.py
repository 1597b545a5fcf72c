"""Session fixtures of the e2e tier: podman, the example images, the container factory.

Needs root, podman, runc and mmdebstrap (skips otherwise).  Once per session:
a wheel of this checkout is built; the base image (an mmdebstrap tarball,
cached outside CI) is imported as ``localhost/debian:bookworm``; each example
is built with ``podman build`` from its own Dockerfile, the build context
being a copy of the repository's files plus ``dist/`` holding that wheel.
Outside CI podman's image storage is kept in the cache folder, so the
Dockerfiles' apt-get layers are reused; with ``CI=true`` it is temporary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import rootfs
from .podman import Container, Podman

EXAMPLES = rootfs.REPO_ROOT / "examples"
BASE_IMAGE = "localhost/debian:bookworm"
# What the Dockerfiles COPY from the build context (the repository root).
CONTEXT_FILES = (
    "constraints.txt",
    "pyproject.toml",
    "README.md",
    "pyinit",
    "examples",
    "packaging",
)
# `podman build --from` replaces a Dockerfile's first FROM only; a build stage's second
# FROM (examples/redis-standalone) finds the base image under this name.
BASE_ALIASES = ("docker.io/library/debian:bookworm-slim",)
TOOLS = ("podman", "runc", "mmdebstrap", "unshare")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tier when this machine cannot run it (not root, tools missing)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    reason = (
        "e2e tier needs root"
        if os.geteuid() != 0
        else (f"e2e tier needs {', '.join(missing)} (apt-get install them)" if missing else "")
    )
    if reason:
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary folder for fresh (CI) trees and podman's run state."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def podman(scratch: Path) -> Iterator[Podman]:
    """A private podman with the base image imported."""
    if rootfs.fresh():
        pm = Podman(scratch / "podman", scratch / "storage")
    else:
        # podman's database remembers its run folder: a cached storage needs a
        # stable one, on a tmpfs (cleared at boot, as podman expects).
        pm = Podman(Path("/run/pyinit-e2e-podman"), rootfs.cache_dir() / "podman-storage")
    tarball = rootfs.build("base", (), scratch, tarball=True)
    # Imported again whenever the tarball is another one (rebuilt, other key).
    marker = f"localhost/debian:{tarball.stem}-{tarball.stat().st_mtime_ns}"
    if not (pm.has_image(marker) and pm.has_image(BASE_IMAGE)):
        pm("import", str(tarball), BASE_IMAGE, timeout=300)
        pm("tag", BASE_IMAGE, marker)
    for alias in BASE_ALIASES:
        pm("tag", BASE_IMAGE, alias)
    try:
        yield pm
    finally:
        pm.remove_all_containers()
        if rootfs.fresh():
            pm("system", "reset", "--force", check=False, timeout=120)
        else:  # keep the cache at one build per example: drop the superseded layers
            pm("image", "prune", "--force", check=False, timeout=120)


def copy_sources(names: tuple[str, ...], into: Path) -> None:
    """Copy NAMES (files or folders) from the checkout into INTO, caches left out."""
    into.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = rootfs.REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / name)


@pytest.fixture(scope="session")
def wheel(scratch: Path) -> Path:
    """A wheel of this checkout, built once per session (from a copy: no build/ litter)."""
    source, out = scratch / "wheel-src", scratch / "wheel"
    copy_sources(("pyproject.toml", "README.md", "pyinit"), source)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        timeout=300,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    (found,) = out.glob("pyinit-*.whl")
    return found


@pytest.fixture(scope="session")
def build_context(scratch: Path, wheel: Path) -> Path:
    """The repository's files the Dockerfiles copy, with ``dist/`` holding the wheel."""
    context = scratch / "context"
    copy_sources(CONTEXT_FILES, context)
    (context / "dist").mkdir()
    shutil.copy2(wheel, context / "dist" / wheel.name)
    return context


class Image:
    """An example built with podman: its tag and its config (from ``podman image inspect``)."""

    def __init__(self, podman: Podman, tag: str) -> None:
        self.tag = tag
        raw = json.loads(podman("image", "inspect", tag).stdout)[0]
        self.config: dict[str, object] = raw["Config"]
        # podman shows a Docker-format image's HEALTHCHECK beside Config, not in it.
        self.healthcheck: dict[str, object] | None = raw.get("Healthcheck")

    @property
    def entrypoint(self) -> list[str]:
        """The image's ENTRYPOINT."""
        value = self.config.get("Entrypoint") or []
        assert isinstance(value, list)
        return [str(v) for v in value]

    @property
    def cmd(self) -> list[str]:
        """The image's CMD."""
        value = self.config.get("Cmd") or []
        assert isinstance(value, list)
        return [str(v) for v in value]

    @property
    def stopsignal(self) -> str:
        """The image's STOPSIGNAL (podman reports it as a name or a number)."""
        return str(self.config.get("StopSignal", ""))

    def entrypoint_with(self, flags: list[str]) -> str:
        """The ENTRYPOINT as JSON with FLAGS inserted before its ``--`` (they win)."""
        entry = self.entrypoint
        at = entry.index("--") if "--" in entry else len(entry)
        entry[at:at] = flags
        return json.dumps(entry)


@pytest.fixture(scope="session")
def images(podman: Podman, build_context: Path) -> Callable[[str], Image]:
    """``images(name)`` builds ``examples/NAME/Dockerfile`` once per session."""
    built: dict[str, Image] = {}

    def get(name: str) -> Image:
        if name not in built:
            tag = f"localhost/{name}-pyinit:e2e"
            podman.build(
                build_context / "examples" / name / "Dockerfile", build_context, tag, BASE_IMAGE
            )
            built[name] = Image(podman, tag)
        return built[name]

    return get


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The host side of /data: a fresh root-owned directory, like a new volume."""
    path = tmp_path / "data"
    path.mkdir(mode=0o755)
    return path


ContainerFactory = Callable[..., Container]


@pytest.fixture
def container(
    podman: Podman, images: Callable[[str], Image], data_dir: Path
) -> Iterator[ContainerFactory]:
    """Factory: ``container("redis", cmd=[...], env={...}, ...)`` is ``podman run -d``.

    Keyword arguments: ``cmd`` (replaces CMD), ``pyinit_flags`` (inserted into the
    ENTRYPOINT before its ``--``: ``--entrypoint``), ``env`` (``-e``), ``data`` (host
    folder for /data, default ``data_dir``; None for the image's anonymous volume),
    ``user`` (``--user``), ``cap_drop``, ``volumes`` (``-v`` values), ``entrypoint``
    (a whole ENTRYPOINT replacing the image's, CMD kept).  Each container is removed
    at teardown.
    """
    made: list[Container] = []

    def make(
        name: str,
        *,
        cmd: list[str] | None = None,
        pyinit_flags: list[str] | None = None,
        env: dict[str, str] | None = None,
        data: Path | None = data_dir,
        user: str | None = None,
        cap_drop: tuple[str, ...] = (),
        volumes: tuple[str, ...] = (),
        entrypoint: list[str] | None = None,
    ) -> Container:
        image = images(name)
        cname = f"pyinit-e2e-{name}-{uuid.uuid4().hex[:8]}"
        options = ["--name", cname, "--network", "none", "--hostname", "e2e"]
        if pyinit_flags:
            options += ["--entrypoint", image.entrypoint_with(pyinit_flags)]
            # Like docker, podman drops the image's CMD when --entrypoint is given.
            cmd = image.cmd if cmd is None else cmd
        elif entrypoint is not None:
            options += ["--entrypoint", json.dumps(entrypoint)]
            cmd = image.cmd if cmd is None else cmd
        options += [f"--env={k}={v}" for k, v in (env or {}).items()]
        if data is not None:
            options += ["-v", f"{data}:/data"]
        options += [f"-v={v}" for v in volumes]
        options += [f"--cap-drop={c}" for c in cap_drop]
        if user is not None:
            options += ["--user", user]
        podman("run", "-d", *options, image.tag, *(cmd or []), timeout=60)
        ctr = Container(podman, cname)
        made.append(ctr)
        return ctr

    yield make
    for ctr in made:
        podman("rm", "--force", "--time=0", ctr.name, check=False, timeout=60)


def passwd_ids(podman: Podman, image: str, user: str) -> tuple[int, int]:
    """(uid, gid) of USER in the image's /etc/passwd."""
    out = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "getent", image, "passwd", user
    ).stdout
    fields = out.strip().split(":")
    return int(fields[2]), int(fields[3])


@pytest.fixture(scope="session")
def image_ids(
    podman: Podman, images: Callable[[str], Image]
) -> Callable[[str, str], tuple[int, int]]:
    """``image_ids("redis", "redis")`` -> (uid, gid) of that user inside that image."""
    return lambda name, user: passwd_ids(podman, images(name).tag, user)
