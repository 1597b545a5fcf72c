"""pyinit/frozen.py: the bundle launcher's additions to the environment are undone.

The real bundle is exercised by tests/e2e/test_e2e_standalone.py (`-- env` in the
example image); here the rule itself, in-process.
"""

from __future__ import annotations

import subprocess
import sys

from pyinit.frozen import restore_environment

BUNDLE = "/opt/pyinit/_internal"


def test_launcher_variables_removed_and_original_library_path_restored() -> None:
    """_PYI_*/_MEI* go; LD_LIBRARY_PATH becomes the container's; the rest stays."""
    environ = {
        "PATH": "/usr/bin:/bin",
        "LD_LIBRARY_PATH": f"{BUNDLE}:/opt/app/lib",
        "LD_LIBRARY_PATH_ORIG": "/opt/app/lib",
        "_PYI_ARCHIVE_FILE": "/opt/pyinit/pyinit",
        "_PYI_PARENT_PROCESS_LEVEL": "1",
        "_MEIPASS2": BUNDLE,
        "PYTHONPATH": "/srv/py",
    }
    restore_environment(environ)
    assert environ == {
        "PATH": "/usr/bin:/bin",
        "LD_LIBRARY_PATH": "/opt/app/lib",
        "PYTHONPATH": "/srv/py",
    }


def test_library_path_removed_when_the_container_had_none() -> None:
    """No LD_LIBRARY_PATH_ORIG: the container had no LD_LIBRARY_PATH, the target gets none."""
    environ = {"LD_LIBRARY_PATH": BUNDLE, "_PYI_LINUX_PROCESS_NAME": "pyinit", "HOME": "/root"}
    restore_environment(environ)
    assert environ == {"HOME": "/root"}


def test_pip_install_leaves_the_environment_alone() -> None:
    """Not frozen: `-- env` shows the launcher-like variables untouched (nothing to undo)."""
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/x", "_PYI_X": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pyinit", "--mode", "exec", "--", "env"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert "LD_LIBRARY_PATH=/x" in out and "_PYI_X=1" in out
