"""``--chown``: symlinks never followed, mounts not crossed, only what differs changed.

Runs the real CLI as root (``python -m pyinit``) in temporary trees, plus a
few in-process checks of :func:`pyinit.root.chown.chown_tree` for what the CLI
cannot show (stats, progress lines, a directory swapped mid-walk).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sandbox
from sandbox import Result

from pyinit import log
from pyinit.errors import PyinitError
from pyinit.root import chown as chown_module
from pyinit.root.chown import _mount_id, chown_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UID = 1000
GID = 1000
TIMEOUT = 60


def run_pyinit(*args: str, prefix: tuple[str, ...] = (), check_rc: int | None = None) -> Result:
    """Run ``[prefix...] python -m pyinit ARGS`` with a timeout; optionally check its status."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
    proc = sandbox.run_pyinit(*args, prefix=prefix, env=env, timeout=TIMEOUT)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def owner(path: Path) -> tuple[int, int]:
    """uid, gid of ``path`` itself (never following it)."""
    st = path.lstat()
    return st.st_uid, st.st_gid


def make_tree(top: Path) -> None:
    """A small tree of every kind of entry, all root-owned."""
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "file").write_text("x")
    (top / "a" / "b" / "deep").write_text("y")
    (top / "empty").mkdir()
    os.mkfifo(top / "fifo")
    (top / "rel-link").symlink_to("a/file")


def all_entries(top: Path) -> list[Path]:
    """``top`` and every entry below it, without following symlinks."""
    found = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        found.extend(Path(dirpath, n) for n in dirnames + filenames)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A root-only file and directory outside the tree: what an attacker links to."""
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "shadow").write_text("root:secret\n")
    os.chmod(secret_dir / "shadow", 0o600)
    return secret_dir


def test_gives_every_entry_to_the_target(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    proc = run_pyinit("-v", "--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")
    assert proc.returncode == 0, proc.stderr
    entries = all_entries(top)
    assert len(entries) == 8
    assert {owner(p) for p in entries} == {(UID, GID)}
    assert f"--chown {top}: 8 entries, 8 changed" in proc.stderr


def test_symlink_to_a_root_only_file_stays_roots(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "data"
    top.mkdir()
    (top / "evil").symlink_to(outside / "shadow")
    (top / "evil-dir").symlink_to(outside)
    run_pyinit("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true", check_rc=0)
    assert owner(outside / "shadow") == (0, 0)
    assert owner(outside) == (0, 0)
    # The links themselves are the target's (lchown), their targets untouched.
    assert owner(top / "evil") == (UID, GID)
    assert owner(top / "evil-dir") == (UID, GID)


def test_symlinked_directory_is_not_descended(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "data"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "link").symlink_to(outside, target_is_directory=True)
    proc = run_pyinit("-v", "--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert owner(outside / "shadow") == (0, 0)
    assert "3 entries" in proc.stderr  # top, sub, link: nothing from outside


def test_top_that_is_a_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "data"
    link.symlink_to(outside)
    proc = run_pyinit("--user", f"{UID}:{GID}", "--chown", str(link), "--", "true", check_rc=125)
    assert f"--chown {link}: is a symbolic link" in proc.stderr
    assert owner(outside) == (0, 0)


def test_single_file(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_text("k")
    run_pyinit("--user", f"{UID}:{GID}", "--chown", str(target), "--", "true", check_rc=0)
    assert owner(target) == (UID, GID)


def test_missing_path_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = run_pyinit("--user", f"{UID}:{GID}", "--chown", str(missing), "--", "true")
    assert proc.returncode == 125
    assert proc.stderr.strip() == f"pyinit: --chown {missing}: no such file or directory"


def test_only_entries_that_differ_are_changed(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    os.lchown(top / "a" / "file", UID, GID)
    before = (top / "a" / "file").lstat().st_ctime_ns
    proc = run_pyinit("-v", "--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")
    assert "8 entries, 7 changed" in proc.stderr
    # No chown at all on the entry already right: its ctime did not move.
    assert (top / "a" / "file").lstat().st_ctime_ns == before
    again = run_pyinit("-v", "--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")
    assert "8 entries, 0 changed" in again.stderr


def test_group_difference_alone_is_changed(tmp_path: Path) -> None:
    top = tmp_path / "data"
    top.mkdir()
    (top / "f").write_text("")
    os.chown(top, UID, GID)
    os.chown(top / "f", UID, 0)
    run_pyinit("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true", check_rc=0)
    assert owner(top / "f") == (UID, GID)


def test_policy_on_root_mismatch_skips_an_owned_top(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    os.chown(top, UID, GID)
    args = ("--user", f"{UID}:{GID}", "--chown-policy", "on-root-mismatch", "--chown", str(top))
    run_pyinit(*args, "--", "true", check_rc=0)
    assert owner(top / "a" / "file") == (0, 0)  # not walked: the top was already right
    os.chown(top, 0, 0)
    run_pyinit(*args, "--", "true", check_rc=0)
    assert {owner(p) for p in all_entries(top)} == {(UID, GID)}


def test_default_policy_walks_even_when_the_top_is_owned(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    os.chown(top, UID, GID)
    run_pyinit("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true", check_rc=0)
    assert owner(top / "a" / "b" / "deep") == (UID, GID)


def test_without_user_the_tree_goes_to_root(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    for p in all_entries(top):
        os.lchown(p, UID, GID)
    run_pyinit("--chown", str(top), "--", "true", check_rc=0)
    assert {owner(p) for p in all_entries(top)} == {(0, 0)}


needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")


def _in_mount_namespace(script: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script]


def _pyinit_cmd(*args: str) -> str:
    import shlex

    return shlex.join([sys.executable, "-m", "pyinit", *args])


@needs_unshare
@pytest.mark.parametrize("cross", [False, True])
def test_tmpfs_mount_inside_the_tree(tmp_path: Path, cross: bool) -> None:
    top = tmp_path / "data"
    (top / "sub").mkdir(parents=True)
    (top / "plain").write_text("")
    flags = ["--chown-cross-mounts"] if cross else []
    script = f"""
        mount -t tmpfs none {top}/sub
        touch {top}/sub/inside
        {_pyinit_cmd("--user", f"{UID}:{GID}", *flags, "--chown", str(top), "--", "true")}
        stat -c '%u:%g %n' {top}/sub {top}/sub/inside
    """
    proc = subprocess.run(
        _in_mount_namespace(script), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    want = f"{UID}:{GID}" if cross else "0:0"
    assert proc.stdout.split() == [want, f"{top}/sub", want, f"{top}/sub/inside"]
    assert owner(top / "plain") == (UID, GID)


@needs_unshare
def test_bind_mount_from_the_same_file_system_is_not_crossed(tmp_path: Path, outside: Path) -> None:
    # Same st_dev on both sides: only /proc/self/mountinfo tells it is a mount.
    top = tmp_path / "data"
    (top / "bound").mkdir(parents=True)
    script = f"""
        mount --bind {outside} {top}/bound
        {_pyinit_cmd("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")}
    """
    proc = subprocess.run(
        _in_mount_namespace(script), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert owner(outside / "shadow") == (0, 0)
    assert owner(outside) == (0, 0)


@needs_unshare
def test_bind_mounted_file_is_not_changed(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "data"
    top.mkdir()
    (top / "hosts").write_text("")
    script = f"""
        mount --bind {outside}/shadow {top}/hosts
        {_pyinit_cmd("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")}
    """
    proc = subprocess.run(
        _in_mount_namespace(script), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert owner(outside / "shadow") == (0, 0)


@needs_unshare
def test_read_only_file_system(tmp_path: Path) -> None:
    top = tmp_path / "data"
    top.mkdir()
    chown_cmd = _pyinit_cmd("--user", f"{UID}:{GID}", "--chown", str(top), "--", "true")
    script = f"""
        mount -t tmpfs none {top}
        mkdir {top}/d && touch {top}/d/f
        mount -o remount,ro {top}
        {chown_cmd} && echo unexpected
        mount -o remount,rw {top}
        chown -R {UID}:{GID} {top}
        mount -o remount,ro {top}
        {chown_cmd} && echo owned-ro-ok
    """
    proc = subprocess.run(
        _in_mount_namespace(script), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert f"pyinit: --chown {top}: read-only filesystem" in proc.stderr
    # Already right on a read-only volume: nothing to change, not an error.
    assert proc.stdout.split() == ["owned-ro-ok"]


# --- in-process -----------------------------------------------------------------------


def test_stats(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    stats = chown_tree(str(top), UID, GID)
    assert (stats.seen, stats.changed, stats.skipped_mounts, stats.walked) == (8, 8, 0, True)
    assert stats.elapsed >= 0
    stats = chown_tree(str(top), UID, GID, policy="on-root-mismatch")
    assert (stats.seen, stats.changed, stats.walked) == (0, 0, False)


def test_deep_tree_uses_few_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.mkdir()
    deep = path
    for _ in range(200):
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "leaf").write_text("")
    before = len(os.listdir("/proc/self/fd"))
    stats = chown_tree(str(path), UID, GID)
    assert stats.changed == 202
    assert len(os.listdir("/proc/self/fd")) == before  # every descriptor closed again
    assert owner(deep / "leaf") == (UID, GID)


def test_directory_swapped_for_a_symlink_mid_walk_is_not_followed(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "data"
    (top / "victim").mkdir(parents=True)
    (top / "victim" / "f").write_text("")
    real_scan = chown_module._Walk._scan

    def scan_then_swap(self: chown_module._Walk, fd: int, dir_path: str) -> list[str]:
        subdirs = real_scan(self, fd, dir_path)
        if dir_path == str(top):
            # The race an attacker would try: listed as a directory, a symlink now.
            os.rename(top / "victim", top / "victim.old")
            os.symlink(outside, top / "victim")
        return subdirs

    monkeypatch.setattr(chown_module._Walk, "_scan", scan_then_swap)
    chown_tree(str(top), UID, GID)
    assert owner(outside) == (0, 0)
    assert owner(outside / "shadow") == (0, 0)
    assert owner(top / "victim") == (UID, GID)  # the link itself
    assert owner(top / "victim.old" / "f") == (0, 0)  # moved away before it was walked


def test_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    top = tmp_path / "data"
    make_tree(top)
    monkeypatch.setattr(chown_module, "PROGRESS_INTERVAL", 0.0)
    log.set_level(log.NORMAL)
    chown_tree(str(top), UID, GID)
    err = capfd.readouterr().err
    assert f"pyinit: --chown {top}: " in err
    assert "entries so far" in err


def test_error_names_the_entry(tmp_path: Path) -> None:
    top = tmp_path / "data"
    top.mkdir()
    (top / "locked").write_text("")
    if subprocess.run(["chattr", "+i", str(top / "locked")], capture_output=True).returncode:
        pytest.skip("chattr +i not supported here")
    try:
        with pytest.raises(PyinitError) as info:
            chown_tree(str(top), UID, GID)
        assert f"--chown {top}: cannot change {top}/locked: operation not permitted" in str(
            info.value
        )
        assert info.value.exit_code == 125
    finally:
        subprocess.run(["chattr", "-i", str(top / "locked")], timeout=TIMEOUT)


def test_mount_id_of_an_open_descriptor(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open("/proc/self/mountinfo") as f:
            ids = {int(line.split()[0]) for line in f}
        assert _mount_id(fd) in ids
    finally:
        os.close(fd)
    assert _mount_id(fd) is None  # closed: no fdinfo, no guess


def test_unknown_policy_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        chown_tree(str(tmp_path), 0, 0, policy="sometimes")


def test_special_files_keep_their_type(tmp_path: Path) -> None:
    top = tmp_path / "data"
    make_tree(top)
    chown_tree(str(top), UID, GID)
    assert stat.S_ISFIFO((top / "fifo").lstat().st_mode)
    assert (top / "rel-link").is_symlink()
