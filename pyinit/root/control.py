"""The control socket's file (docs/operate.md, "The socket"): made as root, never through a symlink.

:func:`open_control` makes the listening AF_UNIX socket at the plan's
``--control`` path, for :mod:`pyinit.run.control` to serve:

* every directory on the way is opened with ``O_NOFOLLOW | O_DIRECTORY``
  from ``/``, one component at a time: a symlink anywhere on the path (one
  planted where the socket's directory goes, say) is refused, never followed;
* the socket's own directory is created root's (pyinit's own uid), mode
  0700; an existing one must be pyinit's and writable by nobody else;
* at exit the socket is removed, and the directory too if pyinit made it;
* a socket left there by an earlier pyinit that nobody listens on any more
  (stale) is removed; a live one (another pyinit listening) is left alone
  and this pyinit runs without a socket, as it does when none can be made
  (a read-only /run): one notice, the container runs on;
* the bind goes through ``/proc/self/fd/DIRFD/NAME``, the directory already
  opened and checked, so the path is not resolved a second time.

Always a filesystem path, never an abstract socket: the containers of a pod
share one network namespace, and with it every abstract name.
"""

from __future__ import annotations

import _socket
import errno
import os
import stat

from pyinit import log
from pyinit.record import Record

#: How a directory on the socket's path is opened: never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode of the socket's directory when pyinit creates it.
DIRECTORY_MODE = 0o700
#: Mode of the socket itself: who may connect is decided by SO_PEERCRED, per request.
SOCKET_MODE = 0o666
#: Connections the kernel queues before pyinit accepts them.
BACKLOG = 16
#: The longest sun_path (108 bytes with the final NUL).
_SUN_PATH_MAX = 107


class NoSocket(Exception):
    """Why no control socket is made: the rest of the notice line."""


class Place(Record):
    """Where the socket is: its directory (open), and that directory's parent if pyinit made it."""

    __slots__ = ("created_in", "dir_fd", "dir_name", "name")
    dir_fd: int
    name: str
    # The parent's descriptor when pyinit created the directory (it removes it at exit).
    created_in: int | None
    dir_name: str


class Listener:
    """The listening socket at ``path``, and what removing it at exit needs."""

    def __init__(self, sock: _socket.socket, path: str, place: Place, ino: int) -> None:
        self.sock = sock
        self.path = path
        self._place = place
        self._ino = ino

    def close(self) -> None:
        """Stop listening (an ``accept`` blocked on it returns) and remove the socket file.

        The file is removed only if it is still the one this pyinit bound; the
        directory only if this pyinit created it and it is empty.
        """
        place = self._place
        # try/except, not contextlib.suppress: no contextlib on a plain target's
        # path (docs/design.md, "Start-up cost is a feature").
        try:  # noqa: SIM105
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
            if st.st_ino == self._ino and stat.S_ISSOCK(st.st_mode):
                os.unlink(place.name, dir_fd=place.dir_fd)
        except OSError:
            pass
        if place.created_in is not None:
            try:  # noqa: SIM105
                os.rmdir(place.dir_name, dir_fd=place.created_in)
            except OSError:
                pass
        _close_place(place)


def _close_place(place: Place) -> None:
    os.close(place.dir_fd)
    if place.created_in is not None:
        os.close(place.created_in)


def open_control(path: str) -> Listener | None:
    """The listening socket at ``path``; None, after one notice, when it cannot be made."""
    try:
        return _open(path)
    except NoSocket as e:
        log.notice(
            f"control socket {path}: {e}; running without it (pyinitctl cannot reach pyinit)"
        )
        return None


def _open(path: str) -> Listener:
    parent, _, name = path.rpartition("/")
    place = _open_directory(parent, name)
    dir_fd = place.dir_fd
    try:
        _clear_stale(dir_fd, name, path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.bind(_bind_path(dir_fd, name, path))
            os.chmod(name, SOCKET_MODE, dir_fd=dir_fd)
            ino = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino
            sock.listen(BACKLOG)
        except OSError as e:
            sock.close()
            raise NoSocket(f"cannot listen: {_reason(e)}") from None
    except BaseException:
        _close_place(place)
        raise
    return Listener(sock, path, place, ino)


def _open_directory(parent: str, name: str) -> Place:
    """Open the socket's directory, creating the last component root's 0700; no symlinks."""
    names = parent.split("/")[1:]
    fd = os.open("/", _DIR_FLAGS)
    done = ""
    created_in: int | None = None
    try:
        for index, component in enumerate(names):
            done += "/" + component
            created = index == len(names) - 1 and _mkdir(fd, component, done)
            child = _open_component(fd, component, done)
            if created:
                created_in, fd = fd, child  # kept: the directory is removed at exit
            else:
                os.close(fd)
                fd = child
        _check_own_directory(fd, parent, created_in is not None)
    except BaseException:
        os.close(fd)
        if created_in is not None:
            os.close(created_in)
        raise
    return Place(dir_fd=fd, name=name, created_in=created_in, dir_name=names[-1])


def _mkdir(dir_fd: int, name: str, shown: str) -> bool:
    try:
        os.mkdir(name, DIRECTORY_MODE, dir_fd=dir_fd)
    except FileExistsError:
        return False
    except OSError as e:
        raise NoSocket(f"cannot create {shown}: {_reason(e)}") from None
    return True


def _open_component(dir_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise NoSocket(f"cannot open {shown}: {_reason(e)}") from None
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    what = "is a symbolic link (never followed)" if is_link else "is not a directory"
    raise NoSocket(f"{shown} {what}")


def _check_own_directory(fd: int, shown: str, created: bool) -> None:
    """The socket's directory must be pyinit's and changeable by nobody else."""
    st = os.fstat(fd)
    own = os.geteuid()
    if st.st_uid != own:
        raise NoSocket(f"{shown} belongs to uid {st.st_uid}, not to pyinit (uid {own})")
    if created:
        os.fchmod(fd, DIRECTORY_MODE)  # mkdir's mode went through the umask
    elif st.st_mode & 0o022:
        raise NoSocket(f"{shown} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})")


def _clear_stale(dir_fd: int, name: str, path: str) -> None:
    """Remove a socket nobody listens on; refuse a live one, or anything else there."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as e:
        raise NoSocket(_reason(e)) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NoSocket("something that is not a socket is there (left alone)")
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(_bind_path(dir_fd, name, path))
    except ConnectionRefusedError:
        os.unlink(name, dir_fd=dir_fd)  # stale: its pyinit is gone
        return
    except OSError as e:
        raise NoSocket(f"a socket is there and cannot be probed ({_reason(e)})") from None
    finally:
        probe.close()
    raise NoSocket("another pyinit listens there")


def _bind_path(dir_fd: int, name: str, path: str) -> str:
    """The checked directory's descriptor as a path (never resolved again), or ``path``."""
    through_fd = f"/proc/self/fd/{dir_fd}/{name}"
    if len(os.fsencode(through_fd)) <= _SUN_PATH_MAX and os.path.isdir(f"/proc/self/fd/{dir_fd}"):
        return through_fd
    return path


def _reason(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "read-only file system"
    return (e.strerror or str(e)).lower()
