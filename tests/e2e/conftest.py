"""Session fixtures for the e2e tier: base rootfs, example images, container factory.

Needs root, runc and mmdebstrap (skips otherwise).  The base rootfs is cached
(see :mod:`rootfs`); pyinit is installed from the working tree into every
image at every session, so the tests always exercise the current code.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import rootfs
from .dockerfile import Builder, Image
from .runc import BundleSpec, Container, Mount, write_bundle

EXAMPLES = rootfs.REPO_ROOT / "examples"
_SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "pyinit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tier when this machine cannot run it (not root, no runc/mmdebstrap)."""
    missing = [tool for tool in ("runc", "mmdebstrap", "chroot") if shutil.which(tool) is None]
    reason = (
        "e2e tier needs root"
        if os.geteuid() != 0
        else (f"e2e tier needs {', '.join(missing)}" if missing else "")
    )
    if reason:
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def base_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bookworm rootfs with every example's packages and pyinit's dependencies."""
    scratch = tmp_path_factory.mktemp("base")
    yield rootfs.build_base(scratch)
    shutil.rmtree(scratch, ignore_errors=True)  # a fresh (CI) build is not kept


def install_pyinit(target: Path) -> None:
    """pip-install the working tree into TARGET, as ``COPY . /src; RUN pip install /src``."""
    started = time.monotonic()
    src = target / "tmp/pyinit-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in _SOURCE_FILES:
        path = rootfs.REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    (src / "README.md").touch()  # pyproject names it; the package may not have one yet
    try:
        rootfs.pip_install(target, "--no-build-isolation /tmp/pyinit-src")
    finally:
        shutil.rmtree(src, ignore_errors=True)
    version = rootfs.chroot(target, "pyinit --version").stdout.strip()
    rootfs.log(f"installed pyinit {version} into {target} in {time.monotonic() - started:.1f}s")


@dataclass
class BuiltImage:
    """An example built on the base rootfs: its Image metadata and its layers."""

    image: Image
    layer: rootfs.Layer


@pytest.fixture(scope="session")
def images(
    base_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], BuiltImage]]:
    """``images(name)`` builds ``examples/NAME/Dockerfile`` once per session."""
    built: dict[str, BuiltImage] = {}
    root = tmp_path_factory.mktemp("images")

    def get(name: str) -> BuiltImage:
        if name not in built:
            layer = rootfs.Layer(lowers=[base_rootfs], workdir=root / name)
            try:
                image = Builder(
                    EXAMPLES / name / "Dockerfile", EXAMPLES.parent, layer.mount(), install_pyinit
                ).build()
            finally:
                layer.unmount()
            built[name] = BuiltImage(image, layer)
        return built[name]

    yield get


@pytest.fixture(scope="session")
def runc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private runc state directory, so these containers never mix with others."""
    return tmp_path_factory.mktemp("runc-state")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The host side of /data: a fresh root-owned directory, like a new docker volume."""
    path = tmp_path / "data"
    path.mkdir(mode=0o755)
    return path


ContainerFactory = Callable[..., Container]


@pytest.fixture
def container(
    images: Callable[[str], BuiltImage], runc_root: Path, tmp_path: Path, data_dir: Path
) -> Iterator[ContainerFactory]:
    """Factory: ``container("redis", cmd=..., env=..., ...)`` starts a container.

    Keyword arguments: ``cmd`` (replaces CMD, like ``docker run IMAGE CMD``),
    ``pyinit_flags`` (extra flags for the ENTRYPOINT), ``env`` (``docker run -e``),
    ``data`` (host dir for /data, default ``data_dir``), ``uid``/``gid``,
    ``drop_caps``, ``mounts``, ``start`` (default True).  Every container is
    force-deleted and its rootfs unmounted at teardown.
    """
    created: list[tuple[Container, rootfs.Layer]] = []

    def make(
        name: str,
        *,
        cmd: list[str] | None = None,
        pyinit_flags: list[str] | None = None,
        env: dict[str, str] | None = None,
        data: Path | None = None,
        uid: int = 0,
        gid: int = 0,
        drop_caps: tuple[str, ...] = (),
        mounts: tuple[Mount, ...] = (),
        start: bool = True,
    ) -> Container:
        built = images(name)
        cid = f"pyinit-e2e-{name}-{uuid.uuid4().hex[:8]}"
        workdir = tmp_path / cid
        layer = rootfs.Layer(lowers=built.layer.lowers_for_next(), workdir=workdir / "layer")
        spec = BundleSpec(
            rootfs=layer.mount(),
            args=built.image.argv(cmd, pyinit_flags),
            env=built.image.env_list(env),
            cwd=built.image.workdir,
            uid=uid,
            gid=gid,
            mounts=[Mount(data or data_dir, "/data"), *mounts],
            drop_caps=list(drop_caps),
        )
        ctr = Container(runc_root, write_bundle(workdir / "bundle", spec), cid)
        created.append((ctr, layer))
        return ctr.start() if start else ctr

    yield make
    for ctr, layer in reversed(created):
        ctr.delete()
        layer.unmount()


def passwd_ids(root: Path, user: str) -> tuple[int, int]:
    """(uid, gid) of USER in ROOT/etc/passwd (the image's, not the host's)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise KeyError(f"{user} not in {root}/etc/passwd")


@pytest.fixture(scope="session")
def image_ids(base_rootfs: Path) -> Callable[[str], tuple[int, int]]:
    """``image_ids("redis")`` -> (uid, gid) of that user inside the rootfs."""
    return lambda user: passwd_ids(base_rootfs, user)
