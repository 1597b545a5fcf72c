"""The standalone bundle only (PyInstaller, ``sys.frozen``): give back the container's environment.

The bundle's launcher re-executes itself (same PID) with ``LD_LIBRARY_PATH``
pointing into the bundle, the value the container had kept as
``LD_LIBRARY_PATH_ORIG``, and ``_PYI_*`` variables of its own.  By the time
pyinit runs, the dynamic linker has read ``LD_LIBRARY_PATH`` (it does so once,
at start) and the bootloader is done with the rest, so none of it is needed any
more; left in place, every target, sidecar, task and hook would inherit it, and
redis or postgres would load the bundle's libssl and libcrypto instead of their
own.  ``PYTHON*`` variables are not touched by the launcher (the bundled
interpreter ignores them), so they reach the target as the container set them.
See docs/standalone.md.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import MutableMapping

#: Prefixes of the variables PyInstaller's launcher sets for itself.
LAUNCHER_PREFIXES = ("_PYI_", "_MEI")


def restore_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Undo what the bundle's launcher added to ``environ``: it becomes the container's own."""
    for name in [name for name in environ if name.startswith(LAUNCHER_PREFIXES)]:
        del environ[name]
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        environ.pop("LD_LIBRARY_PATH", None)
    else:
        environ["LD_LIBRARY_PATH"] = original
