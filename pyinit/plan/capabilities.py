"""Linux capabilities: names, what this process has (CapEff), and pre-flight checks.

Read from ``/proc/self/status`` rather than libcap: no dependency, no ctypes
on the exec path.  A container started with ``--cap-drop ALL`` or a
Kubernetes securityContext that drops capabilities still runs pyinit as
uid 0, so "am I root" is not enough: each planned action is mapped to the
capability it needs and checked before anything is changed.
"""

from __future__ import annotations

import os

from pyinit.errors import UsageError, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# Numbers from linux/capability.h; stable kernel ABI.
CAPABILITY_NUMBERS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "LINUX_IMMUTABLE": 9,
    "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "IPC_LOCK": 14,
    "IPC_OWNER": 15,
    "SYS_MODULE": 16,
    "SYS_RAWIO": 17,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_PACCT": 20,
    "SYS_ADMIN": 21,
    "SYS_BOOT": 22,
    "SYS_NICE": 23,
    "SYS_RESOURCE": 24,
    "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26,
    "MKNOD": 27,
    "LEASE": 28,
    "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30,
    "SETFCAP": 31,
    "MAC_OVERRIDE": 32,
    "MAC_ADMIN": 33,
    "SYSLOG": 34,
    "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36,
    "AUDIT_READ": 37,
    "PERFMON": 38,
    "BPF": 39,
    "CHECKPOINT_RESTORE": 40,
}


def parse_capability(text: str, flag: str) -> str:
    """Normalise ``net_bind_service`` / ``CAP_NET_BIND_SERVICE`` to ``NET_BIND_SERVICE``."""
    name = text.strip().upper().removeprefix("CAP_")
    # ASCII only: str.upper() maps e.g. "\u017f" to "S", which is no capability name.
    if not text.isascii() or name not in CAPABILITY_NUMBERS:
        raise UsageError(f"{flag} {quoted(text)}: unknown capability (e.g. NET_BIND_SERVICE)")
    return name


def read_capability_sets(status_path: str = "/proc/self/status") -> dict[str, int]:
    """Every ``Cap*`` mask of this process (CapInh, CapPrm, CapEff, CapBnd, CapAmb), one read."""
    try:
        fd = os.open(status_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        return read_capability_sets_from(fd)
    finally:
        os.close(fd)


def read_capability_sets_from(status_fd: int) -> dict[str, int]:
    """The ``Cap*`` masks in the /proc/PID/status open as ``status_fd``, read from its start.

    Bytes, decoded here: the ``Name:`` line holds whatever bytes the process
    name has (and a text-mode ``open`` would load a codec module for it).
    """
    data = b""
    try:
        # seq_file: a read at offset 0 generates the text afresh (the fd may be reused).
        while chunk := os.pread(status_fd, 1 << 16, len(data)):
            data += chunk
    except OSError:
        return {}
    return parse_capability_sets(data.decode("ascii", "replace"))


def parse_capability_sets(status: str) -> dict[str, int]:
    """The ``Cap*`` masks in the text of a /proc/PID/status file."""
    sets: dict[str, int] = {}
    for line in status.splitlines():
        if line.startswith("Cap"):
            name, _, value = line.partition(":")
            sets[name] = int(value.split()[0], 16)
    return sets


def capability_mask(names: Iterable[str]) -> int:
    """The bit mask of capability ``names``."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def capability_names(mask: int) -> list[str]:
    """The names of the capabilities in ``mask``, by number."""
    return [name for name, number in CAPABILITY_NUMBERS.items() if mask >> number & 1]


def has_capability(name: str, mask: int) -> bool:
    """Whether the capability set ``mask`` (e.g. the host snapshot's CapEff) holds ``name``."""
    return bool(mask >> CAPABILITY_NUMBERS[name] & 1)


def missing_capabilities(needed: dict[str, str], mask: int) -> list[tuple[str, str]]:
    """The (capability, reason) pairs of ``needed`` that the effective set ``mask`` lacks."""
    return [(cap, why) for cap, why in needed.items() if not has_capability(cap, mask)]
