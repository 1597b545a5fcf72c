"""``--mkdir``: create a directory and its missing parents, as root, without being redirected.

``--mkdir`` follows systemd's ``StateDirectory=``: only the last component
is the target's; parents that have to be created belong to root, mode 0755.
The last component is never followed if it is a symlink, and a symlink on
the way is followed only when root controls it (owned by root, in a
directory only root can change), and its target is opened by the same
rules, component by component: a volume's owner cannot redirect a
``--mkdir`` into /etc, not even through a root-made link into its volume.
Every step works on descriptors, never re-resolving a path it has checked.
Called by :func:`pyinit.root.setup.apply_root_setup`, in the plan's order.
"""

from __future__ import annotations

import errno
import os
import stat

from pyinit import log
from pyinit.errors import PyinitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import MkdirStep

#: Mode of a --mkdir directory created without an explicit MODE, and of created parents.
DEFAULT_MKDIR_MODE = 0o755

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
