"""The host as pyinit found it: read once, at the start, then every decision is made from it.

The plan layer decides from this snapshot, not from fresh system calls
scattered over the code: what the plan says, ``--dry-run`` shows and the
run does are decided from the same facts, and tests can hand ``build_plan``
any host they like.
"""

from __future__ import annotations

import os

from pyinit.plan.capabilities import read_capability_sets
from pyinit.record import Record


class Host(Record):
    """Who and where pyinit runs: ids, groups, capabilities, its pid and parent."""

    __slots__ = ("capabilities", "gids", "groups", "pid", "ppid", "uids")
    pid: int
    ppid: int
    uids: tuple[int, int, int]  # real, effective, saved
    gids: tuple[int, int, int]  # real, effective, saved
    groups: tuple[int, ...]  # supplementary groups
    capabilities: tuple[tuple[str, int], ...]  # ("CapEff", mask), ... from /proc/self/status

    @property
    def euid(self) -> int:
        """The effective uid."""
        return self.uids[1]

    @property
    def egid(self) -> int:
        """The effective gid."""
        return self.gids[1]

    def capability_set(self, field: str) -> int:
        """The mask of one capability set (``CapEff``, ``CapInh``, ...); 0 if unknown."""
        return dict(self.capabilities).get(field, 0)


def read_host() -> Host:
    """Snapshot this process: a few system calls and one read of /proc/self/status."""
    return Host(
        pid=os.getpid(),
        ppid=os.getppid(),
        uids=os.getresuid(),
        gids=os.getresgid(),
        groups=tuple(os.getgroups()),
        capabilities=tuple(sorted(read_capability_sets().items())),
    )
