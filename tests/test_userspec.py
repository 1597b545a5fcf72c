"""User specs, as the target sees them, and side by side with real gosu.

Every spec runs ``pyinit --user SPEC -- sh -c PROBE`` in the fixture sandbox
(see :mod:`sandbox` for the users and groups) and checks uid, gid, the exact
supplementary groups (``Groups:`` of /proc/self/status), HOME, USER and
LOGNAME.  The same specs then go through ``gosu`` in the same sandbox, and
the ids must match; the differences that are on purpose are listed in
:data:`GOSU_DIFFERENCES` and documented in docs/stepdown.md.
"""

from __future__ import annotations

import shutil
from typing import NamedTuple

import pytest
from sandbox import Sandbox, base_environment

from pyinit.errors import UsageError
from pyinit.plan.userspec import (
    MAX_ID,
    GroupEntry,
    Identity,
    PasswdEntry,
    read_group,
    read_passwd,
    resolve_group,
    resolve_user_spec,
    split_spec,
)

PROBE = (
    "id -u; id -g; grep '^Groups:' /proc/self/status; "
    'printf "%s|%s|%s\\n" "${HOME-unset}" "${USER-unset}" "${LOGNAME-unset}"'
)


class Seen(NamedTuple):
    """What the target saw: ids, sorted supplementary groups, HOME, USER, LOGNAME."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    user: str
    logname: str


def parse_probe(stdout: str) -> Seen:
    """Parse PROBE's four lines."""
    lines = stdout.splitlines()
    assert len(lines) == 4, stdout
    groups = tuple(sorted(int(g) for g in lines[2].split()[1:]))
    home, user, logname = lines[3].split("|")
    return Seen(int(lines[0]), int(lines[1]), groups, home, user, logname)


def seen(uid: int, gid: int, groups: tuple[int, ...], home: str, name: str | None) -> Seen:
    """The expected view; USER and LOGNAME are unset when the user has no name."""
    user = name if name is not None else "unset"
    return Seen(uid, gid, tuple(sorted(groups)), home, user, user)


# spec -> what the target must see (pyinit started as root, gid 0).
VALID_SPECS: dict[str, Seen] = {
    # user: primary group from passwd, supplementary from the member lists
    "redis": seen(999, 999, (), "/var/lib/redis", "redis"),
    "alice": seen(1000, 1000, (29, 44, 50), "/home/alice", "alice"),
    "bob": seen(1003, 1003, (10, 29, 50), "/home/bob", "bob"),
    "nobody": seen(65534, 65534, (), "/nonexistent", "nobody"),
    "root": seen(0, 0, (), "/root", "root"),
    # user:group and user:gid: the explicit group, no supplementary groups
    "alice:video": seen(1000, 44, (), "/home/alice", "alice"),
    "alice:50": seen(1000, 50, (), "/home/alice", "alice"),
    "nobody:root": seen(65534, 0, (), "/nonexistent", "nobody"),
    "redis:4242": seen(999, 4242, (), "/var/lib/redis", "redis"),  # gid without a group line
    # uid: looked up in passwd, so it is alice with all her groups
    "1000": seen(1000, 1000, (29, 44, 50), "/home/alice", "alice"),
    # uid:gid and uid:group
    "1000:44": seen(1000, 44, (), "/home/alice", "alice"),
    "1000:staff": seen(1000, 50, (), "/home/alice", "alice"),
    "999:999": seen(999, 999, (), "/var/lib/redis", "redis"),
    # fields after a second ':' are ignored; an empty group field means none
    "redis:redis:ignored:more": seen(999, 999, (), "/var/lib/redis", "redis"),
    "alice:video:": seen(1000, 44, (), "/home/alice", "alice"),
    "redis:": seen(999, 999, (), "/var/lib/redis", "redis"),
    # numeric uid without a passwd entry: caller's gid (0), no groups, HOME=/
    "4242": seen(4242, 0, (), "/", None),
    "4242:4242": seen(4242, 4242, (), "/", None),
    "4242:audio": seen(4242, 29, (), "/", None),
    str(MAX_ID): seen(MAX_ID, 0, (), "/", None),
    # an all-digit field is an id, never a name: uid 1001, not the user "1001" (uid 2001)
    "1001": seen(1001, 0, (), "/", None),
    # ... and gid 1001, not the group "1001" (gid 3001)
    "0:1001": seen(0, 1001, (), "/root", "root"),
    # the user named "1001" cannot be reached by name, only by its uid
    "2001": seen(2001, 2001, (), "/home/digits", "1001"),
    # duplicate uid: the first passwd line wins
    "1500": seen(1500, 1500, (), "/home/dup1", "dup1"),
    "dup2": seen(1500, 1600, (), "/home/dup2", "dup2"),
    # no home field: HOME=/
    "nohome": seen(1002, 1002, (), "/", "nohome"),
    # member list "dave, carol": both are members (spaces around names ignored)
    "dave": seen(1005, 1005, (1500,), "/home/dave", "dave"),
    "carol": seen(1004, 1004, (1500,), "/home/carol", "carol"),
    # empty user field: the current user (root) with the given group
    ":audio": seen(0, 29, (), "/root", "root"),
}

# spec -> text the single error line must contain (besides the spec itself).
INVALID_SPECS: dict[str, str] = {
    "nosuchuser": "unknown user",
    "nosuchuser:audio": "unknown user",
    "alice:nosuchgroup": "unknown group",
    "1000:nosuchgroup": "unknown group",
    "4242:nosuchgroup": "unknown group",
    "2147483648": "out of range",
    "4294967296": "out of range",
    "1000:2147483648": "out of range",
    "99999999999999999999": "out of range",
    "+5": "invalid uid",
    "-1": "invalid uid",
    "1000:-1": "invalid gid",
    "1000:+44": "invalid gid",
    " alice": "invalid uid",
    "alice ": "invalid uid",
    " 1000": "invalid uid",
    "1000: 44": "invalid gid",
    "al ice": "invalid uid",
    "": "empty user spec",
    "+nisuser": "unknown user",
    "-baduser": "unknown user",
    "#": "unknown user",
}


def run_probe(sandbox: Sandbox, spec: str) -> tuple[int, str, str]:
    """pyinit --user SPEC -- sh -c PROBE in the sandbox."""
    return sandbox.pyinit(f"--user={spec}", "--", "sh", "-c", PROBE)


@pytest.mark.parametrize("spec", list(VALID_SPECS))
def test_valid_spec_as_the_target_sees_it(sandbox: Sandbox, spec: str) -> None:
    code, out, err = run_probe(sandbox, spec)
    assert (code, err) == (0, ""), err
    assert parse_probe(out) == VALID_SPECS[spec]


@pytest.mark.parametrize("spec", list(INVALID_SPECS))
def test_invalid_spec_is_one_line_and_125(sandbox: Sandbox, spec: str) -> None:
    code, out, err = run_probe(sandbox, spec)
    assert code == 125
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyinit: --user")
    assert INVALID_SPECS[spec] in lines[0]
    if spec:
        assert repr(spec) in lines[0]


def test_pyinit_user_env_is_the_same_as_the_flag(sandbox: Sandbox) -> None:
    env = base_environment(PYINIT_USER="alice:video")
    code, out, err = sandbox.pyinit("--", "sh", "-c", PROBE, env=env)
    assert (code, err) == (0, "")
    assert parse_probe(out) == VALID_SPECS["alice:video"]


def test_flag_wins_over_pyinit_user_env(sandbox: Sandbox) -> None:
    env = base_environment(PYINIT_USER="alice")
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "sh", "-c", PROBE, env=env)
    assert code == 0
    assert parse_probe(out) == VALID_SPECS["redis"]


def test_home_user_logname_replace_inherited_values(sandbox: Sandbox) -> None:
    env = base_environment(USER="root", LOGNAME="root", HOME="/root")
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "sh", "-c", PROBE, env=env)
    assert code == 0
    assert parse_probe(out)[3:] == ("/var/lib/redis", "redis", "redis")


def test_nameless_uid_keeps_no_stale_user_name(sandbox: Sandbox) -> None:
    # USER=root must not survive a step-down to a uid that has no name.
    env = base_environment(USER="root", LOGNAME="root")
    code, out, _ = sandbox.pyinit("--user", "4242", "--", "sh", "-c", PROBE, env=env)
    assert code == 0
    assert parse_probe(out) == VALID_SPECS["4242"]


# --- side by side with gosu ------------------------------------------------------------

#: Where pyinit differs from gosu 1.14 on purpose (see docs/stepdown.md).
GOSU_DIFFERENCES = {
    # Docker's parser does not trim members: " carol" is not "carol".  pyinit
    # trims, as glibc's initgroups does, so carol gets the group she is listed in.
    "carol": "member list with spaces",
    # gosu sets HOME to the empty home field; pyinit sets HOME=/.
    "nohome": "empty home field",
}

#: Specs gosu accepts that pyinit rejects on purpose.
GOSU_ACCEPTS = {
    "+5": "strconv.Atoi accepts a sign: gosu runs as uid 5",
    "": "empty spec: gosu silently stays the current user (root)",
    "1000:+44": "strconv.Atoi accepts a sign: gosu uses gid 44",
    "+nisuser": "gosu reads NIS '+' lines as real users with uid 0",
    "-baduser": "gosu reads NIS '-' lines as real users with uid 0",
}

gosu_missing = pytest.mark.skipif(shutil.which("gosu") is None, reason="gosu is not installed")


@gosu_missing
@pytest.mark.parametrize("spec", list(VALID_SPECS))
def test_same_ids_as_gosu(sandbox: Sandbox, spec: str) -> None:
    ours = parse_probe(run_probe(sandbox, spec).stdout)
    code, out, err = sandbox.run(["gosu", spec, "sh", "-c", PROBE])
    assert code == 0, err
    theirs = parse_probe(out)
    # gosu never sets USER/LOGNAME: those are pyinit additions.
    assert (theirs.user, theirs.logname) == ("unset", "unset")
    if spec in GOSU_DIFFERENCES:
        assert ours != theirs[:4] + ours[4:]
        return
    assert ours[:4] == theirs[:4]


@gosu_missing
@pytest.mark.parametrize("spec", [s for s in INVALID_SPECS if s not in GOSU_ACCEPTS])
def test_gosu_rejects_the_same_specs(sandbox: Sandbox, spec: str) -> None:
    gosu = sandbox.run(["gosu", spec, "true"])
    ours = sandbox.pyinit(f"--user={spec}", "--", "true")
    # Both refuse; gosu says so with exit 1, pyinit with docker's 125.
    assert gosu.returncode == 1, gosu
    assert ours.returncode == 125


@gosu_missing
@pytest.mark.parametrize("spec", list(GOSU_ACCEPTS))
def test_specs_gosu_accepts_but_pyinit_refuses(sandbox: Sandbox, spec: str) -> None:
    assert sandbox.run(["gosu", spec, "true"]).returncode == 0
    assert sandbox.pyinit(f"--user={spec}", "--", "true").returncode == 125


# --- unit tests: resolve_user_spec on in-memory databases -------------------------------

PASSWD = [
    PasswdEntry(name="root", uid=0, gid=0, home="/root", shell="/bin/sh"),
    PasswdEntry(name="redis", uid=999, gid=999, home="/var/lib/redis", shell=""),
    PasswdEntry(name="alice", uid=1000, gid=1000, home="/home/alice", shell=""),
    PasswdEntry(name="twin", uid=1000, gid=77, home="/home/twin", shell=""),
    PasswdEntry(name="1001", uid=2001, gid=2001, home="/x", shell=""),
    PasswdEntry(name="nohome", uid=1002, gid=1002, home="", shell=""),
]
GROUPS = [
    GroupEntry(name="audio", gid=29, members=("alice", "redis")),
    GroupEntry(name="video", gid=44, members=("alice",)),
    GroupEntry(name="again", gid=29, members=("alice",)),
    GroupEntry(name="1001", gid=3001, members=()),
    GroupEntry(name="staff", gid=50, members=()),
]


def resolve(spec: str, uid: int = 0, gid: int = 0) -> Identity:
    """resolve_user_spec against the in-memory databases, caller uid/gid given."""
    return resolve_user_spec(spec, PASSWD, GROUPS, current_uid=uid, current_gid=gid)


def test_resolve_user_name() -> None:
    ident = resolve("alice")
    assert (ident.uid, ident.gid, ident.groups, ident.home, ident.name) == (
        1000,
        1000,
        (29, 44),
        "/home/alice",
        "alice",
    )
    assert not ident.explicit_group
    assert ident.spec == "alice"


def test_resolve_duplicate_group_ids_appear_once() -> None:
    assert resolve("alice").groups.count(29) == 1


def test_resolve_explicit_group_has_no_supplementary_groups() -> None:
    ident = resolve("alice:staff")
    assert (ident.gid, ident.groups, ident.explicit_group) == (50, (), True)


def test_resolve_uid_first_match_wins() -> None:
    assert resolve("1000").name == "alice"


def test_resolve_digits_are_ids() -> None:
    ident = resolve("1001:1001")
    assert (ident.uid, ident.gid, ident.name) == (1001, 1001, None)


def test_resolve_unknown_uid_uses_callers_gid() -> None:
    ident = resolve("4242", uid=5, gid=6)
    assert (ident.uid, ident.gid, ident.groups, ident.home, ident.name) == (
        4242,
        6,
        (),
        "/",
        None,
    )


def test_resolve_empty_user_field_is_the_current_uid() -> None:
    assert resolve(":audio", uid=999).describe().startswith("redis (uid 999, gid 29")
    ident = resolve(":audio", uid=4242, gid=7)
    assert (ident.uid, ident.gid, ident.name, ident.home) == (4242, 29, None, "/")


def test_resolve_empty_home_is_root_dir() -> None:
    assert resolve("nohome").home == "/"


def test_resolve_unknown_gid_is_allowed() -> None:
    assert resolve("alice:5000").gid == 5000


@pytest.mark.parametrize("spec", list(INVALID_SPECS))
def test_resolve_rejects(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve(spec)
    assert info.value.exit_code == 125
    assert info.value.message.startswith("--user")
    assert "\n" not in info.value.message


def test_resolve_range_bounds() -> None:
    assert resolve(f"{MAX_ID}:{MAX_ID}").uid == MAX_ID
    with pytest.raises(UsageError):
        resolve(f"{MAX_ID + 1}")
    with pytest.raises(UsageError):
        resolve(f"0:{MAX_ID + 1}")


def test_resolve_non_ascii_digits_are_not_ids() -> None:
    # "١٢٣" (Arabic-Indic digits) passes str.isdigit but is not an id.
    with pytest.raises(UsageError):
        resolve("\u0661\u0662\u0663")


@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        ("a", ("a", "")),
        ("a:b", ("a", "b")),
        ("a:b:c:d", ("a", "b")),
        (":b", ("", "b")),
        ("a:", ("a", "")),
    ],
)
def test_split_spec(spec: str, fields: tuple[str, str]) -> None:
    assert split_spec(spec) == fields


def test_resolve_group_for_groups_flag() -> None:
    assert resolve_group("video", "--groups", GROUPS) == 44
    assert resolve_group("44", "--groups", GROUPS) == 44
    assert resolve_group("5000", "--groups", GROUPS) == 5000
    assert resolve_group("1001", "--groups", GROUPS) == 1001  # digits are a gid
    for bad in ("nosuch", "-1", "+4", "4294967296", ""):
        with pytest.raises(UsageError) as info:
            resolve_group(bad, "--groups", GROUPS)
        assert info.value.message.startswith("--groups")


# --- unit tests: the file parsers ------------------------------------------------------


def test_read_passwd_skips_comments_nis_and_malformed(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "passwd"
    path.write_text(
        "# comment\n"
        "\n"
        "root:x:0:0:root:/root:/bin/sh\n"
        "+nis::::::\n"
        "-gone::::::\n"
        "+\n"
        "short:x:5\n"
        "badid:x:abc:0::/:/bin/sh\n"
        "neg:x:-1:0::/:/bin/sh\n"
        "nohome:x:7:7\n"
        "  \n"
    )
    entries = read_passwd(str(path))
    assert [(e.name, e.uid, e.gid, e.home) for e in entries] == [
        ("root", 0, 0, "/root"),
        ("nohome", 7, 7, ""),
    ]


def test_read_group_strips_member_whitespace(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "group"
    path.write_text(
        "devs:x:1500:dave, carol ,, \n"
        "# comment\n"
        "+nis:::alice\n"
        "empty:x:7:\n"
        "nolist:x:8\n"
        "bad:x:x:alice\n"
    )
    entries = read_group(str(path))
    assert [(e.name, e.gid, e.members) for e in entries] == [
        ("devs", 1500, ("dave", "carol")),
        ("empty", 7, ()),
        ("nolist", 8, ()),
    ]


def test_nis_group_lines_never_grant_groups(tmp_path: object) -> None:
    # Docker's parser reads "+nis:::alice" as group 0 with member alice; pyinit skips it.
    from pathlib import Path

    group = Path(str(tmp_path)) / "group"
    group.write_text("+nis:::alice\n")
    ident = resolve_user_spec("alice", PASSWD, read_group(str(group)), 0, 0)
    assert ident.groups == ()


def test_missing_files_are_empty_databases(tmp_path: object) -> None:
    assert read_passwd(f"{tmp_path}/nope") == []
    assert read_group(f"{tmp_path}/nope") == []


def test_read_passwd_skips_non_ascii_and_out_of_range_ids(tmp_path: object) -> None:
    # Docker's parser (gosu) reads these as uid 0 or wraps them; pyinit skips the line.
    from pathlib import Path

    path = Path(str(tmp_path)) / "passwd"
    path.write_text(
        "evil:x:\u0661\u0662:\u0660:e:/e:/bin/sh\n"
        "sup:x:\u00b2:5::/s:/bin/sh\n"
        "wide:x:\uff11:5::/w:/bin/sh\n"
        "big:x:2147483648:0::/big:/bin/sh\n"
        "spaced:x: 78 :79::/sp:/bin/sh\n"
        "plus:x:+80:81::/p:/bin/sh\n"
        f"max:x:{MAX_ID}:{MAX_ID}::/max:/bin/sh\n"
    )
    assert [(e.name, e.uid, e.gid) for e in read_passwd(str(path))] == [("max", MAX_ID, MAX_ID)]


def test_read_passwd_lines_as_docker_splits_them(tmp_path: object) -> None:
    # Only "\n" ends a line; whitespace around a line is trimmed (Docker: bytes.TrimSpace).
    from pathlib import Path

    path = Path(str(tmp_path)) / "passwd"
    path.write_bytes(
        b"  lead:x:100:100::/lead:/bin/sh  \n"
        b"cr:x:101:101::/cr:/bin/sh\r\n"
        b"mac:x:102:102::/mac\rhidden:x:103:103::/h:/bin/sh\n"
        b"bytes\xff:x:104:104::/b:/bin/sh\n"
    )
    entries = read_passwd(str(path))
    assert [(e.name, e.uid, e.home) for e in entries] == [
        ("lead", 100, "/lead"),
        ("cr", 101, "/cr"),
        ("mac", 102, "/mac\rhidden"),
        ("bytes\udcff", 104, "/b"),
    ]


def test_group_with_an_out_of_range_gid_is_never_a_supplementary_group(tmp_path: object) -> None:
    # gid 99999999999 would overflow setgroups (gosu wraps it to 1215752191).
    from pathlib import Path

    group = Path(str(tmp_path)) / "group"
    group.write_text("huge:x:99999999999:alice\nuni:x:\u00b2:alice\nfine:x:44:alice\n")
    ident = resolve_user_spec("alice", PASSWD, read_group(str(group)), 0, 0)
    assert ident.groups == (44,)


def test_a_fifo_as_passwd_is_refused_not_waited_on(tmp_path: object) -> None:
    import os

    fifo = f"{tmp_path}/passwd"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as info:
        read_passwd(fifo)
    assert "not a regular file" in info.value.message
