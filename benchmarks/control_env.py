"""Keep the benchmarked pyinits off the host's /run: a private control socket path per run.

pyinit in supervise mode listens on /run/pyinit/control.sock by default
(docs/operate.md).  A PID namespace made by ``unshare --mount-proc`` still
shares the host's /run, so every benchmark process points PYINIT_CONTROL at
a directory of its own (root's, 0700, removed at exit): the control server
is still part of what is measured, and the host's /run is never touched.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def private_control_socket() -> str:
    """Set PYINIT_CONTROL (unless the caller did) to a socket in a private directory."""
    if not os.environ.get("PYINIT_CONTROL"):
        directory = tempfile.mkdtemp(prefix="pyinit-bench-control-")
        atexit.register(shutil.rmtree, directory, True)
        os.environ["PYINIT_CONTROL"] = f"{directory}/control.sock"
    return os.environ["PYINIT_CONTROL"]
