"""Shared fixtures: the user sandbox (see :mod:`sandbox`) and how to start pyinit."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import (
    PROJECT_ROOT,
    Sandbox,
    python_for_any_user,
    sandbox_available,
    why_no_python_for_any_user,
)

# Every ``python -m pyinit`` a test starts runs this checkout's code, never
# another installed copy (an editable install may point at another tree).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
)
# A pyinit a test starts with the inherited environment, outside a PID namespace
# with its own /run, must not make its control socket in the host's /run; the
# tests of the socket name one (see also _host_run_untouched).
os.environ.setdefault("PYINIT_CONTROL", "none")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One fixture user database for the session; skips when unshare/root are missing.

    Tests must not change its files; one needing other entries builds its
    own ``Sandbox(tmp_path / "sb")``.
    """
    reason = sandbox_available()
    if reason is not None:
        pytest.skip(reason)
    box = Sandbox()
    try:
        yield box
    finally:
        box.cleanup()


@pytest.fixture(scope="session")
def pyinit_any_user() -> tuple[str, ...]:
    """argv that starts pyinit from any uid (for tests that start as non-root)."""
    python = python_for_any_user()
    if python is None:
        pytest.skip(why_no_python_for_any_user())
    return ("/usr/bin/env", f"PYTHONPATH={PROJECT_ROOT}", python, "-m", "pyinit")


@pytest.fixture(scope="session")
def python_any_user() -> str:
    """A Python interpreter any target uid can execute (for targets written in Python)."""
    python = python_for_any_user()
    if python is None:
        pytest.skip(why_no_python_for_any_user())
    return python


#: The control socket's default directory on the host: no test may create it.
HOST_CONTROL_DIR = "/run/pyinit"


@pytest.fixture(autouse=True)
def _host_run_untouched() -> Iterator[None]:
    """Fail a test that made pyinit create its control socket in the host's /run.

    PID-namespace runs get a private tmpfs on /run (sandbox.UNSHARE_PID),
    other supervise runs PYINIT_CONTROL=none (sandbox.without_host_control).
    """
    existed = os.path.lexists(HOST_CONTROL_DIR)
    yield
    if not existed and os.path.lexists(HOST_CONTROL_DIR):
        import shutil

        shutil.rmtree(HOST_CONTROL_DIR, ignore_errors=True)
        pytest.fail(f"this test made pyinit create {HOST_CONTROL_DIR} on the host")


def _pids_hierarchy() -> Path | None:
    """Where new pids cgroups are made: the cgroup2 root with +pids, or the v1 pids mount."""
    root = Path("/sys/fs/cgroup")
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        return root if "pids" in controllers.read_text().split() else None
    v1 = root / "pids"
    return v1 if (v1 / "cgroup.procs").exists() else None


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A fresh pids cgroup, removed afterwards with whatever still runs in it."""
    parent = _pids_hierarchy()
    if parent is None:
        pytest.skip("no pids cgroup controller here")
    group = parent / f"pyinit-test-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        if parent.name != "pids":  # cgroup2: the controller must be enabled for children
            (parent / "cgroup.subtree_control").write_text("+pids")
        (group / "pids.max").write_text("max")
    except OSError as e:
        with contextlib.suppress(OSError):
            group.rmdir()
        pytest.skip(f"cannot make a pids cgroup here: {e}")
    try:
        yield group
    finally:
        for _ in range(100):
            procs = (group / "cgroup.procs").read_text().split()
            if not procs:
                break
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.02)
        group.rmdir()
