"""``--chown``: give a tree to the target user, safely and fast.

What the official images do with ``find . \\! -user redis -exec chown redis {} +``,
without a subprocess and without its traps:

* **Symlinks are never followed.**  A link in a volume pointing at
  /etc/shadow is changed itself (``lchown``), never its target, and a link to
  a directory is never descended.  The walk is done with descriptors: every
  directory is opened relative to its parent's descriptor with
  ``O_NOFOLLOW``, so a directory swapped for a symlink between listing and
  descending makes the open fail instead of leading the walk out of the tree;
  directories are changed through their own descriptor (``fchown``) and other
  entries with ``fchownat(..., AT_SYMLINK_NOFOLLOW)``.
* **The path is opened component by component** from ``/`` with
  ``O_NOFOLLOW``: a symlink anywhere in ``PATH`` (``vol/app`` swapped for a
  link by the volume's owner) is refused, naming the link, instead of
  leading the walk into a tree the service user does not own.
* **Other mounts are left alone** (unless ``cross_mounts``), decided from
  the opened directory itself: its mount id (``mnt_id`` in
  /proc/self/fdinfo) must be the top's.  A path or a mountinfo snapshot
  could be raced (the service user swaps two directories with
  ``renameat2(RENAME_EXCHANGE)`` while the walk runs, so a bind mount from
  the same file system, which ``st_dev`` cannot see, turns up under a name
  that was not a mount point); a descriptor cannot.  A non-directory is a
  mount point (a file bind-mounted into the tree) only when its ``st_ino``
  differs from the ``d_ino`` its directory lists (the mount hides the
  entry's own inode) or its device differs; only such entries, and only
  when they need changing, pay for an exact mount-id check.  A mount point
  cannot be renamed or replaced from inside the mount namespace (EBUSY), so
  a name checked in a held directory stays what it was.
* **Only what differs is changed**: an entry already owned by uid:gid costs
  one ``fstatat`` and nothing else, so a second start is cheap and a
  read-only volume that is already right is not an error.
* One pass, in-process, O(depth) descriptors; one small /proc read per
  directory.

Hard links are not special-cased: a hard link to a file outside the tree can
only exist on the same file system, and the kernel's ``fs.protected_hardlinks``
(on by default) stops users from linking files they do not own.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from pyinit import log
from pyinit.errors import PyinitError
from pyinit.record import Record

POLICIES = ("always", "on-root-mismatch")

#: Seconds between progress lines during a long walk.
PROGRESS_INTERVAL = 5.0

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_VANISHED = (errno.ENOENT,)
_NOT_A_DIRECTORY = (errno.ELOOP, errno.ENOTDIR)

_REASONS = {
    errno.EROFS: "read-only filesystem",
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (immutable file, or no CAP_CHOWN?)",
    errno.EMFILE: "too many open files (tree deeper than the nofile limit allows)",
    errno.EDQUOT: "disk quota exceeded",
}


class ChownStats(Record):
    """What a ``chown_tree`` call did."""

    __slots__ = ("changed", "elapsed", "path", "seen", "skipped_mounts", "walked")
    path: str
    #: Entries looked at (the top included).
    seen: int
    #: Entries whose owner or group was changed.
    changed: int
    #: Mount points left alone (with everything below them).
    skipped_mounts: int
    #: Seconds spent.
    elapsed: float
    #: False when the policy decided the walk was not needed.
    walked: bool


def chown_tree(
    path: str,
    uid: int,
    gid: int,
    *,
    policy: str = "always",
    cross_mounts: bool = False,
    flag: str = "--chown",
    named_owner: bool = False,
) -> ChownStats:
    """Give ``path`` and everything below it to ``uid:gid``; never follows symlinks.

    ``path`` is absolute and normalised (the plan does that).  ``policy`` is
    ``always`` (walk the whole tree) or ``on-root-mismatch`` (walk only when
    ``path`` itself is not owned by uid:gid, like Kubernetes'
    fsGroupChangePolicy: OnRootMismatch).  No component of ``path`` may be
    a symlink; ``path`` may be a single file.  ``named_owner`` (the path
    named its owner): every directory above ``path`` must also be one only
    root or ``uid`` can change (see :func:`refuse_shared_directory`).
    Raises PyinitError (exit 125) naming ``flag``, ``path`` and the entry
    that could not be changed.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown chown policy {policy!r}")
    walk = _Walk(path, uid, gid, cross_mounts, flag)
    parent_fd, leaf = open_parent_nofollow(path, flag, uid if named_owner else None)
    try:
        try:
            top = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
        except OSError as e:
            raise walk.error(path, e) from None
        shown = path.rpartition("/")[0] or "/"
        if named_owner and refuse_shared_directory(parent_fd, shown, path, uid, flag):
            refuse_foreign_entry(top, path, uid, flag)
        if stat.S_ISLNK(top.st_mode):
            raise PyinitError(
                f"{flag} {path}: is a symbolic link; pyinit never follows symlinks "
                "(name the directory it points to)"
            )
        if policy == "on-root-mismatch" and top.st_uid == uid and top.st_gid == gid:
            log.info(f"{flag} {path}: already owned by {uid}:{gid}, not walking (on-root-mismatch)")
            return walk.stats(walked=False)
        if stat.S_ISDIR(top.st_mode):
            walk.run_directory(walk.open_top(parent_fd, leaf))
        else:
            walk.seen = 1
            walk.change_entry(parent_fd, leaf, path, top=True)
    finally:
        os.close(parent_fd)
    stats = walk.stats(walked=True)
    log.info(
        f"{flag} {path}: {stats.seen} entries, {stats.changed} changed, in {stats.elapsed:.2f}s"
    )
    return stats


def open_parent_nofollow(path: str, flag: str, owner_uid: int | None = None) -> tuple[int, str]:
    """Open the directory holding ``path``'s last component, refusing any symlink on the way.

    Returns (descriptor, last component).  Each component is opened relative
    to the previous one with ``O_NOFOLLOW``: nothing between ``/`` and the
    leaf can redirect the walk.  PyinitError names the link (exit 125).
    With ``owner_uid``, each directory passed through is also checked with
    :func:`refuse_shared_directory`.
    """
    names = path.split("/")[1:]
    if not path.startswith("/") or not names or any(n in ("", ".", "..") for n in names):
        raise ValueError(f"{flag}: {path!r} is not a normalised absolute path")
    fd = os.open("/", _DIR_FLAGS)
    done = ""
    try:
        for name in names[:-1]:
            if owner_uid is not None:
                refuse_shared_directory(fd, done or "/", path, owner_uid, flag)
            done += "/" + name
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise _component_error(fd, name, done, path, flag, e) from None
            os.close(fd)
            fd = child
        if owner_uid is not None:
            refuse_shared_directory(fd, done or "/", path, owner_uid, flag)
    except BaseException:
        os.close(fd)
        raise
    return fd, names[-1]


def refuse_shared_directory(dir_fd: int, shown: str, path: str, owner_uid: int, flag: str) -> bool:
    """Refuse a directory above a named owner's path that a third user could change.

    A path that names its owner (``--chown /data/app=alice``) brings in a
    second user besides the main's: whoever else can write a directory on
    the way could swap ``app`` for a tree of their own and have pyinit give
    it to alice.  So each such directory must belong to root or the owner
    and have no group or other write bit, unless it is sticky (``/tmp``):
    there only an entry's owner can rename it, so the entry below must be
    root's or the owner's.  Returns True in that case: the caller checks
    the last entry with :func:`refuse_foreign_entry` (each directory below
    is checked here, as the next one on the way).
    """
    st = os.fstat(dir_fd)
    shared = bool(st.st_mode & 0o022)
    if st.st_uid in (0, owner_uid) and (not shared or st.st_mode & stat.S_ISVTX):
        return shared
    mode = stat.S_IMODE(st.st_mode)
    raise PyinitError(
        f"{flag} {path}: {shown} (owner uid {st.st_uid}, mode {mode:04o}) can be changed by "
        f"users other than root and uid {owner_uid}, who could swap what {flag} gives to uid "
        f"{owner_uid}; a path naming its owner must lie in directories only root or that "
        "owner can change"
    )


def refuse_foreign_entry(st: os.stat_result, path: str, owner_uid: int, flag: str) -> None:
    """In a sticky shared directory: refuse a last entry neither root's nor the named owner's."""
    if st.st_uid not in (0, owner_uid):
        raise PyinitError(
            f"{flag} {path}: belongs to uid {st.st_uid} in a directory others can write (sticky);"
            f" refusing to give another user's entry to uid {owner_uid}"
        )


def _component_error(
    dir_fd: int, name: str, done: str, path: str, flag: str, e: OSError
) -> PyinitError:
    if e.errno in _NOT_A_DIRECTORY:
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            return PyinitError(
                f"{flag} {path}: {done} is a symbolic link; pyinit never follows symlinks "
                "in a --chown path (name the real path)"
            )
        return PyinitError(f"{flag} {path}: {done} is not a directory")
    reason = _REASONS.get(e.errno or 0, e.strerror or str(e))
    return PyinitError(f"{flag} {path}: {reason}")


class _Walk:
    """The state of one tree walk: target ids, counters, the top's mount, progress clock."""

    def __init__(self, top: str, uid: int, gid: int, cross_mounts: bool, flag: str) -> None:
        self.top = top
        self.uid = uid
        self.gid = gid
        self.cross_mounts = cross_mounts
        self.flag = flag
        self.seen = 0
        self.changed = 0
        self.skipped_mounts = 0
        #: The top's device and mount id: entries elsewhere are other mounts.
        self.dev = -1
        self.mnt_id: int | None = None
        self.started = time.monotonic()
        self.next_progress = self.started + PROGRESS_INTERVAL

    def stats(self, walked: bool) -> ChownStats:
        """The counters so far as a ChownStats."""
        return ChownStats(
            path=self.top,
            seen=self.seen,
            changed=self.changed,
            skipped_mounts=self.skipped_mounts,
            elapsed=time.monotonic() - self.started,
            walked=walked,
        )

    def error(self, path: str, e: OSError) -> PyinitError:
        """A PyinitError for a failure on ``path`` below (or at) the top."""
        reason = _REASONS.get(e.errno or 0, e.strerror or str(e))
        where = "" if path == self.top else f" cannot change {path}:"
        return PyinitError(f"{self.flag} {self.top}:{where} {reason}")

    # --- mounts -----------------------------------------------------------------------

    def _other_mount(self, fd: int, st: os.stat_result) -> bool:
        """Whether the open directory ``fd`` (stat ``st``) lies on another mount than the top."""
        if st.st_dev != self.dev:
            return True
        mnt_id = _mount_id(fd)
        # Without /proc only st_dev can tell; the top's mount id is unknown then too.
        return mnt_id is not None and self.mnt_id is not None and mnt_id != self.mnt_id

    def _mount_point_at(self, dir_fd: int, name: str, st: os.stat_result) -> bool:
        """Whether entry ``name`` of ``dir_fd`` is a mount point (a file bind-mounted there)."""
        if st.st_dev != self.dev:
            return True
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return True  # gone or unreadable: not ours to change
        try:
            mnt_id = _mount_id(fd)
        finally:
            os.close(fd)
        if mnt_id is None or self.mnt_id is None:
            return True  # the inodes disagree and nothing can prove it is ours
        return mnt_id != self.mnt_id

    # --- the walk ---------------------------------------------------------------------

    def open_top(self, parent_fd: int, leaf: str) -> int:
        """Open the top directory (never following it) and note its device and mount."""
        try:
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            raise self.error(self.top, e) from None
        self.mnt_id = _mount_id(fd)
        return fd

    def run_directory(self, top_fd: int) -> None:
        """Walk the open top directory depth-first, holding one descriptor per level."""
        stack: list[tuple[int, str, list[str]]] = []
        try:
            st = os.fstat(top_fd)
            self.dev = st.st_dev
            self.seen += 1
            self._fix_directory(top_fd, st, self.top)
            subdirs = self._scan(top_fd, self.top)
        except BaseException:
            os.close(top_fd)
            raise
        stack.append((top_fd, self.top, subdirs))
        try:
            while stack:
                fd, dir_path, subdirs = stack[-1]
                if not subdirs:
                    stack.pop()
                    os.close(fd)
                    continue
                child = self._enter(fd, dir_path, subdirs.pop())
                if child is not None:
                    stack.append(child)
                self._maybe_report_progress()
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def _enter(
        self, parent_fd: int, parent_path: str, name: str
    ) -> tuple[int, str, list[str]] | None:
        """Open subdirectory ``name`` safely, fix it, list it; None when it is not to be walked."""
        path = parent_path + "/" + name
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in _VANISHED:
                return None
            if e.errno in _NOT_A_DIRECTORY:
                # Replaced by a symlink or a file since it was listed: treat it
                # as what it is now, never follow it.
                self.change_entry(parent_fd, name, path)
                return None
            raise self.error(path, e) from None
        try:
            st = os.fstat(fd)
            # Decided on the descriptor the walk goes on with: whatever name
            # the directory was reached by, its mount is what it is.
            if not self.cross_mounts and self._other_mount(fd, st):
                self.skipped_mounts += 1
                log.info(f"{self.flag} {self.top}: not descending into mount point {path}")
                os.close(fd)
                return None
            self._fix_directory(fd, st, path)
            return fd, path, self._scan(fd, path)
        except BaseException:
            os.close(fd)
            raise

    def _fix_directory(self, fd: int, st: os.stat_result, path: str) -> None:
        if st.st_uid != self.uid or st.st_gid != self.gid:
            try:
                os.fchown(fd, self.uid, self.gid)
            except OSError as e:
                raise self.error(path, e) from None
            self.changed += 1

    def _scan(self, fd: int, dir_path: str) -> list[str]:
        """Change every non-directory in the directory ``fd``; return its subdirectory names.

        This is the hot loop: one ``fstatat`` per entry (d_type spares it for
        directories, which are checked through their own descriptor later).
        """
        uid = self.uid
        gid = self.gid
        dev = self.dev
        check_mounts = not self.cross_mounts
        subdirs: list[str] = []
        seen = 0
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if st.st_uid != uid or st.st_gid != gid:
                        # A mount hides the entry's own inode (d_ino): only
                        # then can it be a file bind-mounted into the tree.
                        if (
                            check_mounts
                            and (st.st_ino != entry.inode() or st.st_dev != dev)
                            and self._mount_point_at(fd, entry.name, st)
                        ):
                            self.skipped_mounts += 1
                            continue
                        self._change_at(fd, entry.name, dir_path)
        except OSError as e:
            raise self.error(dir_path, e) from None
        finally:
            self.seen += seen
        return subdirs

    def _change_at(self, dir_fd: int, name: str, dir_path: str) -> None:
        try:
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as e:
            raise self.error(dir_path + "/" + name, e) from None
        self.changed += 1

    def change_entry(self, dir_fd: int, name: str, path: str, top: bool = False) -> None:
        """lstat and lchown one entry (never following it), if its owner differs.

        Below the top, an entry on another mount is left alone.
        """
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            if top:
                raise self.error(path, OSError(errno.ENOENT, "")) from None
            return
        except OSError as e:
            raise self.error(path, e) from None
        if st.st_uid == self.uid and st.st_gid == self.gid:
            return
        if not top and not self.cross_mounts and self._mount_point_at(dir_fd, name, st):
            self.skipped_mounts += 1
            return
        try:
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as e:
            raise self.error(path, e) from None
        self.changed += 1

    def _maybe_report_progress(self) -> None:
        # Called once per directory: a clock read is ~50 ns, cheap at that rate.
        now = time.monotonic()
        if now >= self.next_progress:
            self.next_progress = now + PROGRESS_INTERVAL
            log.notice(
                f"{self.flag} {self.top}: {self.seen} entries so far, {self.changed} changed, "
                f"{now - self.started:.0f}s"
            )


def _mount_id(fd: int) -> int | None:
    """The id of the mount the open file ``fd`` is on (``mnt_id`` in /proc/self/fdinfo).

    None when /proc is not there (or is another PID namespace's without us).
    """
    try:
        info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(info, 4096)
    except OSError:
        return None
    finally:
        os.close(info)
    _, found, rest = text.partition(b"\nmnt_id:")
    if not found:
        return None
    try:
        return int(rest.split(b"\n", 1)[0])
    except ValueError:
        return None
