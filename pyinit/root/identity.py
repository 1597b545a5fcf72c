"""Step-down: become the target user irreversibly, then prove it.

The order matters.  setgroups and setresgid need CAP_SETGID, which is lost
with root's uid, so groups go first and the uid last.  setresuid sets the
real, effective *and saved* ids: with a saved uid of 0 the process could
simply switch back.  Afterwards the drop is verified: ids and groups are what
was asked, and ``setuid(0)`` fails.
"""

from __future__ import annotations

import os

from pyinit.errors import PyinitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan.userspec import Identity


def target_groups(identity: Identity, extra_groups: tuple[int, ...] = ()) -> list[int]:
    """The supplementary groups the target gets: its own, then ``--groups``, no duplicates."""
    return list(dict.fromkeys(identity.groups + extra_groups))


def step_down(identity: Identity, extra_groups: tuple[int, ...] = ()) -> None:
    """setgroups, setresgid, setresuid to ``identity``, then verify (PyinitError 125 on failure)."""
    groups = switch_ids(identity, extra_groups)
    verify_step_down(identity, groups)


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


def verify_step_down(identity: Identity, groups: list[int]) -> None:
    """Check the ids and groups are exactly as asked and root cannot be regained."""
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
