"""Issue 8, file-system holes: each test failed on the code before the fix.

1. path flags validated on the normalised path (``--chown /tmp/..`` is ``/``);
2. ``--chown`` refuses a symlink anywhere in its path;
3. mount boundaries from the open directory's mount id, raced by a renamer;
6. ``--file-env`` refuses a path the target user can redirect;
13. ``NAME_FILE`` read only when regular (a FIFO never hangs pyinit);
14. secrets over MAX_ARG_STRLEN or the ARG_MAX budget refused in the plan.

Destructive refusals (``/`` itself) are only ever planned (``--dry-run`` or
in-process), never run.  Everything else acts on temporary trees; mounts
happen in private mount namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from plan_helpers import plan_for
from sandbox import Result, base_environment, run_pyinit

from pyinit.errors import UsageError
from pyinit.plan.files import FileTooLarge, NotRegularFile, read_open_regular
from pyinit.plan.secrets import MAX_ARG_STRLEN, check_exec_budget, exec_budget

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UID = 1000
GID = 1000
TIMEOUT = 30
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")


def pyinit(*args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Result:
    """Run ``python -m pyinit ARGS`` as root with a small environment and a timeout."""
    return run_pyinit(*args, env=base_environment(**(env or {})), timeout=timeout)


def owner(path: Path) -> tuple[int, int]:
    """uid, gid of ``path`` itself (never following it)."""
    st = path.lstat()
    return st.st_uid, st.st_gid


# --- 1. path flags validated as normalised ---------------------------------------------

ROOT_SPELLINGS = ["/tmp/..", "/.", "/./.", "/tmp/../", "//", "//.", "/tmp/a/../.."]


@pytest.mark.parametrize("path", ROOT_SPELLINGS)
@pytest.mark.parametrize("flag", ["--chown", "--mkdir"])
def test_paths_that_normalise_to_the_root_are_refused_in_the_plan(flag: str, path: str) -> None:
    with pytest.raises(UsageError, match="refusing to act on the root directory"):
        plan_for(["--user", "nobody", flag, path, "--", "true"])


@pytest.mark.parametrize("path", ["/tmp/..", "/./.", "/tmp/../"])
def test_paths_that_normalise_to_the_root_are_refused_by_dry_run(path: str) -> None:
    for flag in ("--chown", "--mkdir"):
        proc = pyinit("--dry-run", "--user", "nobody", flag, path, "--", "true")
        assert proc.returncode == 125, proc.stdout
        assert proc.stderr.startswith(f"pyinit: {flag} '{path}': refusing to act on the root")
    proc = pyinit("--dry-run", "--mkdir", "/tmp/..:0700", "--", "true")
    assert proc.returncode == 125 and "root directory" in proc.stderr


def test_the_planned_path_is_the_normalised_one() -> None:
    plan = plan_for(
        ["--user", "nobody", "--chown", "//srv/./data/../data/", "--mkdir", "/run/x/../y:0750",
         "--workdir", "/srv//app/./", "--", "true"]
    )  # fmt: skip
    assert [c.path for c in plan.chowns] == ["/srv/data"]
    assert [(m.path, m.mode) for m in plan.mkdirs] == [("/run/y", 0o750)]
    assert plan.workdir == "/srv/app"
    assert plan_for(["--workdir", "/tmp/../", "--", "true"]).workdir == "/"
    assert plan_for(["--workdir", "~/a/../b/", "--", "true"]).workdir == "~/b"
    assert plan_for(["--workdir", "~", "--", "true"]).workdir == "~"


@pytest.mark.parametrize("workdir", ["relative/dir", "", "~user"])
def test_workdir_must_be_absolute_or_home(workdir: str) -> None:
    with pytest.raises(UsageError, match=r"--workdir .*: path must be absolute"):
        plan_for(["--workdir", workdir, "--", "true"])


# --- 2. --chown never follows a symlink in the middle of its path ---------------------


def test_chown_refuses_a_symlink_in_the_middle_of_its_path(tmp_path: Path) -> None:
    # vol is the service's; it made vol/app a link to a root tree.
    outside = tmp_path / "outside"
    (outside / "log").mkdir(parents=True)
    (outside / "log" / "secret").write_text("root only")
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chown(vol, UID, GID)
    (vol / "app").symlink_to(outside)
    os.lchown(vol / "app", UID, GID)
    proc = pyinit("--user", f"{UID}:{GID}", "--chown", f"{vol}/app/log", "--", "true")
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr.strip() == (
        f"pyinit: --chown {vol}/app/log: {vol}/app is a symbolic link; pyinit never follows "
        "symlinks in a --chown path (name the real path)"
    )
    assert owner(outside / "log") == (0, 0)
    assert owner(outside / "log" / "secret") == (0, 0)


def test_chown_refuses_a_root_owned_symlink_on_the_way_too(tmp_path: Path) -> None:
    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    proc = pyinit("--user", f"{UID}:{GID}", "--chown", f"{tmp_path}/alias/data", "--", "true")
    assert proc.returncode == 125
    assert f"{tmp_path}/alias is a symbolic link" in proc.stderr
    assert owner(tmp_path / "real" / "data") == (0, 0)
    # The real path works.
    proc = pyinit("--user", f"{UID}:{GID}", "--chown", f"{tmp_path}/real/data", "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert owner(tmp_path / "real" / "data") == (UID, GID)


def test_chown_names_a_file_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = pyinit("--chown", f"{tmp_path}/file/x", "--", "true")
    assert proc.returncode == 125
    assert f"{tmp_path}/file is not a directory" in proc.stderr


# --- 3. mount boundaries from the descriptor, raced -----------------------------------

RACE_SETUP = """
import ctypes, json, os, sys
from pathlib import Path
from pyinit.root import chown as chown_module
from pyinit.root.chown import chown_tree

top, outside, uid = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

def exchange(a, b):
    # renameat2(RENAME_EXCHANGE): a and b trade places atomically.
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")

for d in ("a/mnt", "b/mnt"):
    (top / d).mkdir(parents=True)
(top / "b" / "mnt" / "plain").write_text("")
# A same-fs bind mount below the volume: st_dev cannot tell it apart.
assert os.system(f"mount --bind {outside} {top}/a/mnt") == 0
assert os.stat(top / "a" / "mnt").st_dev == os.stat(top).st_dev
"""

DETERMINISTIC_SWAP = """
real_scan = chown_module._Walk._scan
def scan_then_exchange(self, fd, dir_path):
    names = real_scan(self, fd, dir_path)
    if dir_path == str(top):
        exchange(top / "a", top / "b")  # listed as a and b; entered swapped
    return names
chown_module._Walk._scan = scan_then_exchange
stats = chown_tree(str(top), uid, uid)
st = os.stat(outside / "shadow")
print(json.dumps({"shadow": [st.st_uid, st.st_gid], "skipped": stats.skipped_mounts}))
"""

RACING_RENAMER = """
import signal
rounds = int(sys.argv[4])
racer = os.fork()
if racer == 0:
    try:
        while True:
            exchange(top / "a", top / "b")
    finally:
        os._exit(0)
try:
    leaked = 0
    for _ in range(rounds):
        chown_tree(str(top), uid, uid)
        st = os.stat(outside / "shadow")
        if (st.st_uid, st.st_gid) != (0, 0):
            leaked += 1
            os.chown(outside / "shadow", 0, 0)
            os.chown(outside, 0, 0)
finally:
    os.kill(racer, signal.SIGKILL)
    os.waitpid(racer, 0)
print(json.dumps({"leaked": leaked, "rounds": rounds}))
"""


def _run_in_mount_namespace(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A root-only directory on the same file system: the host tree a bind mount exposes."""
    secret_dir = tmp_path / "outside"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "shadow").write_text("root:secret\n")
    return secret_dir


@needs_unshare
def test_bind_mount_reached_under_another_name_is_not_crossed(
    tmp_path: Path, outside: Path
) -> None:
    top = tmp_path / "vol"
    result = _run_in_mount_namespace(
        RACE_SETUP + DETERMINISTIC_SWAP, str(top), str(outside), str(UID)
    )
    assert result == {"shadow": [0, 0], "skipped": 1}
    assert owner(outside) == (0, 0)


@needs_unshare
def test_racing_renamer_never_gets_the_bind_mount_chowned(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "vol"
    result = _run_in_mount_namespace(
        RACE_SETUP + RACING_RENAMER, str(top), str(outside), str(UID), "300"
    )
    assert result == {"leaked": 0, "rounds": 300}
    assert owner(outside / "shadow") == (0, 0)


# --- 6. --file-env refuses paths the target can redirect -------------------------------

SHOW = 'printf "%s|" "${DB_PASSWORD-unset}" "${DB_PASSWORD_FILE-unset}"'


def read_as_target(path: Path | str, *user: str) -> subprocess.CompletedProcess[str]:
    """pyinit --file-env DB_PASSWORD with DB_PASSWORD_FILE=path, the target printing both."""
    args = user or ("--user", f"{UID}:{GID}")
    return pyinit(
        *args, "--file-env", "DB_PASSWORD", "--", "sh", "-c", SHOW,
        env={"DB_PASSWORD_FILE": str(path)},
    )  # fmt: skip


@pytest.fixture
def shadow(tmp_path: Path) -> Path:
    """A root-only file the service user must never see (our /etc/shadow)."""
    path = tmp_path / "shadow"
    path.write_text("root:$6$hash\n")
    path.chmod(0o600)
    return path


def make_kubernetes_volume(top: Path, group: int | None = None) -> Path:
    """A secret volume as the kubelet writes it: ``password -> ..data/password``."""
    top.mkdir()
    top.chmod(0o1777)  # the tmpfs root, world-writable and sticky
    stamp = top / "..2024_05_01_12_00_00.123456789"
    stamp.mkdir()
    (stamp / "password").write_text("k8s secret\n")
    (top / "..data").symlink_to(stamp.name)
    (top / "password").symlink_to("..data/password")
    if group is not None:  # fsGroup: group-owned, g+r, setgid dirs, no group write
        for p in (top, stamp, stamp / "password"):
            os.chown(p, 0, group)
        stamp.chmod(0o2755)
        (stamp / "password").chmod(0o440)
    return top / "password"


def test_kubernetes_secret_volume_is_read(tmp_path: Path) -> None:
    proc = read_as_target(make_kubernetes_volume(tmp_path / "secret"))
    assert (proc.returncode, proc.stdout) == (0, "k8s secret|unset|"), proc.stderr


def test_kubernetes_secret_volume_with_fs_group_is_read(tmp_path: Path) -> None:
    proc = read_as_target(make_kubernetes_volume(tmp_path / "secret", group=GID))
    assert (proc.returncode, proc.stdout) == (0, "k8s secret|unset|"), proc.stderr


@pytest.mark.parametrize("file_owner", [0, UID])
def test_docker_run_secrets_is_read(tmp_path: Path, file_owner: int) -> None:
    # Swarm: root 0444 (or uid: set to the service's); compose: the host file's owner.
    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "db").write_text("docker secret\n")
    (secrets / "db").chmod(0o444)
    os.chown(secrets / "db", file_owner, file_owner)
    proc = read_as_target(secrets / "db")
    assert (proc.returncode, proc.stdout) == (0, "docker secret|unset|"), proc.stderr


def test_directory_owned_by_the_target_is_refused(tmp_path: Path, shadow: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chown(vol, UID, GID)
    (vol / "secret").symlink_to(shadow)  # what the service would plant
    proc = read_as_target(vol / "secret")
    assert proc.returncode == 125
    assert proc.stdout == ""
    line = proc.stderr.strip()
    assert line.startswith(f"pyinit: --file-env DB_PASSWORD: DB_PASSWORD_FILE={vol}/secret: ")
    assert f"{vol} is a directory owned by uid {UID}, not root" in line
    assert "root:$6$hash" not in proc.stderr


@pytest.mark.parametrize("mode, group", [(0o775, GID), (0o777, 0)])
def test_directory_writable_by_the_target_is_refused(
    tmp_path: Path, shadow: Path, mode: int, group: int
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, group)
    shared.chmod(mode)
    (shared / "secret").write_text("x\n")
    proc = read_as_target(shared / "secret")
    assert proc.returncode == 125
    assert f"{shared} is a directory uid {UID} can write to" in proc.stderr


def test_group_write_for_a_group_the_target_is_not_in_is_fine(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4242)
    shared.chmod(0o775)
    (shared / "secret").write_text("ok\n")
    proc = read_as_target(shared / "secret")
    assert (proc.returncode, proc.stdout) == (0, "ok|unset|"), proc.stderr


def test_target_owned_entry_in_a_sticky_directory_is_refused(tmp_path: Path, shadow: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "link").symlink_to(shadow)
    os.lchown(sticky / "link", UID, GID)
    (sticky / "file").write_text("mine\n")
    os.chown(sticky / "file", UID, GID)
    for name in ("link", "file"):
        proc = read_as_target(sticky / name)
        assert proc.returncode == 125, proc.stdout
        assert f"{sticky}/{name} belongs to uid {UID} in the sticky directory" in proc.stderr


def test_root_symlink_into_a_target_directory_is_refused(tmp_path: Path, shadow: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chown(vol, UID, GID)
    (vol / "db").symlink_to(shadow)
    (tmp_path / "secret").symlink_to(vol / "db")  # root's own link, into the volume
    proc = read_as_target(tmp_path / "secret")
    assert proc.returncode == 125
    assert f"{vol} is a directory owned by uid {UID}" in proc.stderr


def test_symlink_owned_by_someone_else_is_refused(tmp_path: Path, shadow: Path) -> None:
    (tmp_path / "secret").symlink_to(shadow)
    os.lchown(tmp_path / "secret", 4242, 4242)
    proc = read_as_target(tmp_path / "secret")
    assert proc.returncode == 125
    assert f"{tmp_path}/secret is a symbolic link owned by uid 4242, not root" in proc.stderr


def test_without_a_step_down_there_is_nothing_to_guard(tmp_path: Path, shadow: Path) -> None:
    # The target is root itself: it could read the file anyway.
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chown(vol, UID, GID)
    (vol / "secret").symlink_to(shadow)
    proc = pyinit(
        "--file-env", "DB_PASSWORD", "--", "sh", "-c", SHOW,
        env={"DB_PASSWORD_FILE": str(vol / "secret")},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "root:$6$hash|unset|"), proc.stderr


def test_dot_dot_is_resolved_physically(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "secret").write_text("dots\n")
    proc = read_as_target(f"{tmp_path}/d/../secret")
    assert (proc.returncode, proc.stdout) == (0, "dots|unset|"), proc.stderr


@needs_unshare
def test_world_writable_directory_on_a_read_only_mount_is_fine(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o777)
    (ro / "secret").write_text("ro ok\n")
    script = (
        f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec "
        f"{sys.executable} -m pyinit --user {UID}:{GID} --file-env DB_PASSWORD -- sh -c '{SHOW}'"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=base_environment(DB_PASSWORD_FILE=str(ro / "secret")),
    )
    assert (proc.returncode, proc.stdout) == (0, "ro ok|unset|"), proc.stderr


# --- 13. only regular files are read ---------------------------------------------------


def test_fifo_as_secret_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for user in (("--user", f"{UID}:{GID}"), ()):
        proc = pyinit(
            *user, "--file-env", "DB_PASSWORD", "--", "true",
            env={"DB_PASSWORD_FILE": str(fifo)}, timeout=15,
        )  # fmt: skip
        assert proc.returncode == 125
        assert proc.stderr.strip() == (
            f"pyinit: --file-env DB_PASSWORD: DB_PASSWORD_FILE={fifo}: is a FIFO, "
            "not a regular file"
        )


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a character device"), ("/", "directory")])
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    proc = pyinit("--file-env", "X", "--", "true", env={"X_FILE": path})
    assert proc.returncode == 125
    assert kind in proc.stderr


def read_path(path: str, limit: int, *, nofollow: bool = False) -> bytes:
    """Open ``path`` as pyinit's readers do (O_NONBLOCK) and read it with ``read_open_regular``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags | os.O_NOFOLLOW if nofollow else flags)
    try:
        return read_open_regular(fd, limit)
    finally:
        os.close(fd)


def test_read_open_regular(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="is a FIFO"):
        read_path(str(fifo), 10)
    with pytest.raises(NotRegularFile, match="character device"):
        read_path("/dev/null", 10)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    assert read_path(str(big), 11) == b"x" * 11
    with pytest.raises(FileTooLarge):
        read_path(str(big), 10)
    link = tmp_path / "link"
    link.symlink_to(big)
    assert read_path(str(link), 20) == b"x" * 11
    with pytest.raises(OSError):
        read_path(str(link), 20, nofollow=True)
    # /proc files report size 0: read to the end all the same.
    assert read_path("/proc/self/status", 1 << 16).startswith(b"Name:")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# --- 14. the exec size limits, checked in the plan -------------------------------------


def test_secret_over_max_arg_strlen_is_refused_in_the_plan(tmp_path: Path) -> None:
    secret = tmp_path / "big"
    secret.write_bytes(b"s" * 200_000)
    proc = pyinit("--file-env", "DB_PASSWORD", "--", "true", env={"DB_PASSWORD_FILE": str(secret)})
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr.startswith("pyinit: --file-env DB_PASSWORD: ")
    assert "MAX_ARG_STRLEN" in proc.stderr


def test_secret_just_under_max_arg_strlen_reaches_the_target(tmp_path: Path) -> None:
    name = "DB_PASSWORD"
    fits = MAX_ARG_STRLEN - len(name) - 2  # NAME=value plus its NUL
    secret = tmp_path / "fits"
    secret.write_bytes(b"s" * fits + b"\n")
    proc = pyinit(
        "--file-env", name, "--", "sh", "-c", 'printf %s "${#DB_PASSWORD}"',
        env={"DB_PASSWORD_FILE": str(secret)},
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, str(fits)), proc.stderr
    secret.write_bytes(b"s" * (fits + 1))
    proc = pyinit("--file-env", name, "--", "true", env={"DB_PASSWORD_FILE": str(secret)})
    assert proc.returncode == 125 and "MAX_ARG_STRLEN" in proc.stderr


def test_secrets_over_the_arg_max_budget_are_refused_in_the_plan(tmp_path: Path) -> None:
    env = {}
    names = [f"S{i}" for i in range(24)]
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"v" * 120_000)
        env[f"{name}_FILE"] = str(path)
    args = [a for name in names for a in ("--file-env", name)]
    # A 4 MiB stack: 1 MiB for argv + environment; 24 x 120 kB do not fit.
    proc = run_pyinit(
        *args, "--", "true", prefix=("prlimit", "--stack=4194304"),
        env=base_environment(**env), timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 125, proc.stderr
    assert proc.stderr.startswith("pyinit: --file-env S")
    assert "ARG_MAX" in proc.stderr


def test_exec_budget_follows_the_stack_limit() -> None:
    import resource

    assert exec_budget(8 << 20) == 2 << 20
    assert exec_budget(resource.RLIM_INFINITY) == 6 << 20
    assert exec_budget(4096) == 128 * 1024
    env = {"A": "a" * 100_000, "B": "b" * 100_000}
    check_exec_budget(["true"], env, ["A", "B"], 8 << 20)
    with pytest.raises(UsageError, match=r"--file-env [AB]: .* over the 131072 bytes"):
        check_exec_budget(["true"], env, ["A", "B"], 4096)
    # Secrets not read from files: nothing of ours to blame.
    check_exec_budget(["true"], env, [], 4096)


def test_rlimit_stack_in_the_plan_sets_the_budget(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"v" * 100_000)
    env = {f"S{i}_FILE": str(secret) for i in range(3)}
    args = ["--file-env", "S0", "--file-env", "S1", "--file-env", "S2"]
    with pytest.raises(UsageError, match="ARG_MAX"):
        plan_for([*args, "--rlimit", "stack=262144", "--", "true"], base_environment(**env))
    plan = plan_for([*args, "--", "true"], base_environment(**env))
    assert len(plan.env["S2"]) == 100_000


def test_search_only_directories_are_enough_as_non_root(pyinit_any_user: tuple[str, ...]) -> None:
    # The walk needs what the kernel's lookup needs: search (x), not read, permission.
    with tempfile.TemporaryDirectory(prefix="pyinit-search-") as top:
        _search_only_as_nobody(Path(top), pyinit_any_user)


def _search_only_as_nobody(tmp_path: Path, pyinit_any_user: tuple[str, ...]) -> None:
    inner = tmp_path / "x" / "inner"
    inner.mkdir(parents=True)
    (inner / "s").write_text("searchable\n")
    (inner / "s").chmod(0o644)
    for d in (tmp_path, tmp_path / "x", inner):
        d.chmod(0o711)
    proc = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *pyinit_any_user,
         "--file-env", "X", "--", "sh", "-c", 'printf %s "$X"'],
        capture_output=True, text=True, timeout=TIMEOUT,
        env=base_environment(X_FILE=str(inner / "s")), cwd="/",
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "searchable"), proc.stderr
