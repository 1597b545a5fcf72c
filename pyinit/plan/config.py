"""``--config PATH`` (repeatable; env PYINIT_CONFIG): options and ``[[start]]`` items from TOML.

Each file becomes argparse defaults: every long option is a top-level key,
parsed into the same Namespace the flags fill, so each option keeps its one
validation.  Several files (``--config`` given again, or a directory: its
``*.toml`` in name order, like supervisord's ``[include]``) are merged in
order: a scalar from a later file wins, lists append, ``[[start]]`` items
keep file order (a name used twice is refused, naming both places).
Flags given on the command line then override the files' scalars and
append to their lists (argparse copies a list default before appending).
``[[start]]`` tables become the first entries of the shared
``--sidecar``/``--task`` list, so the files' items start before the flags'.

pyinit obeys the file as root (``pre`` hooks, ``user``, ``mkdir``...), so it
is opened the way ``NAME_FILE`` secrets are (:class:`PathWalk`: never
blocking on a FIFO, bounded in size, every directory and symlink on the way
recorded) and :meth:`ConfigSource.check_trust` refuses it, once the plan knows the
users, when the main's user or any item's could rewrite or swap it.

Every problem is one line naming the file and the key, exit 125.
:mod:`tomllib` is imported only here, i.e. only when a config file is used.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib

from pyinit.errors import UsageError, quoted
from pyinit.plan.build import (
    parse_chown,
    parse_control,
    parse_fd,
    parse_mkdir,
    parse_octal,
    parse_rlimit,
    parse_stop_timeout,
    shell_hook,
)
from pyinit.plan.capabilities import parse_capability
from pyinit.plan.files import FileTooLarge, read_open_regular
from pyinit.plan.items import ALL_KEYS, ItemSpec, check_item_spec, parse_probe
from pyinit.plan.onlyfor import check_only_for
from pyinit.plan.secrets import PathChecks, PathWalk, StepRecorder, Target
from pyinit.plan.signals import parse_rewrite, parse_success_exit
from pyinit.plan.userspec import resolve_group, resolve_user_spec
from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

#: Long options that make no sense in a file (items go in [[start]] tables).
NOT_IN_FILE = ("config", "help", "version", "sidecar", "task")

#: Item keys that may be written as TOML numbers.
NUMERIC_ITEM_KEYS = ("ready-timeout", "max-restarts")

#: Keys whose value is an octal mode: a TOML integer is taken by its value (see _integer_mode).
MODE_KEYS = ("umask",)

#: The largest integer a key takes (larger ones are refused before they are turned into text).
MAX_INTEGER = 2**64

#: A config file is read whole, as root, before anything else: this much at most.
MAX_CONFIG_BYTES = 1 << 20

#: The check each option's value gets as soon as the file is read, so a bad
#: value names the file and the key (build_plan checks them again, cheaply).
VALIDATORS: dict[str, Callable[[str], object]] = {
    "user": resolve_user_spec,
    "groups": lambda v: [resolve_group(g.strip(), "--groups") for g in v.split(",") if g.strip()],
    "mkdir": parse_mkdir,
    "chown": parse_chown,
    "umask": lambda v: parse_octal(v, "--umask", 0o777),
    "rlimit": parse_rlimit,
    "stop-timeout": parse_stop_timeout,
    "control": parse_control,
    "keep-cap": lambda v: parse_capability(v, "--keep-cap"),
    "keep-fd": parse_fd,
    "rewrite": parse_rewrite,
    "success-exit": parse_success_exit,
    "pre": lambda v: shell_hook(v, "--pre"),
    "post": lambda v: shell_hook(v, "--post"),
    "ready": lambda v: parse_probe(v, f"--ready {quoted(v)}"),
    "only-for": check_only_for,
}


class ConfigSource(Record):
    """A config file read, or a config directory listed, with the path steps that reached it."""

    __slots__ = ("is_directory", "path", "steps")
    path: str
    is_directory: bool
    steps: StepRecorder

    def check_trust(self, users: Iterable[Target]) -> None:
        """Refuse this config file or directory if one of USERS could rewrite, swap or add to it.

        USERS are the main's and every item's user pyinit steps down to: the
        file is obeyed as root, so it gets the rule ``NAME_FILE`` secrets
        follow (every directory and symlink on its path owned by root, none
        writable by the user), and the file itself must not be theirs either.
        The planner calls it through the source it was handed, without
        importing this module (which imports the planner's parsers).
        """
        unsafe = _unsafe(self.path)
        for user in users:
            self.steps.replay(PathChecks(user, unsafe, file_too=True))


def parse_with_config(
    paths: Sequence[str], build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> tuple[argparse.Namespace, list[str], tuple[ConfigSource, ...]]:
    """Parse argv over the defaults the files at PATHS give.

    Returns the options, the last file's ``command`` and every file and
    directory read, in order (for :meth:`ConfigSource.check_trust` and --dry-run).
    """
    parser = build_parser()
    merged: dict[str, Any] = {}
    command: list[str] = []
    sources: list[ConfigSource] = []
    for source, text in read_configs(paths):
        sources.append(source)
        if source.is_directory:
            continue
        defaults, file_command = file_defaults(
            parse_toml(text, source.path), parser, source.path, text
        )
        merge_defaults(merged, defaults)
        command = file_command or command
    parser.set_defaults(**merged)
    return parser.parse_args(argv), command, tuple(sources)


def merge_defaults(merged: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Add a later file's defaults: lists (append options, items) append, scalars replace."""
    for dest, value in defaults.items():
        earlier = merged.get(dest)
        merged[dest] = earlier + value if isinstance(earlier, list) else value


def read_configs(paths: Iterable[str]) -> list[tuple[ConfigSource, str]]:
    """Each PATH's text (a directory: its ``*.toml`` files in name order), opened safely."""
    read: list[tuple[ConfigSource, str]] = []
    for path in paths:
        if not path:
            raise _failure(path)("empty path")
        steps = StepRecorder()
        fd, is_directory = PathWalk(path, _failure(path), [steps]).open_file_or_directory()
        try:
            if not is_directory:
                read.append(
                    (ConfigSource(path=path, is_directory=False, steps=steps), _read(fd, path))
                )
                continue
            names = sorted(n for n in os.listdir(fd) if n.endswith(".toml") and n[0] != ".")
        finally:
            os.close(fd)
        read.append((ConfigSource(path=path, is_directory=True, steps=steps), ""))
        read.extend(_read_file(path.rstrip("/") + "/" + name) for name in names)
    return read


def _read_file(path: str) -> tuple[ConfigSource, str]:
    """A file of a config directory (a directory in it is refused, not entered)."""
    steps = StepRecorder()
    fd = PathWalk(path, _failure(path), [steps]).open_file()
    try:
        return ConfigSource(path=path, is_directory=False, steps=steps), _read(fd, path)
    finally:
        os.close(fd)


def _failure(path: str) -> Callable[[str], UsageError]:
    return lambda detail: UsageError(f"--config {quoted(path)}: {detail}")


def _read(fd: int, path: str) -> str:
    try:
        data = read_open_regular(fd, MAX_CONFIG_BYTES)
    except FileTooLarge:
        raise _failure(path)(f"larger than {MAX_CONFIG_BYTES // 1024} KiB") from None
    except OSError as e:
        raise _failure(path)(f"cannot read: {e.strerror}") from None
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from None


def parse_toml(text: str, path: str) -> dict[str, Any]:
    """The TOML document in TEXT; one line naming PATH on any error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: TOML syntax error: {e}") from None
    except RecursionError:
        raise UsageError(f"{path}: TOML syntax error: arrays or tables nested too deeply") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise UsageError(f"{path}: TOML value out of range: {str(e)[:80]}") from None


def _unsafe(path: str) -> Callable[[Target, str], UsageError]:
    def refusal(target: Target, detail: str) -> UsageError:
        return _failure(path)(
            f"{detail}; refusing to obey as root a config file uid {target.uid} could "
            "rewrite (see docs/security.md)"
        )

    return refusal


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        opt[2:]: action
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--")
    }


def file_defaults(
    data: dict[str, Any], parser: argparse.ArgumentParser, path: str, text: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Map the file's top-level keys to argparse defaults, checking type and value of each.

    TEXT is the file's source, where a mode's integer literal is looked up.
    """
    actions = _long_options(parser)
    defaults: dict[str, Any] = {}
    command: list[str] = []
    for key, value in data.items():
        if key == "command":
            command = _string_list(value, path, key, allow_empty=False)
            continue
        if key == "start":
            defaults["items"] = start_items(value, path)
            continue
        action = actions.get(key)
        if action is None or key in NOT_IN_FILE:
            raise UsageError(
                f"{path}: unknown key {quoted(key)} (keys are long options without '--')"
            )
        if key in MODE_KEYS and _is_integer(value):
            value = _integer_mode(value, path, key, text)
        defaults[action.dest] = _option_value(action, value, path, key)
    return defaults, command


def _option_value(action: argparse.Action, value: object, path: str, key: str) -> object:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UsageError(
                f"{path}: key {quoted(key)}: expected true or false, not {_kind(value)}"
            )
        return value
    if isinstance(action, argparse._AppendAction):
        values = _string_list(value, path, key, allow_empty=True, numbers=True)
        for v in values:
            _validate(key, v, path)
        return values
    text = _scalar(value, path, key)
    if action.choices is not None and text not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise UsageError(f"{path}: key {quoted(key)}: {quoted(text)} is not one of {choices}")
    _validate(key, text, path)
    return text


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer_mode(value: int, path: str, key: str, text: str) -> str:
    """A mode written as a TOML integer, as octal text: the integer's value, never its digits.

    ``umask = 0o077`` is the integer 63 and means umask 077.  A decimal
    literal above 7 (``umask = 77``, ``umask = 22``) is refused: its value
    (77 = 0o115) is almost never what was meant, and its digits read as
    octal are not what TOML says.  0 to 7 mean the same either way.
    """
    if value < 0 or value <= 7 or _written_with_base(key, text):
        return f"0o{value:o}" if value >= 0 else str(value)
    if value > 0o7777:  # no mode is that large: say so without echoing a huge number
        raise UsageError(f"{path}: key {quoted(key)}: out of range for a mode (at most 0o777)")
    digits = str(value)
    hint = f'0o{int(digits):03d} or "{digits:0>3}"' if set(digits) <= set("01234567") else None
    hint = hint or f'0o{value:o} (the value of {value}) or "{value:o}"'
    raise UsageError(
        f"{path}: key {quoted(key)}: {value} is a decimal integer (octal {value:o}); a mode is "
        f"octal: write {key} = {hint}"
    )


def _written_with_base(key: str, text: str) -> bool:
    """Whether KEY's value in TEXT is written as 0o.., 0x.. or 0b.. (not in decimal)."""
    keys = f"(?:{key}|\"{key}\"|'{key}')"
    pattern = re.compile(f"^[ \\t]*{keys}[ \\t]*=[ \\t]*([+-]?[0-9][0-9a-zA-Z_]*)", re.MULTILINE)
    literals = pattern.findall(text)
    return bool(literals) and all(lit[:2].lower() in ("0o", "0x", "0b") for lit in literals)


def _validate(key: str, value: str, path: str) -> None:
    check = VALIDATORS.get(key)
    if check is None:
        return
    try:
        check(value)
    except UsageError as e:
        raise UsageError(f"{path}: key {quoted(key)}: {e.message}") from None


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _scalar(value: object, path: str, key: str, numbers: bool = True) -> str:
    if isinstance(value, str):
        if "\0" in value:
            # No argv, path or environment string can hold one: refused here,
            # not by exec or mkdir halfway through the setup.
            raise UsageError(f"{path}: key {quoted(key)}: {quoted(value)} holds a NUL character")
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            # str() of an integer of 4300+ digits raises; none of pyinit's numbers is near.
            raise UsageError(f"{path}: key {quoted(key)}: integer out of range")
        return str(value)
    wanted = "a string or a number" if numbers else "a string"
    raise UsageError(f"{path}: key {quoted(key)}: expected {wanted}, not {_kind(value)}")


def _string_list(
    value: object, path: str, key: str, *, allow_empty: bool, numbers: bool = False
) -> list[str]:
    if not isinstance(value, list):
        raise UsageError(
            f"{path}: key {quoted(key)}: expected an array of strings, not {_kind(value)}"
        )
    if not value and not allow_empty:
        raise UsageError(f"{path}: key {quoted(key)}: empty array")
    return [_scalar(v, path, key, numbers=numbers) for v in value]


def start_items(value: object, path: str) -> list[ItemSpec]:
    """The ``[[start]]`` array of tables as checked ItemSpecs, in file order."""
    if not isinstance(value, list):
        raise UsageError(f"{path}: key 'start': expected [[start]] tables, not {_kind(value)}")
    return [_start_item(table, path, number) for number, table in enumerate(value, 1)]


def _start_item(table: object, path: str, number: int) -> ItemSpec:
    where = f"{path}: [[start]] #{number}"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table, not {_kind(table)}")
    kinds = [k for k in ("sidecar", "task") if k in table]
    if len(kinds) != 1:
        raise UsageError(f'{where}: needs exactly one of sidecar = "NAME" or task = "NAME"')
    kind = kinds[0]
    name = table[kind]
    if not isinstance(name, str):
        raise UsageError(f"{where}: key {quoted(kind)}: expected a string, not {_kind(name)}")
    where = f"{where} ({name if name.isprintable() and len(name) <= 40 else quoted(name, 40)})"
    if "command" not in table:
        raise UsageError(f"{where}: key 'command' is missing")
    command = _string_list(table["command"], where, "command", allow_empty=False)
    pairs: list[tuple[str, str]] = []
    for key, value in table.items():
        if key in (kind, "command"):
            continue
        if key == "env":
            pairs.extend(("env", f"{k}={v}") for k, v in _env_table(value, where))
        elif key == "file-env" and isinstance(value, list):  # as the top-level key: an array
            names = _string_list(value, where, key, allow_empty=False)
            pairs.extend(("file-env", name) for name in names)
        elif key in ALL_KEYS:
            pairs.append((key, _scalar(value, where, key, numbers=key in NUMERIC_ITEM_KEYS)))
        else:
            raise UsageError(f"{where}: unknown key {quoted(key)} (one of {', '.join(ALL_KEYS)})")
    spec = ItemSpec(kind=kind, name=name, command=tuple(command), pairs=tuple(pairs), where=where)
    check_item_spec(spec)
    return spec


def _env_table(value: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict):
        raise UsageError(
            f"{where}: key 'env': expected a table of NAME = \"VALUE\", not {_kind(value)}"
        )
    for name in value:
        if not name or "=" in name or "\0" in name:
            raise UsageError(f"{where}: key 'env': bad variable name {quoted(name)}")
    return [(name, _scalar(v, where, f"env.{name}")) for name, v in value.items()]
