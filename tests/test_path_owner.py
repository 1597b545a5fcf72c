"""A path names its own owner: ``--mkdir PATH[:MODE]=OWNER``, ``--chown PATH=OWNER`` (issue 15, 16).

From the outside: pyinit is PID 1 of a PID namespace with the fixture users
(``tests/sandbox.py``: alice 1000, bob 1003, redis 999, group staff 50);
files on disk, the tasks' own results and the exact ``pyinit:`` lines are
what is checked.  The porting case: a supervisord image whose main (nginx)
stays root while its items run as ``app``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import Result, Sandbox, scratch_dir

from pyinit.errors import UsageError
from pyinit.plan.build import parse_chown, parse_mkdir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

ALICE = (1000, 1000)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every fixture user can reach (pytest's tmp_path is root-only)."""
    with scratch_dir("pyinit-owner-") as path:
        yield path


def owner_of(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid


def ok(result: Result) -> str:
    assert result.returncode == 0, result
    return result.stdout


def refused(result: Result) -> str:
    """Assert one ``pyinit:`` line and exit 125; return the line without the prefix."""
    assert result.returncode == 125, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pyinit: "), result.stderr
    return result.stderr[len("pyinit: ") : -1]


# --- the porting case -------------------------------------------------------------------


def test_a_root_main_with_a_data_directory_for_its_items(
    sandbox: Sandbox, public_dir: Path
) -> None:
    # nginx as the root main, the migrate task as alice: /data must be alice's.
    data = public_dir / "data"
    migrate = f"migrate user=alice -- sh -c 'id -u > {data}/migrated'"
    result = sandbox.pyinit(
        "--mkdir", f"{data}:0750=alice", "--task", migrate,
        "--", "sh", "-c", f"id -u; cat {data}/migrated",
        pid_namespace=True,
    )  # fmt: skip
    assert ok(result) == "0\n1000\n"  # the main stayed root; the task wrote as alice
    assert owner_of(data) == ALICE
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert owner_of(data / "migrated") == ALICE


def test_each_path_has_its_own_owner_beside_the_mains(sandbox: Sandbox, public_dir: Path) -> None:
    mine, alices, bobs = public_dir / "mine", public_dir / "alices", public_dir / "bobs"
    (bobs / "sub").mkdir(parents=True)
    (bobs / "sub" / "f").write_text("x")
    result = sandbox.pyinit(
        "--user", "redis",
        "--mkdir", str(mine), "--mkdir", f"{alices}=alice:staff", "--chown", f"{bobs}=bob",
        "--", "true",
        pid_namespace=True,
    )  # fmt: skip
    ok(result)
    assert owner_of(mine) == (999, 999)  # no owner named: the main's user, as before
    assert owner_of(alices) == (1000, 50)  # user:group, as --user reads it
    for path in (bobs, bobs / "sub", bobs / "sub" / "f"):
        assert owner_of(path) == (1003, 1003)


def test_dry_run_shows_each_paths_owner(sandbox: Sandbox, public_dir: Path) -> None:
    out = ok(
        sandbox.pyinit(
            "--dry-run", "--user", "redis",
            "--mkdir", f"{public_dir}/a:0700=alice", "--mkdir", f"{public_dir}/b",
            "--chown", f"{public_dir}/c=1234:50", "--", "true",
        )
    )  # fmt: skip
    steps = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert steps[0] == (
        f"1. mkdir {public_dir}/a (mode 0700), owned by alice (1000:1000, named by the path);"
        " missing parents root-owned 0755"
    )
    assert steps[1].startswith(f"2. mkdir {public_dir}/b (mode 0755 if created), owned by redis")
    assert steps[2].startswith(
        f"3. chown -R (no symlinks) {public_dir}/c to uid 1234 (1234:50, named by the path)"
    )
    assert os.listdir(public_dir) == []


def test_config_file_keys_take_the_same_form(sandbox: Sandbox, public_dir: Path) -> None:
    config = public_dir / "pyinit.toml"
    config.write_text(f'mkdir = ["{public_dir}/d:0700=alice"]\nchown = ["{public_dir}/e=bob"]\n')
    out = ok(sandbox.pyinit("--dry-run", "--config", str(config), "--", "true"))
    assert f"mkdir {public_dir}/d (mode 0700), owned by alice (1000:1000" in out
    assert f"chown -R (no symlinks) {public_dir}/e to bob (1003:1003" in out
    config.write_text(f'chown = ["{public_dir}/e=nosuch"]\n')
    line = refused(sandbox.pyinit("--dry-run", "--config", str(config), "--", "true"))
    assert line.startswith(f"{config}: key 'chown': --chown '{public_dir}/e=nosuch': owner")


# --- what is refused, before anything is touched -----------------------------------------


def test_ambiguous_or_unknown_owners_are_one_line(sandbox: Sandbox, public_dir: Path) -> None:
    d = public_dir / "d"
    cases = {
        f"--mkdir={d}=alice:0750": (
            f"--mkdir '{d}=alice:0750': owner 'alice:0750' ends like a mode; the mode goes"
            " before the owner (PATH:MODE=USER[:GROUP])"
        ),
        f"--chown={d}=alice:staff:x": (
            f"--chown '{d}=alice:staff:x': owner 'alice:staff:x' ends like a mode; the mode goes"
            " before the owner (PATH:MODE=USER[:GROUP])"
        ),
        f"--mkdir={d}=": f"--mkdir '{d}=': empty owner after '=' (PATH=USER[:GROUP], e.g. {d}=app)",
        f"--chown={d}=nosuch": (
            f"--chown '{d}=nosuch': owner 'nosuch': unknown user 'nosuch' (not in /etc/passwd)"
            f" (a path whose last name holds '=' is written with a trailing '/': {d}=nosuch/)"
        ),
        f"--mkdir={d}=alice:nosuch": (
            f"--mkdir '{d}=alice:nosuch': owner 'alice:nosuch': unknown group 'nosuch'"
            " (not in /etc/group)"
        ),
    }
    for flag, line in cases.items():
        assert refused(sandbox.pyinit("--mkdir", str(d), flag, "--", "true")) == line
    assert not d.exists()  # the first, valid --mkdir did not run either


def test_an_equals_sign_in_a_path(sandbox: Sandbox, public_dir: Path) -> None:
    # '=' before a '/' belongs to a directory; a trailing '/' keeps it in the last name.
    ok(sandbox.pyinit("--mkdir", f"{public_dir}/k=v/x=alice", "--mkdir", f"{public_dir}/a=b/",
                      "--", "true"))  # fmt: skip
    assert owner_of(public_dir / "k=v") == (0, 0)  # a parent it created: root's
    assert owner_of(public_dir / "k=v" / "x") == ALICE
    assert owner_of(public_dir / "a=b") == (0, 0)  # no owner named: the current user's


# --- every defence of --chown/--mkdir still holds for a named owner ------------------------


def test_named_owner_chown_never_follows_a_link(sandbox: Sandbox, public_dir: Path) -> None:
    victim = public_dir / "victim"
    victim.write_text("root's")
    vol = public_dir / "vol"
    vol.mkdir()
    (vol / "evil").symlink_to(victim)
    ok(sandbox.pyinit("--chown", f"{vol}=alice", "--", "true"))
    assert owner_of(vol / "evil") == ALICE  # the link itself
    assert owner_of(victim) == (0, 0)  # never its target
    # A link in the path is refused, naming it, with or without an owner.
    (public_dir / "real").mkdir()
    (public_dir / "swapped").symlink_to(public_dir / "real")
    line = refused(sandbox.pyinit("--chown", f"{public_dir}/swapped/x=alice", "--", "true"))
    assert f"{public_dir}/swapped is a symbolic link" in line
    assert owner_of(public_dir / "real") == (0, 0)


def test_named_owner_mkdir_refuses_a_users_link(sandbox: Sandbox, public_dir: Path) -> None:
    etc = public_dir / "etc"
    etc.mkdir()
    volume = public_dir / "volume"  # the owner's own volume: the link rule is what stops it
    volume.mkdir()
    os.chown(volume, 1003, 1003)
    (volume / "app").symlink_to(etc)
    os.lchown(volume / "app", 1003, 1003)
    line = refused(sandbox.pyinit("--mkdir", f"{volume}/app/x=bob", "--", "true"))
    assert "is a symbolic link not controlled by root" in line
    assert list(etc.iterdir()) == []


def test_named_owner_only_changes_what_differs(sandbox: Sandbox, public_dir: Path) -> None:
    tree = public_dir / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "f").write_text("x")
    for path in (tree, tree / "a", tree / "a" / "f"):
        os.chown(path, *ALICE)
    before = (tree / "a" / "f").stat().st_ctime_ns
    (tree / "new").write_text("root's")
    ok(sandbox.pyinit("--user", "redis", "--chown", f"{tree}=alice", "--", "true"))
    assert (tree / "a" / "f").stat().st_ctime_ns == before  # already alice's: untouched
    assert owner_of(tree / "new") == ALICE


# --- a second user on the way: nobody but root and the owner may change a parent --------------


def test_another_users_directory_cannot_hand_its_tree_to_the_owner(
    sandbox: Sandbox, public_dir: Path
) -> None:
    # The attack: redis owns the volume and swaps app for a tree of its own with a script
    # alice's task will run; pyinit must not give that tree to alice.
    vol = public_dir / "vol"
    (vol / "app").mkdir(parents=True)
    (vol / "app" / "run.sh").write_text("echo planted\n")
    for path in (vol, vol / "app", vol / "app" / "run.sh"):
        os.chown(path, 999, 999)
    line = refused(sandbox.pyinit("--chown", f"{vol}/app=alice", "--", "true"))
    assert line == (
        f"--chown {vol}/app: {vol} (owner uid 999, mode 0755) can be changed by users other than"
        " root and uid 1000, who could swap what --chown gives to uid 1000; a path naming its"
        " owner must lie in directories only root or that owner can change"
    )
    line = refused(sandbox.pyinit("--mkdir", f"{vol}/app/new=alice", "--", "true"))
    assert line.startswith(f"--mkdir {vol}/app/new: {vol} (owner uid 999, mode 0755)")
    assert owner_of(vol / "app" / "run.sh") == (999, 999)
    assert not (vol / "app" / "new").exists()
    # Without a named owner nothing changes: the main's user may own its volume's parents.
    ok(sandbox.pyinit("--user", "redis", "--chown", f"{vol}/app", "--", "true"))


def test_a_directory_everyone_can_write_is_refused(sandbox: Sandbox, public_dir: Path) -> None:
    shared = public_dir / "shared"  # like a Kubernetes emptyDir: root, 0777, not sticky
    shared.mkdir()
    shared.chmod(0o777)
    line = refused(sandbox.pyinit("--mkdir", f"{shared}/a/b=alice", "--", "true"))
    assert line.startswith(f"--mkdir {shared}/a/b: {shared} (owner uid 0, mode 0777) can be")
    assert list(shared.iterdir()) == []  # refused before anything was created in it


def test_a_sticky_directory_needs_the_entry_to_be_root_or_the_owners(
    sandbox: Sandbox, public_dir: Path
) -> None:
    sticky = public_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "bobs").mkdir()
    os.chown(sticky / "bobs", 1003, 1003)
    line = refused(sandbox.pyinit("--chown", f"{sticky}/bobs=alice", "--", "true"))
    assert line == (
        f"--chown {sticky}/bobs: belongs to uid 1003 in a directory others can write (sticky);"
        " refusing to give another user's entry to uid 1000"
    )
    line = refused(sandbox.pyinit("--mkdir", f"{sticky}/bobs=alice", "--", "true"))
    assert line.startswith(f"--mkdir {sticky}/bobs: belongs to uid 1003")
    assert owner_of(sticky / "bobs") == (1003, 1003)
    ok(sandbox.pyinit("--mkdir", f"{sticky}/new=alice", "--chown", f"{sticky}/new=alice", "--",
                      "true"))  # fmt: skip
    assert owner_of(sticky / "new") == ALICE


# --- the parser, in process ------------------------------------------------------------------


def test_parse_forms() -> None:
    step = parse_mkdir("/srv/x:0750=root")
    assert (step.path, step.mode, step.owner and step.owner.uid) == ("/srv/x", 0o750, 0)
    step = parse_mkdir("/srv/x=0:0")
    assert (step.mode, step.owner and (step.owner.uid, step.owner.gid)) == (None, (0, 0))
    assert parse_mkdir("/srv/x:0750").owner is None
    assert parse_mkdir("/srv/a=b/c:0700") == parse_mkdir("/srv/a=b/c:0700")
    assert parse_mkdir("/srv/a=b/c:0700").path == "/srv/a=b/c"
    chown = parse_chown("/srv/y/./=0", "on-root-mismatch", True)
    assert (chown.path, chown.policy, chown.cross_mounts) == ("/srv/y", "on-root-mismatch", True)
    assert chown.owner is not None and chown.owner.uid == 0
    assert parse_chown("/srv/p:q").path == "/srv/p:q"  # ':' is no mode for --chown
    with pytest.raises(UsageError, match="refusing to act on the root directory"):
        parse_chown("/tmp/..=0")
