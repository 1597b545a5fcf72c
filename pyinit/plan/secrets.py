"""``*_FILE`` secrets, opt-in by name (the postgres image's convention).

``--file-env FOO`` with ``FOO_FILE=/run/secrets/foo`` sets FOO to the file's
contents, one trailing newline stripped, and the target does not see
FOO_FILE.  Only the names asked for are touched: SSL_CERT_FILE, KUBECONFIG and
other tools' ``*_FILE`` variables are not secrets, and expanding a CA bundle
into the environment can overflow exec's argument size limit.
"""

from __future__ import annotations

from pyinit.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: A secret larger than this is almost certainly the wrong file.
MAX_SECRET_BYTES = 1 << 20


def _valid_name(name: str) -> bool:
    return (
        bool(name) and name.replace("_", "a").isalnum() and name.isascii() and not name[0].isdigit()
    )


def resolve_file_env(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Read each ``NAME_FILE`` for the names asked; return ``{NAME: contents}``.

    Raises UsageError naming NAME when both NAME and NAME_FILE are set or
    when the file cannot be read.  Reads only.
    """
    values: dict[str, str] = {}
    for name in names:
        if not _valid_name(name):
            raise UsageError(f"--file-env {name!r}: not a valid environment variable name")
        file_var = name + "_FILE"
        path = environ.get(file_var)
        if path is None:
            # Given directly, or not at all (optional, like postgres' file_env
            # default): nothing to read, the target sees the environment as is.
            continue
        if name in environ:
            raise UsageError(
                f"--file-env {name}: both {name} and {file_var} are set (they are exclusive)"
            )
        values[name] = _read_secret(name, file_var, path)
    return values


def _read_secret(name: str, file_var: str, path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise UsageError(
            f"--file-env {name}: cannot read {file_var}={path}: {e.strerror}"
        ) from None
    if len(data) > MAX_SECRET_BYTES:
        raise UsageError(f"--file-env {name}: {file_var}={path} is larger than 1 MiB")
    if b"\0" in data:
        raise UsageError(f"--file-env {name}: {file_var}={path} contains a NUL byte")
    text = data.decode("utf-8", errors="surrogateescape")
    return text[:-1] if text.endswith("\n") else text
