"""Stands in for PyInstaller's ctypes bootstrap hook in the standalone bundle.

packaging/pyinit.spec puts this module in place of PyInstaller's ``pyimod03_ctypes``,
which imports ctypes (loading _ctypes and libffi) before pyinit's first statement, only
to make ``ctypes.CDLL("libname")`` look in the bundle first.  pyinit calls
``ctypes.CDLL(None)`` alone (libc), later and only when a flag needs it, so the
bootstrap's ``pyimod03_ctypes.install()`` has nothing to do.
"""


def install() -> None:
    """Install nothing: pyinit loads no bundled library by name through ctypes."""
