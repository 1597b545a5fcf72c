"""Root setup: what the official images' docker-entrypoint.sh do as root, from flags.

:func:`apply_root_setup` carries out a finished plan's setup steps, as root,
before the step-down, in this order:

1. ``--mkdir``: create each directory (and missing parents), owned by the
   owner its path names (``=OWNER``) or else the target, with the exact mode asked;
2. ``--chown``: give each tree to its owner, or else the target (see :mod:`pyinit.root.chown`);
3. ``--pre`` then ``--pre-dir`` hooks, in order, as root, with the plan's
   environment; the first failure stops start-up (exit 125).

``--rlimit`` is not part of it: :func:`apply_rlimits` is called for the
target only (in the forked child in supervise mode, just before the
step-down in exec mode), so ``nofile=8`` cannot starve pyinit as PID 1.

``--mkdir`` follows systemd's ``StateDirectory=``: only the last component
is the target's; parents that have to be created belong to root, mode 0755.
The last component is never followed if it is a symlink, and a symlink on
the way is followed only when root controls it (owned by root, in a
directory only root can change), and its target is opened by the same
rules, component by component: a volume's owner cannot redirect a
``--mkdir`` into /etc, not even through a root-made link into its volume.
Every step works on descriptors, never re-resolving a path it has checked.
"""

from __future__ import annotations

import errno
import os
import stat

from pyinit import log
from pyinit.errors import SIGNAL_EXIT_BASE, PyinitError
from pyinit.plan import format_limit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyinit.plan import MkdirStep, Plan, RlimitStep
    from pyinit.plan.userspec import Identity

#: Mode of a --mkdir directory created without an explicit MODE, and of created parents.
DEFAULT_MKDIR_MODE = 0o755

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def target_ids(plan: Plan) -> tuple[int, int]:
    """The uid and gid setup gives things to: the target's, or the current user's."""
    if plan.identity is not None:
        return plan.identity.uid, plan.identity.gid
    return os.geteuid(), os.getegid()


def owner_ids(plan: Plan, owner: Identity | None) -> tuple[int, int]:
    """The uid and gid one ``--mkdir``/``--chown`` path goes to: its ``=OWNER``, else the target."""
    if owner is not None:
        return owner.uid, owner.gid
    return target_ids(plan)


def apply_root_setup(plan: Plan) -> None:
    """Carry out the plan's root-setup steps in order: mkdir, chown, pre hooks.

    Raises PyinitError (exit 125) naming the flag and path on the first
    failure; nothing after the failing step runs.
    """
    if not plan.root_setup:
        return
    for step in plan.mkdirs:
        make_directory(step, *owner_ids(plan, step.owner))
    if plan.chowns:
        from pyinit.root.chown import chown_tree

        for c in plan.chowns:
            uid, gid = owner_ids(plan, c.owner)
            chown_tree(
                c.path,
                uid,
                gid,
                policy=c.policy,
                cross_mounts=c.cross_mounts,
                named_owner=c.owner is not None,
            )
    if plan.pre_hooks:
        run_pre_hooks(plan)


# --- --mkdir ---------------------------------------------------------------------------


def make_directory(step: MkdirStep, uid: int, gid: int) -> bool:
    """Create ``step.path`` owned by uid:gid with ``step.mode``; True if it was created.

    An existing directory gets its owner fixed, and its mode when one was
    asked; an existing non-directory or a symlink at ``step.path`` is an
    error.  The mode is applied with fchmod after creation, so the umask
    does not interfere.  A path that names its owner is created only in
    directories root or that owner alone can change (see
    :func:`pyinit.root.chown.refuse_shared_directory`).
    """
    parent_path, _, leaf = step.path.rpartition("/")
    guard = uid if step.owner is not None else None
    parent_fd = _open_parents(step.path, parent_path, guard)
    try:
        sticky_shared = _refuse_shared(parent_fd, parent_path or "/", step.path, guard)
        created = _mkdir_at(parent_fd, leaf, 0o700, step.path)
        try:
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            raise _mkdir_error(step.path, step.path, parent_fd, leaf, e) from None
    finally:
        os.close(parent_fd)
    try:
        st = os.fstat(fd)
        if sticky_shared:
            from pyinit.root.chown import refuse_foreign_entry

            refuse_foreign_entry(st, step.path, uid, "--mkdir")
        if st.st_uid != uid or st.st_gid != gid:
            os.fchown(fd, uid, gid)
        mode = step.mode if step.mode is not None else DEFAULT_MKDIR_MODE if created else None
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError as e:
        raise PyinitError(f"--mkdir {step.path}: {_reason(e)}") from None
    finally:
        os.close(fd)
    log.info(f"--mkdir {step.path}: {'created' if created else 'exists'}, owner {uid}:{gid}")
    return created


def _open_parents(path: str, parent_path: str, guard: int | None = None) -> int:
    """Open (creating as needed, root-owned 0755) every directory above the leaf.

    ``guard``: the named owner's uid; each directory is checked before
    anything is created in it (see _refuse_shared).
    """
    fd = os.open("/", _DIR_FLAGS)
    done = ""
    try:
        for name in parent_path.split("/")[1:]:
            _refuse_shared(fd, done or "/", path, guard)
            done += "/" + name
            if _mkdir_at(fd, name, DEFAULT_MKDIR_MODE, path):
                _fix_created_parent(fd, name, path)
            child = _open_parent_component(fd, name, done, path, guard=guard)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _mkdir_at(dir_fd: int, name: str, mode: int, path: str) -> bool:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        return False
    except OSError as e:
        raise PyinitError(f"--mkdir {path}: cannot create {name!r}: {_reason(e)}") from None
    return True


def _fix_created_parent(dir_fd: int, name: str, path: str) -> None:
    # os.mkdir's mode is filtered by the umask; parents get exactly 0755.
    try:
        os.chmod(name, DEFAULT_MKDIR_MODE, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as e:
        raise PyinitError(f"--mkdir {path}: {_reason(e)}") from None


#: Symlinks followed while opening one --mkdir path (the kernel's MAXSYMLINKS).
MAX_SYMLINKS = 40


def _open_parent_component(
    dir_fd: int,
    name: str,
    done: str,
    path: str,
    hops: list[int] | None = None,
    guard: int | None = None,
) -> int:
    _refuse_shared(dir_fd, done.rpartition("/")[0] or "/", path, guard)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise PyinitError(f"--mkdir {path}: cannot open {done}: {_reason(e)}") from None
    # A symlink (e.g. /var/run -> /run): follow it only if root controls it.
    link = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(link.st_mode):
        raise PyinitError(f"--mkdir {path}: {done} exists and is not a directory")
    if link.st_uid != 0 or not _root_controlled(dir_fd):
        raise PyinitError(
            f"--mkdir {path}: {done} is a symbolic link not controlled by root "
            f"(owner uid {link.st_uid}); refusing to follow it"
        )
    hops = [0] if hops is None else hops
    hops[0] += 1
    if hops[0] > MAX_SYMLINKS:
        raise PyinitError(f"--mkdir {path}: too many levels of symbolic links at {done}")
    target = os.readlink(name, dir_fd=dir_fd)
    return _open_link_target(dir_fd, target, done, path, hops, guard)


def _refuse_shared(dir_fd: int, shown: str, path: str, guard: int | None) -> bool:
    """With a named owner (``guard``, its uid): refuse a directory a third user could change.

    True for a sticky directory others can write: its entry must then be root's or the owner's.
    """
    if guard is None:
        return False
    from pyinit.root.chown import refuse_shared_directory

    return refuse_shared_directory(dir_fd, shown, path, guard, "--mkdir")


def _open_link_target(
    dir_fd: int, target: str, done: str, path: str, hops: list[int], guard: int | None
) -> int:
    """Open a root-controlled link's target with the same rules, one component at a time.

    The kernel must not resolve it: a root-made link into a volume
    (/var/lib/app -> /data/app) would otherwise follow whatever link the
    volume's owner put there.
    """
    fd = os.open("/", _DIR_FLAGS) if target.startswith("/") else os.dup(dir_fd)
    where = "" if target.startswith("/") else done.rpartition("/")[0]
    try:
        for name in target.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                # ".." is never a symlink: the kernel's parent of where we are.
                where = where.rpartition("/")[0]
                child = os.open("..", _DIR_FLAGS, dir_fd=fd)
            else:
                where += "/" + name
                child = _open_parent_component(fd, name, where, path, hops, guard)
            os.close(fd)
            fd = child
    except OSError as e:
        os.close(fd)
        raise PyinitError(f"--mkdir {path}: cannot open {done} -> {target}: {_reason(e)}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _root_controlled(dir_fd: int) -> bool:
    """Whether only root can replace entries of this directory."""
    st = os.fstat(dir_fd)
    writable_by_others = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    return st.st_uid == 0 and not writable_by_others


def _mkdir_error(path: str, shown: str, dir_fd: int, name: str, e: OSError) -> PyinitError:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        what = "is a symbolic link (never followed)" if is_link else "exists and is not a directory"
        return PyinitError(f"--mkdir {path}: {shown} {what}")
    return PyinitError(f"--mkdir {path}: {_reason(e)}")


def _reason(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "read-only filesystem"
    return (e.strerror or str(e)).lower()


# --- --rlimit --------------------------------------------------------------------------


def apply_rlimits(limits: Iterable[RlimitStep]) -> None:
    """Set ``--rlimit`` ``limits`` on this process, which is about to become the target."""
    for limit in limits:
        set_rlimit(limit)


def set_rlimit(step: RlimitStep) -> None:
    """setrlimit for one ``--rlimit``; PyinitError naming the limit on failure."""
    import resource

    soft, hard = format_limit(step.soft), format_limit(step.hard)
    try:
        resource.setrlimit(step.resource, (step.soft, step.hard))
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        hint = ""
        if step.name == "nofile":
            hint = f" (the kernel caps nofile at /proc/sys/fs/nr_open = {_nr_open()})"
        raise PyinitError(f"--rlimit {step.name}={soft}:{hard}: {reason}{hint}") from None
    log.info(f"--rlimit {step.name}: soft {soft}, hard {hard}")


def _nr_open() -> str:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


# --- --pre / --pre-dir -----------------------------------------------------------------


def run_pre_hooks(plan: Plan) -> None:
    """Run the pre hooks in order as root; stop at the first failure (exit 125).

    Signals pyinit receives meanwhile (it may be PID 1) are relayed to the
    running hook; after a stop signal (TERM, INT, QUIT) the target is not
    started and pyinit exits with 128+N, as if the target had been stopped.
    """
    import signal

    from pyinit.plan.signals import STOP_SIGNALS
    from pyinit.root.hooks import SignalRelay, describe_returncode, run_hook

    with SignalRelay(sorted(STOP_SIGNALS | {signal.SIGHUP}), plan.stop_timeout) as relay:
        for hook in plan.pre_hooks:
            _stop_if_asked(relay.received, f"before pre hook {hook.label}")
            log.info(f"running pre hook {hook.label}")
            code = run_hook(hook, plan.env, relay=relay)
            _stop_if_asked(relay.received, f"during pre hook {hook.label}")
            if code != 0:
                raise PyinitError(f"pre hook {hook.label} {describe_returncode(code)}")


def _stop_if_asked(received: list[int], when: str) -> None:
    """Raise (exit 128+N) if a stop signal N arrived: a stopped container must not start."""
    from pyinit.plan.signals import STOP_SIGNALS, signal_name

    stops = [s for s in received if s in STOP_SIGNALS]
    if stops:
        raise PyinitError(
            f"received {signal_name(stops[0])} {when}: not starting the target",
            SIGNAL_EXIT_BASE + stops[0],
        )
