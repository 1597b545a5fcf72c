"""Property-based tests: whatever a user types, pyinit gives a plan or one clear error.

For every flag and environment parser, and for the /etc/passwd and
/etc/group readers, hypothesis feeds arbitrary and near-valid text (ASCII
and non-ASCII digits, signs, spaces, colons, surrogate-escaped bytes).  The
answer must be a value or exactly one :class:`UsageError` (exit 125, one
line, naming the flag), never another exception.  Round-trip properties
check that what is valid parses to what it says.  A few end-to-end runs of
``python -m pyinit --dry-run`` with generated arguments check what a user
sees: exit 0 or 125, one ``pyinit: `` line, no traceback, nothing created.

Settings are deterministic (``derandomize``, no example database) and
bounded, so the file runs in well under a minute and CI sees the same cases.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from plan_helpers import ALL_CAPS
from sandbox import PROJECT_ROOT, base_environment

from pyinit.cli import parse_options
from pyinit.errors import PyinitError
from pyinit.plan import build_plan
from pyinit.plan.build import (
    MAX_FINITE_LIMIT,
    parse_fd,
    parse_mkdir,
    parse_octal,
    parse_rlimit,
    parse_stop_timeout,
)
from pyinit.plan.capabilities import CAPABILITY_NUMBERS, parse_capability
from pyinit.plan.signals import parse_rewrite, parse_signal, signal_name
from pyinit.plan.userspec import (
    MAX_ID,
    GroupEntry,
    Identity,
    PasswdEntry,
    read_group,
    read_passwd,
    resolve_group,
    resolve_user_spec,
)

T = TypeVar("T")

#: In-process properties: fast, so many examples.
FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: End-to-end properties start a Python process per example: few examples.
SLOW = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- strategies ------------------------------------------------------------------------

#: Pieces that make text look almost valid: digits of other scripts (str.isdigit
#: accepts them), signs, spaces, separators, limit and signal words.
TOKENS = [
    "0", "1", "3", "7", "10", "022", "0750", "999", "1000", "65534",
    str(MAX_ID), str(MAX_ID + 1), "4294967296", "99999999999", str(2**63), str(2**64),
    "\u00b2", "\u0661\u0662", "\u0660", "\uff11", "\U0001d7d9", "\u2167",
    "+", "-", "-1", " ", "\t", ":", "::", ",", "=", ".", "/", "0o", "_", "e", "\n", "\r",
    "unlimited", "infinity", "nofile", "core", "RLIMIT_", "stack",
    "TERM", "SIG", "KILL", "CHLD", "RTMIN", "RTMAX", "\u017f", "\u0131",
    "CAP_", "net_bind_service", "SETUID",
    "root", "alice", "video", "audio", "nobody", "#", "+nis",
    "nan", "inf", "1e3", "\x00", "\udcff", "\udc80",
]  # fmt: skip

ANY_TEXT = st.text(max_size=24)
ESCAPED_BYTES = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
NEAR_VALID = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=3), ESCAPED_BYTES), max_size=6
).map("".join)
INPUTS = st.one_of(NEAR_VALID, ANY_TEXT)

#: What can reach argv or the environment: no NUL.
ARG_TEXT = INPUTS.map(lambda s: s.replace("\x00", ""))


def outcome(call: Callable[[], T], flag: str) -> T | None:
    """``call()``'s value, or None after checking the one allowed error."""
    try:
        return call()
    except PyinitError as e:
        assert e.exit_code == 125, e.message
        assert flag in e.message, e.message
        assert "\n" not in e.message, e.message
        return None


# --- user specs, --groups --------------------------------------------------------------

PASSWD = [
    PasswdEntry(name="root", uid=0, gid=0, home="/root", shell="/bin/sh"),
    PasswdEntry(name="alice", uid=1000, gid=1000, home="/home/alice", shell=""),
    PasswdEntry(name="1001", uid=2001, gid=2001, home="/x", shell=""),
    PasswdEntry(name="nobody", uid=65534, gid=65534, home="/nonexistent", shell=""),
]
GROUPS = [
    GroupEntry(name="root", gid=0, members=()),
    GroupEntry(name="audio", gid=29, members=("alice",)),
    GroupEntry(name="video", gid=44, members=("alice", "nobody")),
    GroupEntry(name="1001", gid=3001, members=()),
]


def assert_sane_identity(ident: Identity) -> None:
    """Every id a step-down would pass to the kernel is in 0..MAX_ID."""
    assert 0 <= ident.uid <= MAX_ID
    assert 0 <= ident.gid <= MAX_ID
    assert all(0 <= g <= MAX_ID for g in ident.groups)
    assert ident.home


@example("\u00b2")
@example("\u0661\u0662:\u0660")
@FAST
@given(INPUTS)
def test_user_spec_resolves_or_names_the_flag(spec: str) -> None:
    ident = outcome(lambda: resolve_user_spec(spec, PASSWD, GROUPS, 0, 0), "--user")
    if ident is not None:
        assert_sane_identity(ident)
        assert ident.spec == spec


@FAST
@given(st.integers(0, MAX_ID), st.integers(0, MAX_ID))
def test_numeric_specs_are_ids(uid: int, gid: int) -> None:
    ident = resolve_user_spec(f"{uid}:{gid}", PASSWD, GROUPS, 0, 0)
    assert (ident.uid, ident.gid, ident.groups) == (uid, gid, ())


@FAST
@given(st.integers(MAX_ID + 1, 2**80) | st.integers(-(2**40), -1))
def test_ids_out_of_range_are_refused(number: int) -> None:
    for spec in (str(number), f"alice:{number}"):
        assert outcome(lambda s=spec: resolve_user_spec(s, PASSWD, GROUPS, 0, 0), "--user") is None


@FAST
@given(INPUTS)
def test_groups_flag_resolves_or_names_the_flag(text: str) -> None:
    gid = outcome(lambda: resolve_group(text, "--groups", GROUPS), "--groups")
    if gid is not None:
        assert 0 <= gid <= MAX_ID


# --- the passwd and group readers -------------------------------------------------------

NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8).filter(
    lambda n: not n[0].isdigit()
)
FIELD = st.text(alphabet="abcdefghij/ ._-", max_size=8)
BAD_ID = st.sampled_from(
    ["", "\u00b2", "\u0661\u0662", "\uff11", "+5", "-1", " 5", "5 ", "0x1", "1e3", "abc"]
) | st.integers(MAX_ID + 1, 2**70).map(str)


def passwd_line(entry: PasswdEntry) -> str:
    """One passwd line for ``entry``."""
    return f"{entry.name}:x:{entry.uid}:{entry.gid}:gecos:{entry.home}:{entry.shell}"


VALID_USER = st.builds(
    PasswdEntry,
    name=NAME,
    uid=st.integers(0, MAX_ID),
    gid=st.integers(0, MAX_ID),
    home=FIELD.map(lambda s: s.strip(" ")),
    shell=FIELD.map(lambda s: s.strip(" ")),
)


@st.composite
def malformed_passwd_line(draw: st.DrawFn) -> str:
    """A line Docker's parser would misread (as uid 0, or wrapped) and pyinit skips."""
    name = draw(NAME)
    kind = draw(st.sampled_from(["bad uid", "bad gid", "short", "nis", "comment", "blank"]))
    if kind == "bad uid":
        return f"{name}:x:{draw(BAD_ID)}:0::/h:/bin/sh"
    if kind == "bad gid":
        return f"{name}:x:5:{draw(BAD_ID)}::/h:/bin/sh"
    if kind == "short":
        return ":".join([name, "x", "5"][: draw(st.integers(1, 3))])
    if kind == "nis":
        return draw(st.sampled_from(["+", "-"])) + name + "::::::"
    if kind == "comment":
        return f"#{name}:x:0:0::/:/bin/sh"
    return draw(st.sampled_from(["", " ", "\t", "\r"]))


def read_text_as(reader: Callable[[str], T], data: bytes) -> T:
    """``reader(path)`` on a temporary file holding ``data``."""
    with tempfile.NamedTemporaryFile(prefix="pyinit-prop-") as f:
        f.write(data)
        f.flush()
        return reader(f.name)


@FAST
@given(st.lists(st.one_of(VALID_USER, malformed_passwd_line()), max_size=8))
def test_passwd_keeps_valid_lines_and_skips_malformed_ones(
    lines: list[PasswdEntry | str],
) -> None:
    text = "\n".join(passwd_line(x) if isinstance(x, PasswdEntry) else x for x in lines)
    expected = [x for x in lines if isinstance(x, PasswdEntry)]
    assert read_text_as(read_passwd, text.encode()) == expected


@st.composite
def group_line(draw: st.DrawFn) -> tuple[str, GroupEntry | None]:
    """A group line and the entry it must give (None: the line is skipped)."""
    name = draw(NAME)
    members = tuple(draw(st.lists(NAME, max_size=3)))
    if draw(st.booleans()):
        gid = draw(st.integers(0, MAX_ID))
        return f"{name}:x:{gid}:{','.join(members)}", GroupEntry(
            name=name, gid=gid, members=members
        )
    return f"{name}:x:{draw(BAD_ID)}:{','.join(members)}", None


@FAST
@given(st.lists(group_line(), max_size=8))
def test_group_keeps_valid_lines_and_skips_malformed_ones(
    lines: list[tuple[str, GroupEntry | None]],
) -> None:
    text = "\n".join(line for line, _ in lines) + "\n"
    expected = [entry for _, entry in lines if entry is not None]
    assert read_text_as(read_group, text.encode()) == expected


#: Bytes that look like a user database: fields, ids of every kind, bad UTF-8.
DB_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.lists(
            st.sampled_from(TOKENS).map(lambda s: s.encode("utf-8", "surrogateescape"))
            | st.sampled_from([b"\xff", b"\xc3", b"x", b"alice", b"/home", b"\r\n", b""])
            | st.binary(max_size=4),
            max_size=8,
        ).map(b":".join),
        max_size=8,
    ).map(b"\n".join),
)


@FAST
@given(DB_BYTES, DB_BYTES, INPUTS)
def test_any_database_gives_sane_entries_and_identities(
    passwd_bytes: bytes, group_bytes: bytes, spec: str
) -> None:
    passwd = read_text_as(read_passwd, passwd_bytes)
    groups = read_text_as(read_group, group_bytes)
    for p in passwd:
        assert 0 <= p.uid <= MAX_ID and 0 <= p.gid <= MAX_ID
        assert p.name and p.name[0] not in "#+-" and ":" not in p.name and "\n" not in p.name
    for g in groups:
        assert 0 <= g.gid <= MAX_ID and g.name and ":" not in g.name
        assert all(m and "," not in m for m in g.members)
    names = [p.name for p in passwd] + [f"{p.name}:{g.name}" for p in passwd for g in groups]
    for candidate in [spec, *names[:6]]:
        ident = outcome(lambda c=candidate: resolve_user_spec(c, passwd, groups, 0, 0), "--user")
        if ident is not None:
            assert_sane_identity(ident)


# --- root-setup flags: --rlimit, --umask, --mkdir, --keep-fd ---------------------------


@example("nofile=\u00b2")
@example("core=18446744073709551616")
@FAST
@given(INPUTS)
def test_rlimit_parses_or_names_the_flag(text: str) -> None:
    step = outcome(lambda: parse_rlimit(text), "--rlimit")
    if step is not None:
        for value in (step.soft, step.hard):
            assert value == resource.RLIM_INFINITY or 0 <= value <= MAX_FINITE_LIMIT
        # Every planned limit is one setrlimit can take.
        assert step.resource in {
            getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")
        }


RLIMIT_NAMES = ["core", "cpu", "fsize", "stack", "data", "nproc", "memlock"]


@FAST
@given(
    st.sampled_from(RLIMIT_NAMES),
    st.integers(0, MAX_FINITE_LIMIT),
    st.integers(0, MAX_FINITE_LIMIT),
)
def test_rlimit_round_trip(name: str, a: int, b: int) -> None:
    soft, hard = min(a, b), max(a, b)
    step = parse_rlimit(f"{name}={soft}:{hard}")
    assert (step.name, step.soft, step.hard) == (name, soft, hard)


@FAST
@given(st.integers(MAX_FINITE_LIMIT + 1, 2**70) | st.integers(-(2**70), -2))
def test_rlimit_out_of_range_is_refused(value: int) -> None:
    assert outcome(lambda: parse_rlimit(f"core={value}"), "--rlimit") is None


@FAST
@given(INPUTS)
def test_umask_parses_or_names_the_flag(text: str) -> None:
    mask = outcome(lambda: parse_octal(text, "--umask", 0o777), "--umask")
    if mask is not None:
        assert 0 <= mask <= 0o777


@FAST
@given(st.integers(0, 0o777))
def test_umask_round_trip(mask: int) -> None:
    assert parse_octal(f"{mask:o}", "--umask", 0o777) == mask
    assert parse_octal(f"0{mask:03o}", "--umask", 0o777) == mask


@FAST
@given(st.one_of(INPUTS, st.tuples(st.just("/srv/"), INPUTS, st.just(":"), INPUTS).map("".join)))
def test_mkdir_parses_or_names_the_flag(text: str) -> None:
    step = outcome(lambda: parse_mkdir(text), "--mkdir")
    if step is not None:
        assert step.path.startswith("/") and step.path.strip("/")
        assert step.mode is None or 0 <= step.mode <= 0o7777


@example("\u00b2")
@example("2147483648")
@FAST
@given(INPUTS)
def test_keep_fd_parses_or_names_the_flag(text: str) -> None:
    fd = outcome(lambda: parse_fd(text, 1024), "--keep-fd")
    if fd is not None:
        assert 3 <= fd < 1024


@FAST
@given(st.integers(0, 2**70))
def test_keep_fd_range(number: int) -> None:
    fd = outcome(lambda: parse_fd(str(number), limit=1024), "--keep-fd")
    assert fd == (number if 3 <= number < 1024 else None)


# --- supervise flags: signals, --rewrite, --stop-timeout ------------------------------


@example("\u00b2")
@example("RTMIN+\u00b2")
@example("\u017figterm")
@FAST
@given(INPUTS)
def test_signal_names_parse_or_name_the_flag(text: str) -> None:
    number = outcome(lambda: parse_signal(text, "--stop-signal"), "--stop-signal")
    if number is not None:
        assert number in signal.valid_signals()


@FAST
@given(st.sampled_from(sorted(signal.valid_signals())))
def test_signal_round_trip(number: int) -> None:
    name = signal_name(int(number))
    for text in (name, name.removeprefix("SIG").lower(), str(int(number))):
        assert parse_signal(text, "--x") == number


@example("TERM:\u00b2")
@example("\u00b2:TERM")
@FAST
@given(st.one_of(INPUTS, st.tuples(INPUTS, st.just(":"), INPUTS).map("".join)))
def test_rewrite_parses_or_names_the_flag(text: str) -> None:
    pair = outcome(lambda: parse_rewrite(text), "--rewrite")
    if pair is not None:
        src, dst = pair
        assert src in signal.valid_signals()
        assert src not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
        assert dst == 0 or dst in signal.valid_signals()


@example("\u0661")
@example("1_0")
@FAST
@given(INPUTS)
def test_stop_timeout_parses_or_names_the_flag(text: str) -> None:
    value = outcome(lambda: parse_stop_timeout(text), "--stop-timeout")
    if value is not None:
        assert 0 <= value < float("inf")


@FAST
@given(st.integers(0, 10**6), st.integers(0, 999))
def test_stop_timeout_round_trip(whole: int, millis: int) -> None:
    assert parse_stop_timeout(f"{whole}.{millis:03d}") == pytest.approx(whole + millis / 1000)


# --- --keep-cap, environment variables, whole plans -----------------------------------


@FAST
@given(st.one_of(INPUTS, st.sampled_from(sorted(CAPABILITY_NUMBERS)).map("cap_{}".format)))
def test_keep_cap_parses_or_names_the_flag(text: str) -> None:
    name = outcome(lambda: parse_capability(text, "--keep-cap"), "--keep-cap")
    if name is not None:
        assert name in CAPABILITY_NUMBERS


def plan_outcome(argv: list[str], environ: dict[str, str], flag: str) -> object:
    """Parse and plan as root with every capability, not PID 1; check the error."""

    def plan() -> object:
        options = parse_options([*argv, "--", "true"], environ)
        return build_plan(options, environ, pid=4242, euid=0, capability_mask=ALL_CAPS)

    return outcome(plan, flag)


@FAST
@given(ARG_TEXT)
def test_pyinit_mode_env(text: str) -> None:
    plan_outcome([], base_environment(PYINIT_MODE=text), "PYINIT_MODE")


@FAST
@given(ARG_TEXT)
def test_pyinit_file_env(text: str) -> None:
    # NAME_FILE is not set, so nothing is read: only the list itself is parsed.
    plan_outcome([], base_environment(PYINIT_FILE_ENV=text), "--file-env")


@FAST
@given(st.lists(ARG_TEXT, min_size=1, max_size=3))
def test_groups_lists_in_a_plan(values: list[str]) -> None:
    # The machine's /etc/group is read, never changed.
    plan_outcome(["--user=0:0", *(f"--groups={v}" for v in values)], base_environment(), "--groups")


# --- end to end: python -m pyinit --dry-run --------------------------------------------

#: Flags taking a value, and the near-valid text they get.
VALUE_FLAGS = [
    "--user", "--groups", "--rlimit", "--umask", "--mkdir", "--keep-fd", "--rewrite",
    "--stop-timeout", "--keep-cap", "--mode", "--file-env",
]  # fmt: skip
FLAG_VALUE = st.tuples(st.sampled_from(VALUE_FLAGS), ARG_TEXT).map("=".join)
ARG_BYTES = st.binary(max_size=12).map(lambda b: b.replace(b"\x00", b""))


def run_dry(args: list[str | bytes], env: dict[str, str], cwd: str) -> tuple[int, str]:
    """``python -m pyinit --dry-run ARGS -- true``: exit code and stderr."""
    argv: list[str | bytes] = [sys.executable, "-m", "pyinit", "--dry-run", *args, "--", "true"]
    proc = subprocess.run(
        argv,
        env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def assert_user_sees_a_plan_or_one_error(code: int, stderr: str) -> None:
    """Exit 0 or 125; 125 is exactly one ``pyinit: `` line; never a traceback."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert code in (0, 125), (code, stderr)
    if code == 125:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyinit: "), stderr


@SLOW
@given(st.lists(FLAG_VALUE | ARG_BYTES.map(lambda b: b"--user=" + b), min_size=1, max_size=4))
def test_dry_run_with_generated_flags(args: list[str | bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="pyinit-prop-") as cwd:
        # Relative and absolute paths below cwd: a dry run must create nothing.
        mkdir = f"--mkdir={cwd}/made:0700"
        code, stderr = run_dry([mkdir, f"--chown={cwd}/made", *args], base_environment(), cwd)
        assert_user_sees_a_plan_or_one_error(code, stderr)
        assert os.listdir(cwd) == []


ENV_NAMES = ["PYINIT_MODE", "PYINIT_USER", "PYINIT_FILE_ENV", "COLUMNS"]


@SLOW
@given(st.dictionaries(st.sampled_from(ENV_NAMES), ARG_TEXT, min_size=1))
def test_dry_run_with_generated_environment(extra: dict[str, str]) -> None:
    env = base_environment(**extra)
    code, stderr = run_dry([], env, "/")
    assert_user_sees_a_plan_or_one_error(code, stderr)


@pytest.mark.parametrize(
    "arg",
    [
        "--keep-fd=\u00b2",
        "--keep-fd=2147483648",
        "--rlimit=nofile=\u00b2",
        "--rlimit=core=18446744073709551616",
        "--rewrite=TERM:\u00b2",
        "--stop-timeout=\u0661",
        "--umask=\u0660\u0662\u0667",
        "--groups=99999999999",
    ],
)
def test_regressions_of_issue_8_items_11_and_12(arg: str, tmp_path: Path) -> None:
    code, stderr = run_dry([f"--mkdir={tmp_path}/made", arg], base_environment(), "/")
    assert_user_sees_a_plan_or_one_error(code, stderr)
    assert code == 125
    assert arg.partition("=")[0] in stderr
    assert not (tmp_path / "made").exists()
