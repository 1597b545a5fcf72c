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
* **Other mounts are left alone** (unless ``cross_mounts``): an entry on
  another device, or listed as a mount point in /proc/self/mountinfo (which
  also catches bind mounts from the same file system), is skipped with all
  it holds.
* **Only what differs is changed**: an entry already owned by uid:gid costs
  one ``fstatat`` and nothing else, so a second start is cheap and a
  read-only volume that is already right is not an error.
* One pass, in-process, O(depth) descriptors.

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
) -> ChownStats:
    """Give ``path`` and everything below it to ``uid:gid``; never follows symlinks.

    ``policy`` is ``always`` (walk the whole tree) or ``on-root-mismatch``
    (walk only when ``path`` itself is not owned by uid:gid, like
    Kubernetes' fsGroupChangePolicy: OnRootMismatch).  ``path`` itself must
    not be a symlink; it may be a single file.  Raises PyinitError (exit
    125) naming ``flag``, ``path`` and the entry that could not be changed.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown chown policy {policy!r}")
    walk = _Walk(path, uid, gid, cross_mounts, flag)
    try:
        top = os.lstat(path)
    except OSError as e:
        raise walk.error(path, e) from None
    if stat.S_ISLNK(top.st_mode):
        raise PyinitError(
            f"{flag} {path}: is a symbolic link; pyinit never follows symlinks "
            "(name the directory it points to)"
        )
    if policy == "on-root-mismatch" and top.st_uid == uid and top.st_gid == gid:
        log.info(f"{flag} {path}: already owned by {uid}:{gid}, not walking (on-root-mismatch)")
        return walk.stats(walked=False)
    if stat.S_ISDIR(top.st_mode):
        walk.run_directory()
    else:
        walk.seen = 1
        walk.change_entry(None, path, path)
    stats = walk.stats(walked=True)
    log.info(
        f"{flag} {path}: {stats.seen} entries, {stats.changed} changed, in {stats.elapsed:.2f}s"
    )
    return stats


class _Walk:
    """The state of one tree walk: target ids, counters, mount points, progress clock."""

    def __init__(self, top: str, uid: int, gid: int, cross_mounts: bool, flag: str) -> None:
        self.top = top
        self.uid = uid
        self.gid = gid
        self.cross_mounts = cross_mounts
        self.flag = flag
        self.seen = 0
        self.changed = 0
        self.skipped_mounts = 0
        #: The top's device: entries on another one are other mounts.
        self.dev = -1
        self.started = time.monotonic()
        self.next_progress = self.started + PROGRESS_INTERVAL
        #: Directory path -> names in it that are mount points (not descended).
        self.mount_points: dict[str, frozenset[str]] = {}

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

    # --- the walk ---------------------------------------------------------------------

    def run_directory(self) -> None:
        """Walk the top directory depth-first, holding one descriptor per level."""
        try:
            top_fd = os.open(self.top, _DIR_FLAGS)
        except OSError as e:
            raise self.error(self.top, e) from None
        stack: list[tuple[int, str, list[str]]] = []
        try:
            st = os.fstat(top_fd)
            self.dev = st.st_dev
            real_top = _real_path(top_fd, self.top)
            if not self.cross_mounts:
                self.mount_points = _mount_points_below(real_top)
            self.seen += 1
            self._fix_directory(top_fd, st, self.top)
            stack.append((top_fd, real_top, self._scan(top_fd, real_top)))
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
        mounted = self.mount_points.get(parent_path)
        if mounted is not None and name in mounted:
            self.skipped_mounts += 1
            log.info(f"{self.flag} {self.top}: not descending into mount point {path}")
            return None
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
            if st.st_dev != self.dev and not self.cross_mounts:
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
        subdirs: list[str] = []
        mounted = self.mount_points.get(dir_path)
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
                        if mounted is not None and entry.name in mounted:
                            self.skipped_mounts += 1
                            continue
                        self._change_at(fd, entry.name, dir_path, st)
        except OSError as e:
            raise self.error(dir_path, e) from None
        finally:
            self.seen += seen
        return subdirs

    def _change_at(self, dir_fd: int, name: str, dir_path: str, st: os.stat_result) -> None:
        # A file bind-mounted into the tree (docker does this for
        # /etc/hosts-style files) shows up with another device.
        if st.st_dev != self.dev and not self.cross_mounts:
            self.skipped_mounts += 1
            return
        try:
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as e:
            raise self.error(dir_path + "/" + name, e) from None
        self.changed += 1

    def change_entry(self, dir_fd: int | None, name: str, path: str) -> None:
        """lstat and lchown one entry (never following it), if its owner differs."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            if dir_fd is None:
                raise self.error(path, OSError(errno.ENOENT, "")) from None
            return
        except OSError as e:
            raise self.error(path, e) from None
        if st.st_uid == self.uid and st.st_gid == self.gid:
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


def _real_path(fd: int, fallback: str) -> str:
    """The canonical path of the open directory ``fd`` (as /proc/self/mountinfo names it)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(fallback)


def _mount_points_below(
    top: str, mountinfo: str = "/proc/self/mountinfo"
) -> dict[str, frozenset[str]]:
    """Mount points strictly below ``top``, grouped by their parent directory.

    st_dev alone misses bind mounts from the same file system (a Kubernetes
    subPath of a volume on the node's disk, say); mountinfo lists them all.
    """
    prefix = top.rstrip("/") + "/"
    found: dict[str, set[str]] = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ", 5)
                if len(fields) < 5:
                    continue
                point = _unescape_mount_path(fields[4])
                if point.startswith(prefix):
                    parent, _, name = point.rpartition("/")
                    found.setdefault(parent, set()).add(name)
    except OSError:
        return {}  # no /proc: the st_dev check still stops at other file systems
    return {parent: frozenset(names) for parent, names in found.items()}


def _unescape_mount_path(text: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` for a space, ``\134`` for a backslash)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        chunk = text[i + 1 : i + 4]
        if text[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
