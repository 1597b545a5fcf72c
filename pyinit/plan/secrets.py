"""``*_FILE`` secrets, opt-in by name (the postgres image's convention).

``--file-env FOO`` with ``FOO_FILE=/run/secrets/foo`` sets FOO to the file's
contents, one trailing newline stripped, and the target does not see
FOO_FILE.  Only the names asked for are touched: SSL_CERT_FILE, KUBECONFIG and
other tools' ``*_FILE`` variables are not secrets, and expanding a CA bundle
into the environment can overflow exec's argument size limit.

pyinit reads the file as root, for a target that is not.  A path the target
user can redirect (a directory it can write to, a symlink it owns) would let
it point ``FOO_FILE`` at /etc/shadow and find the file in its environment on
the next start.  So the path is resolved here, one component at a time with
``O_NOFOLLOW`` and ``openat``, every symlink read and its target resolved
the same way, and each step is checked:

* every directory passed through, and every symlink followed, is owned by
  root or by the user pyinit runs as;
* no directory is writable by the target (its owner, group or other write
  bit, whichever class the target falls in), unless the mount is read-only;
  in a sticky directory (``/tmp``, a Kubernetes tmpfs) only entries the
  target owns can be replaced, so those are refused there;
* the file itself is a regular file (never a FIFO that would hang pyinit),
  opened ``O_NONBLOCK``, read with a bound.  Its owner does not matter: its
  contents are what they are, and it cannot be swapped for another file
  without write access to its directory (Docker ``/run/secrets`` files may
  belong to the service user, by design).

Kubernetes secret volumes pass (root-owned ``..data`` symlink to a
root-owned ``..2024_...`` directory), and so does Docker's ``/run/secrets``.

The resolver is :class:`PathWalk`, shared with ``--config``: config files are
obeyed as root too, but the users to check against (the main's and every
item's) are known only once the plan has resolved them, so the config
loader records the steps (:class:`StepRecorder`) and the plan checks them
later with the same :class:`PathChecks`, which for a config also covers the
file itself and a directory whose files are all read.
"""

from __future__ import annotations

import os
import stat

from pyinit.errors import UsageError
from pyinit.plan.files import FileTooLarge, describe_kind, read_open_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

#: The kernel's limit for one argv or environment string, NUL included (32 pages).
MAX_ARG_STRLEN = 32 * 4096
#: The kernel caps the argv+environment budget at 3/4 of _STK_LIM (8 MiB) ...
KERNEL_ARG_CAP = 6 << 20
#: ... and never lowers it below ARG_MAX (32 pages), whatever the stack limit.
KERNEL_ARG_FLOOR = 32 * 4096
#: Bytes counted for the executable's path, which the kernel copies too.
FILENAME_ALLOWANCE = 4096
POINTER_SIZE = 8
#: Symlinks followed while resolving one path (the kernel's MAXSYMLINKS).
MAX_SYMLINKS = 40

# O_PATH: walking needs only search permission, as the kernel's own lookup does.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Target:
    """The user a secret must not be redirectable by: uid and every gid it will hold."""

    __slots__ = ("gids", "trusted", "uid")

    def __init__(self, uid: int, gids: Iterable[int], trusted: Iterable[int]) -> None:
        self.uid = uid
        self.gids = frozenset(gids)
        #: Owners a directory or symlink may have: root and pyinit's own uid.
        self.trusted = frozenset(trusted)

    def can_write(self, st: os.stat_result) -> bool:
        """Whether the target passes the write-permission check on ``st`` (owner, group, other)."""
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IWUSR)
        if st.st_gid in self.gids:
            return bool(st.st_mode & stat.S_IWGRP)
        return bool(st.st_mode & stat.S_IWOTH)


def valid_env_name(name: str) -> bool:
    """Whether ``name`` can be a ``--file-env`` name: ``[A-Za-z_][A-Za-z0-9_]*``."""
    return (
        bool(name) and name.replace("_", "a").isalnum() and name.isascii() and not name[0].isdigit()
    )


def resolve_file_env(
    names: Iterable[str],
    environ: Mapping[str, str],
    *,
    target: Target | None = None,
    flag: str = "--file-env ",
) -> dict[str, str]:
    """Read each ``NAME_FILE`` for the names asked; return ``{NAME: contents}``.

    With ``target`` (the user who receives the secrets, when it is not
    pyinit's own), a path that user could redirect is refused.  Raises
    UsageError naming ``flag + NAME`` (``--file-env DBPW``, or an item's
    ``file-env=DBPW``) when both NAME and NAME_FILE are set, when the file
    cannot be read or is unsafe, or when its contents cannot be one
    environment string.  Reads only.
    """
    values: dict[str, str] = {}
    for name in names:
        if not valid_env_name(name):
            raise UsageError(f"{flag}{name!r}: not a valid environment variable name")
        file_var = name + "_FILE"
        path = environ.get(file_var)
        if path is None:
            # Given directly, or not at all (optional, like postgres' file_env
            # default): nothing to read, the target sees the environment as is.
            continue
        if name in environ:
            raise UsageError(
                f"{flag}{name}: both {name} and {file_var} are set (they are exclusive)"
            )
        values[name] = _SecretPath(flag + name, name, file_var, path, target).read()
    return values


class _SecretPath:
    """One ``NAME_FILE`` path, resolved component by component and read."""

    def __init__(
        self, label: str, name: str, file_var: str, path: str, target: Target | None
    ) -> None:
        self.label = label
        self.name = name
        self.file_var = file_var
        self.path = path
        self.target = target

    def fail(self, detail: str) -> UsageError:
        """An error naming the flag, the variable and the path."""
        return UsageError(f"{self.label}: {self.file_var}={self.path}: {detail}")

    def unsafe(self, target: Target, detail: str) -> UsageError:
        """The refusal of a path the target could redirect."""
        return self.fail(
            f"{detail}; refusing to read a secret as root through a path uid "
            f"{target.uid} can redirect (see docs/security.md)"
        )

    def read(self) -> str:
        """The secret's value: the file's contents, one trailing newline stripped."""
        if not self.path:
            raise self.fail("empty path")
        checks = [] if self.target is None else [PathChecks(self.target, self.unsafe)]
        fd = PathWalk(self.path, self.fail, checks).open_file()
        try:
            data = read_open_regular(fd, MAX_ARG_STRLEN)
        except FileTooLarge:
            raise self._too_large() from None
        except OSError as e:
            raise self.fail(f"cannot read: {e.strerror}") from None
        finally:
            os.close(fd)
        if data.endswith(b"\n"):
            data = data[:-1]
        if b"\0" in data:
            raise self.fail("contains a NUL byte")
        if len(self.name) + 1 + len(data) + 1 > MAX_ARG_STRLEN:
            raise self._too_large()
        return data.decode("utf-8", errors="surrogateescape")

    def _too_large(self) -> UsageError:
        return self.fail(
            f"{self.name}=value would be larger than {MAX_ARG_STRLEN // 1024} KiB, the kernel's "
            "limit for one environment string (MAX_ARG_STRLEN); exec would fail with E2BIG"
        )


class PathWalk:
    """One path opened as root the way the kernel resolves it, but one component at a time.

    Every directory passed through, symlink followed, entry looked up and
    the file (or directory) finally opened is shown to each of ``observers``
    (:class:`PathChecks` refuses what a user could redirect; a
    :class:`StepRecorder` keeps the steps to check later, once the users are
    known).  ``fail`` turns a detail into the caller's one-line error.
    """

    def __init__(
        self, path: str, fail: Callable[[str], UsageError], observers: Sequence[PathObserver]
    ) -> None:
        self.path = path
        self.fail = fail
        self.observers = observers

    def open_file(self) -> int:
        """A read-only, non-blocking descriptor of the regular file at the path."""
        return self.open_file_or_directory(allow_directory=False)[0]

    def open_file_or_directory(self, *, allow_directory: bool = True) -> tuple[int, bool]:
        """A read-only descriptor of the regular file or directory at the path, and which it is."""
        path = self.path if self.path.startswith("/") else os.getcwd() + "/" + self.path
        pending = path.split("/")[::-1]
        root = self._open_root()
        stack = [root]
        links = 0
        try:
            while pending:
                name = pending.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop().fd)
                    continue
                parent = stack[-1]
                shown = parent.join(name)
                try:
                    st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
                except OSError as e:
                    raise self.fail(e.strerror or str(e)) from None
                for observer in self.observers:
                    observer.entry(parent, shown, st)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise self.fail("too many levels of symbolic links")
                    for observer in self.observers:
                        observer.link(shown, st)
                    link = os.readlink(name, dir_fd=parent.fd)
                    pending.extend(link.split("/")[::-1])
                    if link.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop().fd)
                    continue
                if any(p not in ("", ".") for p in pending) or stat.S_ISDIR(st.st_mode):
                    stack.append(self._enter(parent, name, shown, st))
                    continue
                return self._open_leaf(parent, name, shown, st), False
            if not allow_directory:
                raise self.fail("is a directory")
            return self._open_listing(stack[-1]), True
        finally:
            for d in stack:
                os.close(d.fd)

    def _open_root(self) -> _Dir:
        fd = os.open("/", _DIR_FLAGS)
        try:
            d = _Dir(fd, "", os.fstat(fd))
            for observer in self.observers:
                observer.directory(d)
        except BaseException:
            os.close(fd)
            raise
        return d

    def _enter(self, parent: _Dir, name: str, shown: str, st: os.stat_result) -> _Dir:
        if not stat.S_ISDIR(st.st_mode):
            raise self.fail(f"{shown} is not a directory")
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except OSError as e:
            raise self.fail(f"cannot open {shown}: {e.strerror}") from None
        try:
            d = _Dir(fd, shown, os.fstat(fd))
            if (d.st.st_dev, d.st.st_ino) != (st.st_dev, st.st_ino):
                raise self.fail(f"{shown} changed while it was being opened")
            for observer in self.observers:
                observer.directory(d)
        except BaseException:
            os.close(fd)
            raise
        return d

    def _open_leaf(self, parent: _Dir, name: str, shown: str, st: os.stat_result) -> int:
        if not stat.S_ISREG(st.st_mode):
            # Never opened: a FIFO would block, a device could act on open.
            raise self.fail(f"is {describe_kind(st.st_mode)}, not a regular file")
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent.fd)
        except OSError as e:
            raise self.fail(f"cannot read: {e.strerror}") from None
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise self.fail(f"{shown} changed while it was being opened")
            for observer in self.observers:
                observer.leaf(_Dir(fd, shown, opened))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_listing(self, d: _Dir) -> int:
        fd = os.open(".", _LIST_FLAGS, dir_fd=d.fd)
        try:
            for observer in self.observers:
                observer.listing(d)
        except BaseException:
            os.close(fd)
            raise
        return fd


class PathChecks:
    """What a :class:`PathWalk` checks at each step against one user (see the module docstring).

    ``unsafe(target, detail)`` makes the caller's refusal.  With
    ``file_too`` the file itself must be safe from the user as well (a
    config file it could rewrite; a secret's contents are what they are).
    """

    def __init__(
        self,
        target: Target,
        unsafe: Callable[[Target, str], UsageError],
        *,
        file_too: bool = False,
    ) -> None:
        self.target = target
        self.unsafe = unsafe
        self.file_too = file_too

    def _owner(self, shown: str, st: os.stat_result, what: str) -> None:
        if st.st_uid not in self.target.trusted:
            raise self.unsafe(self.target, f"{shown} is {what} owned by uid {st.st_uid}, not root")

    def directory(self, d: _Dir) -> None:
        """A directory passed through: owned by root, and not one the user can write to."""
        self._owner(d.shown or "/", d.st, "a directory")
        if d.target_can_write(self.target) and not d.sticky:
            raise self.unsafe(
                self.target, f"{d.shown or '/'} is a directory uid {self.target.uid} can write to"
            )

    def link(self, shown: str, st: os.stat_result) -> None:
        """A symlink followed: owned by root (its owner could point it elsewhere)."""
        self._owner(shown, st, "a symbolic link")

    def entry(self, parent: _Dir, shown: str, st: os.stat_result) -> None:
        """Refuse an entry the target could rename, delete or replace in its directory."""
        target = self.target
        if not parent.target_can_write(target):
            return
        # Only a sticky directory gets here (others are refused on entry): in
        # it, the target can replace only what it owns.
        if st.st_uid == target.uid:
            raise self.unsafe(
                target,
                f"{shown} belongs to uid {st.st_uid} in the sticky directory "
                f"{parent.shown or '/'}, so its owner can replace it",
            )

    def leaf(self, f: _Dir) -> None:
        """The file opened: with ``file_too``, neither the user's nor writable by it."""
        if not self.file_too or f.read_only:
            return
        if f.st.st_uid == self.target.uid:
            raise self.unsafe(self.target, f"{f.shown} is owned by uid {f.st.st_uid}")
        if self.target.can_write(f.st):
            raise self.unsafe(self.target, f"{f.shown} is a file uid {self.target.uid} can write")

    def listing(self, d: _Dir) -> None:
        """A directory whose entries are all read: the user may not add one, sticky or not."""
        if d.target_can_write(self.target):
            raise self.unsafe(
                self.target,
                f"{d.shown or '/'} is a directory uid {self.target.uid} can add files to",
            )


class StepRecorder:
    """Keeps every step of a :class:`PathWalk` to check it later against users known then."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, tuple[object, ...]]] = []

    def directory(self, d: _Dir) -> None:
        """Record a directory passed through."""
        d.remember()
        self.steps.append(("directory", (d,)))

    def link(self, shown: str, st: os.stat_result) -> None:
        """Record a symlink followed."""
        self.steps.append(("link", (shown, st)))

    def entry(self, parent: _Dir, shown: str, st: os.stat_result) -> None:
        """Record an entry looked up."""
        self.steps.append(("entry", (parent, shown, st)))

    def leaf(self, f: _Dir) -> None:
        """Record the file opened."""
        f.remember()
        self.steps.append(("leaf", (f,)))

    def listing(self, d: _Dir) -> None:
        """Record a directory whose entries are read."""
        d.remember()
        self.steps.append(("listing", (d,)))

    def replay(self, checks: PathChecks) -> None:
        """Show ``checks`` every step recorded, in order (it raises on the first unsafe one)."""
        for kind, args in self.steps:
            getattr(checks, kind)(*args)


if TYPE_CHECKING:
    PathObserver = PathChecks | StepRecorder


class _Dir:
    """A directory (or the opened file) on the resolution path: its descriptor, path and stat."""

    __slots__ = ("_read_only", "fd", "shown", "st")

    def __init__(self, fd: int, shown: str, st: os.stat_result) -> None:
        self.fd = fd
        self.shown = shown
        self.st = st
        self._read_only: bool | None = None

    @property
    def sticky(self) -> bool:
        """Whether only an entry's owner (and the directory's) may remove or rename it."""
        return bool(self.st.st_mode & stat.S_ISVTX)

    @property
    def read_only(self) -> bool:
        """Whether it is on a read-only mount (asked once, while the descriptor is open)."""
        if self._read_only is None:
            self._read_only = _read_only_mount(self.fd)
        return self._read_only

    def remember(self) -> None:
        """Ask what needs the descriptor now: it is closed before a recorded step is checked."""
        _ = self.read_only

    def join(self, name: str) -> str:
        """The path of entry ``name`` of this directory, for messages."""
        return self.shown + "/" + name

    def target_can_write(self, target: Target) -> bool:
        """Whether the target may add, remove or rename entries here (a read-only mount: no)."""
        return target.can_write(self.st) and not self.read_only


def _read_only_mount(fd: int) -> bool:
    try:
        return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def exec_budget(stack_soft_limit: int | None = None) -> int:
    """Bytes the kernel allows for argv + environment (strings, NULs and pointers) at exec.

    A quarter of the stack soft limit (``os.sysconf('SC_ARG_MAX')`` reports
    that for pyinit's own limit), at most 6 MiB and at least 128 KiB.
    ``stack_soft_limit`` is the limit the target will have (``--rlimit
    stack``), when the plan sets one.
    """
    import resource

    if stack_soft_limit is None:
        budget = os.sysconf("SC_ARG_MAX")
    elif stack_soft_limit == resource.RLIM_INFINITY:
        budget = KERNEL_ARG_CAP
    else:
        budget = stack_soft_limit // 4
    return max(KERNEL_ARG_FLOOR, min(KERNEL_ARG_CAP, budget))


def exec_size(command: Sequence[str], env: Mapping[str, str]) -> int:
    """What execve will count for ``command`` and ``env``: strings, NULs, pointers, path."""
    size = FILENAME_ALLOWANCE + POINTER_SIZE * (max(len(command), 1) + len(env))
    size += sum(len(os.fsencode(arg)) + 1 for arg in command)
    size += sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())
    return size


def check_exec_budget(
    command: Sequence[str],
    env: Mapping[str, str],
    secrets: Iterable[str],
    stack_soft_limit: int | None = None,
    flag: str = "--file-env ",
) -> None:
    """Refuse (naming ``flag + NAME``) secrets that would push exec past its budget.

    ``secrets`` are the names whose values were read from files.  Without
    them there is nothing to check: pyinit was itself started with more
    than the target gets.
    """
    read = [name for name in secrets if name in env]
    if not read:
        return
    size = exec_size(command, env)
    budget = exec_budget(stack_soft_limit)
    if size > budget:
        biggest = max(read, key=lambda name: len(os.fsencode(env[name])))
        raise UsageError(
            f"{flag}{biggest}: the target's arguments and environment would take {size} "
            f"bytes, over the {budget} bytes exec allows (ARG_MAX: a quarter of the stack "
            "limit, at most 6 MiB); exec would fail with E2BIG"
        )
