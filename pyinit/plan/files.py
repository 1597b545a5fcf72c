"""Reading small configuration files as root without being stalled or fooled.

pyinit reads a few files before anything else runs (``*_FILE`` secrets,
/etc/passwd, /etc/group), as root and with every signal blocked, so a read
that never returns can only be ended with SIGKILL.  A FIFO (or a character
device) put where a regular file is expected would block ``open`` or
``read`` forever.  :func:`read_regular_file` opens with ``O_NONBLOCK``
(``open`` of a FIFO returns at once), refuses anything that ``fstat`` does
not call a regular file, and reads at most ``limit`` bytes.
"""

from __future__ import annotations

import errno
import os
import stat

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file (FIFO, device, directory...)."""


class FileTooLarge(OSError):
    """The file holds more than the caller's limit."""


def describe_kind(mode: int) -> str:
    """``a FIFO``, ``a directory``, ...: what a non-regular file is, for messages."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def require_regular(st: os.stat_result) -> None:
    """Raise NotRegularFile (strerror says what it is) unless ``st`` is a regular file."""
    if not stat.S_ISREG(st.st_mode):
        kind = describe_kind(st.st_mode)
        raise NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file")


def read_regular_file(
    path: str, limit: int, *, dir_fd: int | None = None, follow_symlinks: bool = True
) -> bytes:
    """The contents of the regular file ``path``: at most ``limit`` bytes, never blocking.

    Raises OSError as ``open`` would, NotRegularFile for a FIFO, socket,
    device or directory (checked before opening, and again on the open
    descriptor), and FileTooLarge past ``limit`` bytes.  ``follow_symlinks``
    False refuses a symlink as the last component (``O_NOFOLLOW``).
    """
    require_regular(os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks))
    flags = _OPEN_FLAGS if follow_symlinks else _OPEN_FLAGS | os.O_NOFOLLOW
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        return read_open_regular(fd, limit)
    finally:
        os.close(fd)


def read_open_regular(fd: int, limit: int) -> bytes:
    """Read the regular file open as ``fd`` to its end, refusing more than ``limit`` bytes."""
    require_regular(os.fstat(fd))
    chunks: list[bytes] = []
    size = 0
    while True:
        # Sizes in st_size can lie (/proc files say 0): read to EOF, bounded.
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise FileTooLarge(errno.EFBIG, f"is larger than {limit} bytes")
