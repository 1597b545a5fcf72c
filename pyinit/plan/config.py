"""``--config FILE`` (env PYINIT_CONFIG): options and ``[[start]]`` items from TOML.

The file becomes argparse defaults: every long option is a top-level key,
parsed into the same Namespace the flags fill, so each option keeps its one
validation.  Flags given on the command line then override the file's
scalars and append to its lists (argparse copies a list default before
appending).  ``[[start]]`` tables become the first entries of the shared
``--sidecar``/``--task`` list, so the file's items start before the flags'.
Every problem is one line naming the file and the key, exit 125.
:mod:`tomllib` is imported only here, i.e. only when a config file is used.
"""

from __future__ import annotations

import argparse
import tomllib

from pyinit.errors import UsageError
from pyinit.plan.build import (
    parse_chown,
    parse_fd,
    parse_mkdir,
    parse_octal,
    parse_rlimit,
    parse_stop_timeout,
    shell_hook,
)
from pyinit.plan.capabilities import parse_capability
from pyinit.plan.items import ALL_KEYS, ItemSpec, check_item_spec, parse_probe
from pyinit.plan.onlyfor import check_only_for
from pyinit.plan.signals import parse_rewrite
from pyinit.plan.userspec import resolve_group, resolve_user_spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

#: Long options that make no sense in a file (items go in [[start]] tables).
NOT_IN_FILE = ("config", "help", "version", "sidecar", "task")

#: Item keys that may be written as TOML numbers.
NUMERIC_ITEM_KEYS = ("ready-timeout", "max-restarts")

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
    "keep-cap": lambda v: parse_capability(v, "--keep-cap"),
    "keep-fd": parse_fd,
    "rewrite": parse_rewrite,
    "pre": lambda v: shell_hook(v, "--pre"),
    "post": lambda v: shell_hook(v, "--post"),
    "ready": lambda v: parse_probe(v, f"--ready {v!r}"),
    "only-for": check_only_for,
}


def parse_with_config(
    path: str, build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> tuple[argparse.Namespace, list[str]]:
    """Parse argv over the defaults FILE gives; returns the options and the file's ``command``."""
    data = load_toml(path)
    parser = build_parser()
    defaults, command = file_defaults(data, parser, path)
    parser.set_defaults(**defaults)
    return parser.parse_args(argv), command


def load_toml(path: str) -> dict[str, Any]:
    """Read and parse FILE; one line naming it on any error."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UsageError(f"--config {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: TOML syntax error: {e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from None


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        opt[2:]: action
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--")
    }


def file_defaults(
    data: dict[str, Any], parser: argparse.ArgumentParser, path: str
) -> tuple[dict[str, Any], list[str]]:
    """Map the file's top-level keys to argparse defaults, checking type and value of each."""
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
            raise UsageError(f"{path}: unknown key {key!r} (keys are long options without '--')")
        defaults[action.dest] = _option_value(action, value, path, key)
    return defaults, command


def _option_value(action: argparse.Action, value: object, path: str, key: str) -> object:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UsageError(f"{path}: key {key!r}: expected true or false, not {_kind(value)}")
        return value
    if isinstance(action, argparse._AppendAction):
        values = _string_list(value, path, key, allow_empty=True, numbers=True)
        for v in values:
            _validate(key, v, path)
        return values
    text = _scalar(value, path, key)
    if action.choices is not None and text not in action.choices:
        choices = ", ".join(str(c) for c in action.choices)
        raise UsageError(f"{path}: key {key!r}: {text!r} is not one of {choices}")
    _validate(key, text, path)
    return text


def _validate(key: str, value: str, path: str) -> None:
    check = VALIDATORS.get(key)
    if check is None:
        return
    try:
        check(value)
    except UsageError as e:
        raise UsageError(f"{path}: key {key!r}: {e.message}") from None


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _scalar(value: object, path: str, key: str, numbers: bool = True) -> str:
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    wanted = "a string or a number" if numbers else "a string"
    raise UsageError(f"{path}: key {key!r}: expected {wanted}, not {_kind(value)}")


def _string_list(
    value: object, path: str, key: str, *, allow_empty: bool, numbers: bool = False
) -> list[str]:
    if not isinstance(value, list):
        raise UsageError(f"{path}: key {key!r}: expected an array of strings, not {_kind(value)}")
    if not value and not allow_empty:
        raise UsageError(f"{path}: key {key!r}: empty array")
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
        raise UsageError(f"{where}: key {kind!r}: expected a string, not {_kind(name)}")
    where = f"{where} ({name})"
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
            raise UsageError(f"{where}: unknown key {key!r} (one of {', '.join(ALL_KEYS)})")
    spec = ItemSpec(kind=kind, name=name, command=tuple(command), pairs=tuple(pairs), where=where)
    check_item_spec(spec)
    return spec


def _env_table(value: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict):
        raise UsageError(
            f"{where}: key 'env': expected a table of NAME = \"VALUE\", not {_kind(value)}"
        )
    for name in value:
        if not name or "=" in name:
            raise UsageError(f"{where}: key 'env': bad variable name {name!r}")
    return [(name, _scalar(v, where, f"env.{name}")) for name, v in value.items()]
