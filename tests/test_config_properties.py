"""Property: whatever TOML a config file holds, the loader gives a plan or one clean line.

hypothesis writes generated documents (every key pyinit knows and odd
ones, each with values of every TOML type: strings with NUL, newlines and
escape sequences, huge integers, inf and nan, arrays, inline tables,
``[[start]]`` tables, nesting thousands deep, and plain garbage) to a
root-owned file and plans ``--config FILE`` in-process, as ``--dry-run``
does.  The answer is a Plan or one UsageError (exit 125) whose message is a
single line without control characters and of bounded length, never
another exception.  Every example has a deadline: bounded time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from plan_helpers import ALL_CAPS
from sandbox import base_environment, scratch_dir

from pyinit.cli import build_parser, parse_options
from pyinit.errors import PyinitError
from pyinit.plan import Plan, build_plan
from pyinit.plan.items import ALL_KEYS

#: A message quotes a few values, each cut to 100 characters, and a path.
MESSAGE_LIMIT = 1200

CONFIG = settings(
    max_examples=400,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Raw(str):
    """A TOML literal written as it is (an integer too long for ``str(int)``, nesting)."""


OPTION_KEYS = sorted(opt[2:] for action in build_parser()._actions for opt in action.option_strings)
ODD_KEYS = ["", "a\nb", "\x00", "\x1b[2K", "k" * 300, "start.x", "umask ", "UMASK"]
TOP_KEYS = st.sampled_from([*OPTION_KEYS, "command", "start", *ODD_KEYS])
ITEM_KEYS = st.sampled_from(["sidecar", "task", "command", "env", *ALL_KEYS, *ODD_KEYS])

SAMPLES = [
    "nobody", "root", "0", "1000:1000", "/data", "/data:0750", "/tmp/..", "tcp:6380", "notify",
    "exec:true", "fd:3", "nofile=1024", "TERM:QUIT", "NET_BIND_SERVICE", "027", "0o77", "8",
    "on-failure", "never", "1:2", "5/60", "db", "a b", "-", "--", "~", "x\x00y", "\n", "\r",
    "\x1b]0;t\x07", "\u2028", "A" * 300, "inf", "nan", "1e999", "-1",
]  # fmt: skip
STRINGS = st.one_of(
    st.sampled_from(SAMPLES),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
)
HUGE = st.tuples(st.integers(min_value=4000, max_value=6000), st.booleans()).map(
    lambda t: Raw("9" * t[0] if t[1] else "0o" + "7" * t[0])
)
INTEGERS = st.one_of(
    st.integers(min_value=-2, max_value=1000),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 7, 63, 77, 511, 512, 2**31, 2**63, 2**64, 2**64 + 1, -1]),
    HUGE,
)
SCALARS = st.one_of(STRINGS, INTEGERS, st.floats(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(STRINGS, inner, max_size=3),
    ),
    max_leaves=12,
)
DEEP = st.tuples(st.integers(min_value=1, max_value=4000), st.booleans()).map(
    lambda t: Raw("[" * t[0] + "]" * t[0] if t[1] else "{a = " * t[0] + "1" + "}" * t[0])
)
ANY_VALUE = st.one_of(VALUES, SCALARS, st.lists(STRINGS, max_size=3), DEEP)
ITEMS = st.lists(st.dictionaries(ITEM_KEYS, ANY_VALUE, max_size=6), max_size=3)
NEAR_ITEMS = st.lists(
    st.fixed_dictionaries(
        {"sidecar": STRINGS, "command": st.lists(STRINGS, min_size=1, max_size=3)},
        optional={k: ANY_VALUE for k in ALL_KEYS},
    ),
    max_size=3,
)


def toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    """VALUE as a TOML inline value."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(pairs) + "}"


def toml_document(top: dict[str, object], items: list[dict[str, object]]) -> str:
    """Top-level keys, then one ``[[start]]`` table per item."""
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in top.items()]
    for item in items:
        lines.append("[[start]]")
        lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


#: Values that are right for their key, to mix with wrong ones (plans, not only errors).
GOOD = [
    ("user", "nobody"), ("umask", Raw("0o077")), ("umask", "027"), ("umask", 5),
    ("mkdir", ["/data:0750"]), ("chown", ["/srv"]), ("stop-timeout", 3), ("stop-timeout", 2.5),
    ("no-new-privs", True), ("rlimit", ["nofile=1024"]), ("keep-fd", [5]), ("mode", "supervise"),
    ("rewrite", ["TERM:QUIT"]), ("pre", ["true"]), ("post", ["true"]), ("ready", "tcp:8080"),
    ("workdir", "/srv"), ("command", ["app"]), ("signal-group", True), ("keep-cap", ["CHOWN"]),
]  # fmt: skip
GOOD_ITEM = {"sidecar": "db", "command": ["x"]}
MIXED = st.tuples(
    st.lists(st.sampled_from(GOOD), max_size=6).map(dict),
    st.dictionaries(TOP_KEYS, ANY_VALUE, max_size=1),
    st.lists(st.just(GOOD_ITEM), max_size=1),
).map(lambda t: toml_document({**t[0], **t[1]}, t[2]))

DOCUMENTS = st.one_of(
    MIXED,
    MIXED,
    st.builds(toml_document, st.dictionaries(TOP_KEYS, ANY_VALUE, max_size=6), ITEMS),
    st.builds(toml_document, st.dictionaries(TOP_KEYS, ANY_VALUE, max_size=2), NEAR_ITEMS),
    st.builds(toml_document, st.dictionaries(TOP_KEYS, SCALARS, max_size=2), st.just([])),
    st.builds(
        toml_document, st.dictionaries(TOP_KEYS, st.lists(STRINGS, max_size=2), max_size=2), ITEMS
    ),
    st.text(max_size=200),  # garbage, mostly a syntax error
)


@pytest.fixture(scope="module")
def config_path() -> Iterator[Path]:
    """A root-owned file in a root-owned 0755 directory, rewritten for each example."""
    with scratch_dir("pyinit-props-") as directory:
        yield directory / "pyinit.toml"


def plan_or_error(path: Path, argv: list[str]) -> Plan | PyinitError:
    """Plan ``--config PATH ARGV`` as --dry-run would: the Plan, or the one error."""
    env = base_environment()
    try:
        options = parse_options(["--config", str(path), *argv], env)
        return build_plan(options, env, pid=4242, euid=os.geteuid(), capability_mask=ALL_CAPS)
    except PyinitError as e:
        return e


@CONFIG
@given(document=DOCUMENTS, command=st.booleans())
@example(document='umask = 0o077\ncommand = ["x"]\n', command=False)
@example(document='[[start]]\nsidecar = "x\\npyinit: forged"\ncommand = ["x"]\n', command=True)
@example(document="command = " + "[" * 3000 + "]" * 3000 + "\n", command=True)
@example(document="keep-fd = [" + "9" * 5000 + "]\n", command=True)
def test_any_config_gives_a_plan_or_one_clean_line(
    config_path: Path, document: str, command: bool
) -> None:
    config_path.write_bytes(document.encode("utf-8", "surrogatepass"))
    result = plan_or_error(config_path, ["--", "main"] if command else [])
    if isinstance(result, Plan):
        assert result.config_files == (str(config_path),)
        return
    message = result.message
    assert result.exit_code == 125, message
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in message), message
    assert len(message) <= MESSAGE_LIMIT, message
