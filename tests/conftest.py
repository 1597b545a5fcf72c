"""Shared fixtures: the user sandbox (see :mod:`sandbox`) and how to start pyinit."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
