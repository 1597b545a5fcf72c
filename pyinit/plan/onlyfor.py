"""``--only-for NAME``: the official images' "only for the server" convention.

The redis, mongo and postgres entrypoints do their root setup and step down
only when the command is the server (``docker run redis id`` prints 0,
``docker run -it redis bash`` is a root shell for debugging), and a first
argument starting with ``-`` goes to the server (``docker run redis --port
7000`` runs ``redis-server --port 7000``).  With ``--only-for`` pyinit does
the same, decided here, in the plan:

* the basename of the command's first word matches a NAME (a glob such as
  ``mongo*``; :mod:`fnmatch` is imported only when a NAME is a pattern):
  everything as planned;
* the first word starts with ``-``: the command becomes the first literal
  NAME followed by every argument, and matches;
* anything else runs as it is: as the user pyinit was started as, with the
  environment it was given, without root setup, step-down, ``--file-env``
  secrets, hooks, sidecars or tasks.  pyinit still reaps and forwards
  signals (tini's part).
"""

from __future__ import annotations

import os

from pyinit.errors import UsageError
from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Sequence

#: Characters that make a NAME a glob pattern (fnmatch's).
GLOB_CHARS = frozenset("*?[")

#: What an unmatched command does without: option attributes and their "not given" values.
SERVICE_ONLY_OPTIONS: tuple[tuple[str, object], ...] = (
    ("user", None),
    ("groups", []),
    ("keep_groups", False),
    ("keep_cap", []),
    ("no_new_privs", False),
    ("mkdir", []),
    ("chown", []),
    ("rlimit", []),
    ("umask", None),
    ("workdir", None),
    ("file_env", []),
    ("pre", []),
    ("pre_dir", []),
    ("post", []),
    ("items", []),
    ("ready", None),
    ("alive", None),
    ("alive_every", None),
    ("alive_failures", None),
    ("on_unhealthy", None),
    ("setsid", False),
)


class OnlyFor(Record):
    """The ``--only-for`` decision: the NAMEs, whether the command matched, and why."""

    __slots__ = ("matched", "names", "note")
    names: tuple[str, ...]
    matched: bool
    # One line for -v and --dry-run: what the command matched, or that it runs as it is.
    note: str


def check_only_for(name: str) -> str:
    """Validate one ``--only-for`` NAME: a command's basename or a glob on it."""
    if not name.strip():
        raise UsageError("--only-for: empty name (a command name such as redis-server, or mongo*)")
    if "/" in name or "\0" in name:
        raise UsageError(
            f"--only-for {name!r}: the name or pattern of the command's basename, "
            "without '/' (e.g. redis-server or mongo*)"
        )
    return name


def is_pattern(name: str) -> bool:
    """Whether NAME is a glob (``mongo*``) rather than a literal command name."""
    return not GLOB_CHARS.isdisjoint(name)


def decide_only_for(options: Namespace, euid: int) -> tuple[Namespace, OnlyFor]:
    """Apply ``--only-for`` to parsed options: the options to plan with, and the decision.

    A command starting with ``-`` gets the first literal NAME in front; an
    unmatched command gets a copy of ``options`` without every flag that
    only concerns the service (:data:`SERVICE_ONLY_OPTIONS`).
    """
    names = tuple(dict.fromkeys(check_only_for(n) for n in options.only_for))
    command = list(options.command)
    shown = ", ".join(names)
    if command[0].startswith("-"):
        server = _first_literal(names, command[0])
        changed = _copy(options, command=[server, *command])
        note = f"the command starts with {command[0]!r}: running {server} with its arguments"
        return changed, OnlyFor(names=names, matched=True, note=note)
    base = os.path.basename(command[0])
    if matches(base, names):
        return options, OnlyFor(names=names, matched=True, note=f"{base!r} matches {shown}")
    note = (
        f"{base!r} does not match {shown}: it runs as it is, as uid {euid}, without root setup, "
        "step-down, secrets, hooks, sidecars or tasks"
    )
    unmatched = _copy(options, **{name: value for name, value in SERVICE_ONLY_OPTIONS})
    return unmatched, OnlyFor(names=names, matched=False, note=note)


def matches(base: str, names: Sequence[str]) -> bool:
    """Whether the command basename ``base`` is one of ``names`` or matches one of their globs."""
    if base in names:
        return True
    patterns = [n for n in names if is_pattern(n)]
    if not patterns:
        return False
    from fnmatch import fnmatchcase  # imports re: only when a NAME is a pattern

    return any(fnmatchcase(base, p) for p in patterns)


def _first_literal(names: tuple[str, ...], first: str) -> str:
    for name in names:
        if not is_pattern(name):
            return name
    raise UsageError(
        f"--only-for {', '.join(names)}: the command starts with {first!r}, which goes to the "
        "server, but no --only-for is a plain command name to run it with (add the server's "
        "name too, e.g. --only-for mongod)"
    )


def _copy(options: Namespace, **changes: object) -> Namespace:
    copied = type(options)(**vars(options))
    for name, value in changes.items():
        setattr(copied, name, value.copy() if isinstance(value, list) else value)
    return copied
