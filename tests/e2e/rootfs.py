"""Pristine Debian bookworm trees built with mmdebstrap, cached between runs.

Two are used: the base image of the podman tier (``minbase``, as a tarball for
``podman import``: what ``FROM debian:bookworm-slim`` gives) and the newcomer's
machine of the README test (``minbase`` plus python3, python3-pip and git, as a
directory).  Both are cached under ``/var/cache/pyinit-e2e`` (``PYINIT_E2E_CACHE``)
keyed by a hash of what goes into them; with ``CI=true`` they are built fresh in
the session's temporary directory.  apt inside them uses this machine's own
source (``/etc/apt/sources.list.d/debian.sources``), as mmdebstrap was given it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Bump when the way the trees are built changes, to invalidate old caches.
_FORMAT = "2"


def cache_dir() -> Path:
    """Where built trees are kept (env PYINIT_E2E_CACHE overrides)."""
    return Path(os.environ.get("PYINIT_E2E_CACHE", "/var/cache/pyinit-e2e"))


def fresh() -> bool:
    """True in CI (``CI=true``): build everything from scratch, keep nothing."""
    return os.environ.get("CI") == "true"


def log(message: str) -> None:
    """Progress line on stderr (shown with pytest -s, and in failure reports)."""
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine trusts (it may hold a proxy's CA a fresh tree lacks)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _key(packages: tuple[str, ...], kind: str) -> str:
    sources = SOURCES.read_text() if SOURCES.exists() else FALLBACK_MIRROR
    blob = json.dumps([_FORMAT, SUITE, kind, sorted(packages), sources])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mmdebstrap(target: Path, packages: tuple[str, ...]) -> None:
    """minbase bookworm (+ PACKAGES) into TARGET: a directory, or a tarball if it ends .tar."""
    mirror = str(SOURCES) if SOURCES.exists() else FALLBACK_MIRROR
    include = ["--include=" + ",".join(packages)] if packages else []
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--quiet",
        *include,
        SUITE,
        str(target),
        mirror,
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    log(f"mmdebstrap {SUITE} {','.join(packages)} -> {target} in {time.monotonic() - started:.1f}s")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build(name: str, packages: tuple[str, ...], scratch: Path, tarball: bool) -> Path:
    """A pristine tree (directory, or tarball when TARBALL): cached unless CI=true."""
    suffix = ".tar" if tarball else ""
    if fresh():
        target = scratch / f"{name}{suffix}"
        mmdebstrap(target, packages)
        return target
    target = cache_dir() / f"{name}-{_key(packages, suffix)}{suffix}"
    if target.exists():
        log(f"using cached {target}")
        return target
    partial = target.with_name(f"{name}.partial-{os.getpid()}{suffix}")
    _remove(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mmdebstrap(partial, packages)
    _remove(target)
    partial.rename(target)
    return target
