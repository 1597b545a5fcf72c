"""The few prctl/capset calls pyinit needs, through ctypes.

Imported only when a flag asks for one of them (ctypes costs ~3 ms of start-up).
Numbers are from linux/prctl.h and linux/capability.h (stable kernel ABI).
"""

from __future__ import annotations

import ctypes
import os

PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg2: int, what: str) -> None:
    if (
        _libc.prctl(
            option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
        )
        != 0
    ):
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant privileges again (setuid bits, file caps)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")


def set_child_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphans below us are reparented to us, not to the real PID 1."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def set_keep_caps(keep: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set across the uid change from root."""
    _prctl(PR_SET_KEEPCAPS, int(keep), "PR_SET_KEEPCAPS")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def set_capabilities(mask: int) -> None:
    """capset: effective = permitted = inheritable = ``mask`` for this process."""
    _capset(mask, mask, mask)


def limit_inheritable(mask: int) -> None:
    """capset: cut the inheritable set down to ``mask``, effective and permitted unchanged.

    An inheritable capability left over from the runtime (``setpriv
    --inh-caps``, old Docker) is granted again by any binary whose file
    capabilities name it (``setcap cap_dac_override+ei``), even to a non-root uid.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capget: {os.strerror(errno)}")
    effective = data[0].effective | data[1].effective << 32
    permitted = data[0].permitted | data[1].permitted << 32
    inheritable = data[0].inheritable | data[1].inheritable << 32
    _capset(effective, permitted, inheritable & mask)


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capset: {os.strerror(errno)}")


def raise_ambient(capability: int) -> None:
    """PR_CAP_AMBIENT_RAISE: the capability survives execve of an unprivileged binary."""
    if (
        _libc.prctl(
            PR_CAP_AMBIENT,
            PR_CAP_AMBIENT_RAISE,
            ctypes.c_ulong(capability),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        != 0
    ):
        errno = ctypes.get_errno()
        raise OSError(errno, f"PR_CAP_AMBIENT_RAISE: {os.strerror(errno)}")
