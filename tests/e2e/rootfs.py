"""The Debian root filesystem the e2e containers run on, and cheap copies of it.

``build_base`` makes a bookworm rootfs with mmdebstrap (the "FROM debian:bookworm"
plus every ``apt-get install`` of the examples) and installs pyinit's PyPI
dependencies into it.  It is cached under ``/var/cache/pyinit-e2e`` keyed by a
hash of everything that goes into it; with ``CI=true`` it is always built fresh.

Images and containers are overlay mounts on top of it (``Layer``), so every
container starts from a clean image and the base is never written to.  Where
overlayfs is not available the layer is a plain copy instead (slower, same
result).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
FALLBACK_MIRROR = "http://deb.debian.org/debian"

# Keep this list minimal: the whole CI run must stay under 10 minutes.  Every
# package an example's Dockerfile installs with apt-get must be listed here
# (dockerfile.py checks that).
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "procps",
    "redis-server",
    "redis-tools",
    "postgresql-15",
    "nginx-light",
)

# Bump when the way the base is built changes, to invalidate old caches.
_FORMAT = "1"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PASSTHROUGH_ENV = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where built root filesystems are kept (env PYINIT_E2E_CACHE overrides)."""
    return Path(os.environ.get("PYINIT_E2E_CACHE", "/var/cache/pyinit-e2e"))


def pip_dependencies() -> list[str]:
    """pyinit's runtime dependencies, read from pyproject.toml."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def base_key() -> str:
    """A short hash of everything that goes into the base rootfs."""
    sources = SOURCES.read_text() if SOURCES.exists() else FALLBACK_MIRROR
    blob = json.dumps([_FORMAT, SUITE, sorted(BASE_PACKAGES), pip_dependencies(), sources])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def log(message: str) -> None:
    """Progress line on stderr (shown with pytest -s, and in failure reports)."""
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def chroot_env() -> dict[str, str]:
    """A clean environment for commands run in the chroot (no host pip/CA variables)."""
    env = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ})
    return env


def chroot(
    rootfs: Path, command: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``/bin/sh -c COMMAND`` as root inside ROOTFS; raise with its output on failure."""
    argv = ["chroot", str(rootfs), "/bin/sh", "-c", command]
    proc = subprocess.run(
        argv, env=env or chroot_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"chroot {rootfs} {command!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts (it may hold a proxy's CA the rootfs lacks)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pip_install(rootfs: Path, args: str, timeout: float = 300) -> None:
    """``pip install --break-system-packages ARGS`` inside ROOTFS, trusting the host's CAs."""
    cert = ""
    bundle = host_ca_bundle()
    if bundle is not None:
        shutil.copyfile(bundle, rootfs / "tmp/host-ca.crt")
        cert = "--cert /tmp/host-ca.crt"
    try:
        chroot(
            rootfs,
            f"pip install --break-system-packages --no-cache-dir "
            f"--root-user-action=ignore --disable-pip-version-check {cert} {args}",
            timeout=timeout,
        )
    finally:
        (rootfs / "tmp/host-ca.crt").unlink(missing_ok=True)


def mmdebstrap(target: Path) -> float:
    """Build a minbase bookworm rootfs with BASE_PACKAGES into TARGET; return seconds taken."""
    mirror = str(SOURCES) if SOURCES.exists() else FALLBACK_MIRROR
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--quiet",
        "--include=" + ",".join(BASE_PACKAGES),
        SUITE,
        str(target),
        mirror,
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return time.monotonic() - started


def _build(target: Path) -> None:
    started = time.monotonic()
    seconds = mmdebstrap(target)
    log(f"mmdebstrap {SUITE} took {seconds:.1f}s")
    pip_install(target, " ".join(f"'{dep}'" for dep in pip_dependencies()))
    (target / ".pyinit-e2e-complete").write_text(f"{time.monotonic() - started:.1f}\n")
    log(f"base rootfs built in {time.monotonic() - started:.1f}s at {target}")


def build_base(scratch: Path) -> Path:
    """Return a base rootfs: cached unless CI=true (then built fresh under SCRATCH)."""
    if os.environ.get("CI") == "true":
        target = scratch / "base-rootfs"
        _build(target)
        return target
    target = cache_dir() / f"rootfs-{base_key()}"
    if (target / ".pyinit-e2e-complete").exists():
        log(f"using cached base rootfs {target}")
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    _build(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


@dataclass
class Layer:
    """A writable root filesystem: LOWER directories under a fresh upper layer.

    ``lowers`` are listed top first, like overlayfs' ``lowerdir``.  ``upper`` holds
    only what changed, so an image can be stacked under its containers.
    """

    lowers: list[Path]
    workdir: Path
    overlay: bool = True

    @property
    def upper(self) -> Path:
        """The directory that receives every change made through ``merged``."""
        return self.workdir / "upper"

    @property
    def merged(self) -> Path:
        """The root filesystem to hand to chroot or runc."""
        return self.workdir / "rootfs"

    def mount(self) -> Path:
        """Make ``merged`` available (overlay mount, else a full copy) and return it."""
        for name in ("upper", "work", "rootfs"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        if self.overlay:
            lower = ":".join(str(p) for p in self.lowers)
            options = f"lowerdir={lower},upperdir={self.upper},workdir={self.workdir / 'work'}"
            proc = subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(self.merged)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if proc.returncode == 0:
                return self.merged
            log(f"overlay mount failed ({proc.stderr.strip()}); copying instead")
            self.overlay = False
        for lower in reversed(self.lowers):
            subprocess.run(["cp", "-a", f"{lower}/.", str(self.merged)], check=True, timeout=300)
        return self.merged

    def unmount(self) -> None:
        """Undo ``mount`` (the upper layer stays, to be stacked or inspected)."""
        if self.overlay and os.path.ismount(self.merged):
            subprocess.run(["umount", str(self.merged)], check=False, timeout=30)

    def lowers_for_next(self) -> list[Path]:
        """After ``unmount``: the lower layers for a Layer stacked on top of this one."""
        return [self.upper, *self.lowers] if self.overlay else [self.merged]
