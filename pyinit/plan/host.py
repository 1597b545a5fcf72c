"""The host as pyinit found it: read once, at the start, then every decision is made from it.

The plan layer decides from this snapshot, not from fresh system calls
scattered over the code: what the plan says, ``--dry-run`` shows and the
run does are decided from the same facts, and tests can hand ``build_plan``
any host they like.
"""

from __future__ import annotations

import os
import resource

from pyinit.plan.capabilities import read_capability_sets
from pyinit.record import Record


class Host(Record):
    """Who and where pyinit runs: ids, groups, capabilities, pid, session, terminal, limits."""

    __slots__ = (
        "capabilities",
        "controlling_terminal",
        "gids",
        "groups",
        "nr_open",
        "pgrp",
        "pid",
        "ppid",
        "rlimits",
        "sid",
        "uids",
    )
    pid: int
    ppid: int
    pgrp: int  # the process group pyinit is in
    sid: int  # the session pyinit is in
    controlling_terminal: bool  # whether /dev/tty opens: pyinit's session has a terminal
    uids: tuple[int, int, int]  # real, effective, saved
    gids: tuple[int, int, int]  # real, effective, saved
    groups: tuple[int, ...]  # supplementary groups
    capabilities: tuple[tuple[str, int], ...]  # ("CapEff", mask), ... from /proc/self/status
    rlimits: tuple[tuple[int, int, int], ...]  # (RLIMIT_*, soft, hard) of every resource
    nr_open: int | None  # fs.nr_open, the kernel's cap on RLIMIT_NOFILE (None: unknown)

    @property
    def euid(self) -> int:
        """The effective uid."""
        return self.uids[1]

    @property
    def egid(self) -> int:
        """The effective gid."""
        return self.gids[1]

    @property
    def real_ids(self) -> tuple[int, int]:
        """The real (uid, gid): what a user spec without a user or group part stands for."""
        return self.uids[0], self.gids[0]

    def capability_set(self, field: str) -> int:
        """The mask of one capability set (``CapEff``, ``CapInh``, ...); 0 if unknown."""
        return dict(self.capabilities).get(field, 0)

    def hard_limit(self, which: int) -> int:
        """The hard limit of ``which`` (``resource.RLIMIT_*``); RLIM_INFINITY if unknown."""
        for number, _, hard in self.rlimits:
            if number == which:
                return hard
        return resource.RLIM_INFINITY

    @property
    def fd_table_size(self) -> int:
        """How many descriptors pyinit may have: the RLIMIT_NOFILE hard limit, at most 2**31."""
        hard = self.hard_limit(resource.RLIMIT_NOFILE)
        return 2**31 if hard == resource.RLIM_INFINITY or hard > 2**31 else hard


def read_host() -> Host:
    """Snapshot this process: a few system calls and one read of /proc/self/status."""
    return Host(
        pid=os.getpid(),
        ppid=os.getppid(),
        pgrp=os.getpgrp(),
        sid=os.getsid(0),
        controlling_terminal=has_controlling_terminal(),
        uids=os.getresuid(),
        gids=os.getresgid(),
        groups=tuple(os.getgroups()),
        capabilities=tuple(sorted(read_capability_sets().items())),
        rlimits=_read_rlimits(),
        nr_open=_read_nr_open(),
    )


def has_controlling_terminal() -> bool:
    """Whether this process's session has a controlling terminal (``/dev/tty`` opens)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


#: The limits Linux has (getrlimit(2)); one Python lacks is skipped.
_RLIMIT_NAMES = (
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
    "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME",
)  # fmt: skip


def _read_rlimits() -> tuple[tuple[int, int, int], ...]:
    limits = []
    for name in _RLIMIT_NAMES:
        number = getattr(resource, "RLIMIT_" + name, None)
        if number is None:
            continue
        try:
            soft, hard = resource.getrlimit(number)
        except (OSError, ValueError):
            continue  # a limit this kernel does not know
        limits.append((number, soft, hard))
    return tuple(limits)


NR_OPEN_PATH = "/proc/sys/fs/nr_open"


def _read_nr_open() -> int | None:
    try:
        fd = os.open(NR_OPEN_PATH, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32).strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
