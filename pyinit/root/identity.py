"""Step-down: become the target user irreversibly, then prove it.

The order matters.  setgroups and setresgid need CAP_SETGID, which is lost
with root's uid, so groups go first and the uid last.  setresuid sets the
real, effective *and saved* ids: with a saved uid of 0 the process could
simply switch back.  The inheritable capability set is cut down too (the uid
change leaves it alone).  Afterwards the drop is verified from the kernel's
view: ids and groups are what was asked, ``setuid(0)`` fails, and
/proc/self/status shows no capability beyond ``--keep-cap``.
"""

from __future__ import annotations

import os

from pyinit.errors import PyinitError
from pyinit.plan.capabilities import (
    capability_names,
    read_capability_sets,
    read_capability_sets_from,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan.userspec import Identity


def target_groups(identity: Identity, extra_groups: tuple[int, ...] = ()) -> list[int]:
    """The supplementary groups the target gets: its own, then ``--groups``, no duplicates."""
    return list(dict.fromkeys(identity.groups + extra_groups))


def step_down(
    identity: Identity, extra_groups: tuple[int, ...] = (), status_fd: int | None = None
) -> None:
    """setgroups, setresgid, setresuid to ``identity``, clear CapInh, verify (PyinitError 125).

    ``status_fd``: /proc/self/status opened beforehand, for when no new
    descriptor can be opened any more (``--rlimit nofile=3``).
    """
    # Before the uid change: after it, pyinit's Python (ctypes) may be unreadable.
    limit_inheritable(0, status_fd)
    groups = switch_ids(identity, extra_groups)
    verify_step_down(identity, groups, 0, status_fd)


def open_status() -> int | None:
    """/proc/self/status, opened now to be read later (None when there is no /proc)."""
    try:
        return os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def capability_sets(status_fd: int | None = None) -> dict[str, int]:
    """This process's ``Cap*`` masks, read now (through ``status_fd`` when given)."""
    if status_fd is None:
        return read_capability_sets()
    return read_capability_sets_from(status_fd)


def limit_inheritable(keep_mask: int, status_fd: int | None = None) -> None:
    """Cut the inheritable capability set down to ``keep_mask`` (PyinitError 125 on failure).

    ctypes is only loaded when there is something to clear: a runtime that
    starts us with an empty CapInh (today's Docker, Kubernetes) costs nothing.
    """
    if not capability_sets(status_fd).get("CapInh", 0) & ~keep_mask:
        return
    from pyinit.root import prctl

    try:
        prctl.limit_inheritable(keep_mask)
    except OSError as e:
        raise PyinitError(f"cannot clear the inheritable capability set: {e.strerror}") from None


def switch_ids(identity: Identity, extra_groups: tuple[int, ...] = ()) -> list[int]:
    """setgroups, setresgid, setresuid (no verification); returns the groups set."""
    groups = target_groups(identity, extra_groups)
    try:
        # Never leave root's supplementary groups behind: always set the list,
        # even when it is empty (the Popen(user=...) trap).
        os.setgroups(groups)
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    except OSError as e:
        raise PyinitError(
            f"--user {identity.spec!r}: cannot switch to uid {identity.uid} gid {identity.gid}: "
            f"{e.strerror}"
        ) from None
    return groups


def verify_step_down(
    identity: Identity, groups: list[int], keep_mask: int = 0, status_fd: int | None = None
) -> None:
    """Check ids, groups and capability sets are exactly as asked and root cannot be regained.

    ``keep_mask`` is the ``--keep-cap`` set: as a non-root uid the permitted,
    effective and inheritable sets hold nothing else and the ambient set
    exactly that.
    """
    want_uids = (identity.uid,) * 3
    want_gids = (identity.gid,) * 3
    problems = []
    if os.getresuid() != want_uids:
        problems.append(f"uids are {os.getresuid()}, expected {want_uids}")
    if os.getresgid() != want_gids:
        problems.append(f"gids are {os.getresgid()}, expected {want_gids}")
    if sorted(set(os.getgroups())) != sorted(set(groups)):
        problems.append(f"groups are {sorted(os.getgroups())}, expected {sorted(groups)}")
    if identity.uid != 0 and _can_regain_root():
        problems.append("setuid(0) succeeded after the drop")
    problems.extend(_capability_problems(identity.uid, keep_mask, capability_sets(status_fd)))
    if problems:
        raise PyinitError(
            f"--user {identity.spec!r}: step-down not verified: {'; '.join(problems)}"
        )


def _can_regain_root() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True


def _capability_problems(uid: int, keep_mask: int, sets: dict[str, int]) -> list[str]:
    if not sets:
        return []  # no /proc: the ids checks above are all we can do
    # Root keeps its permitted set by design (--user root only changes groups).
    fields = ("CapInh",) if uid == 0 else ("CapInh", "CapPrm", "CapEff")
    problems = [
        f"{field} holds {', '.join(capability_names(extra)) or hex(extra)}"
        for field in fields
        if (extra := sets.get(field, 0) & ~keep_mask)
    ]
    if uid != 0 and sets.get("CapAmb", 0) != keep_mask:
        shown = ", ".join(capability_names(sets.get("CapAmb", 0))) or "nothing"
        expected = ", ".join(capability_names(keep_mask)) or "nothing"
        problems.append(f"CapAmb holds {shown}, expected {expected}")
    return problems
