"""Reading small configuration files as root without being stalled or fooled.

pyinit reads a few files before anything else runs (``*_FILE`` secrets,
/etc/passwd, /etc/group), as root and with every signal blocked, so a read
that never returns can only be ended with SIGKILL.  A FIFO (or a character
device) put where a regular file is expected would block ``open`` or
``read`` forever.  Callers open with ``O_NONBLOCK`` (``open`` of a FIFO
returns at once); :func:`read_open_regular` then refuses anything that
``fstat`` does not call a regular file and reads at most ``limit`` bytes.
"""

from __future__ import annotations

import errno
import os
import stat

_CHUNK = 1 << 20

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


def read_open_regular(fd: int, limit: int) -> bytes:
    """Read the regular file open as ``fd`` to its end, refusing more than ``limit`` bytes."""
    require_regular(os.fstat(fd))
    chunks: list[bytes] = []
    size = 0
    while True:
        # Sizes in st_size can lie (/proc files say 0): read to EOF, bounded.
        # os.read allocates its whole count first: ask for 1 MiB at most.
        chunk = os.read(fd, min(limit + 1 - size, _CHUNK))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise FileTooLarge(errno.EFBIG, f"is larger than {limit} bytes")
