"""Root setup through the real CLI, as root: mkdir, umask, rlimits, workdir, secrets, hooks,
capability pre-flight, a non-root start and --dry-run.

Every case runs ``python -m pyinit`` in a subprocess (with a timeout) in a
temporary directory; the target reports what it sees with a small shell
command.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sandbox
from sandbox import Result, scratch_dir

from pyinit.errors import PyinitError
from pyinit.plan import Hook, RlimitStep
from pyinit.root.hooks import SignalRelay, describe_returncode, run_hook
from pyinit.root.setup import set_rlimit

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UID = 1000
GID = 1000
TIMEOUT = 60


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYINIT_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
    env.update(extra)
    return env


def run_pyinit(
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    python: str = sys.executable,
    cwd: str = "/",
) -> Result:
    """Run ``[prefix...] python -m pyinit ARGS`` with a timeout."""
    return sandbox.run_pyinit(
        *args,
        prefix=prefix,
        python=python,
        env=clean_env() if env is None else env,
        timeout=TIMEOUT,
        cwd=cwd,
    )


def ok(proc: Result) -> str:
    """Assert exit 0 and return stdout."""
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def mode_owner(path: Path) -> tuple[int, int, int]:
    """(permission bits, uid, gid) of ``path`` itself."""
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


# --- --mkdir ---------------------------------------------------------------------------


def test_mkdir_exact_mode_despite_umask(tmp_path: Path) -> None:
    leaf = tmp_path / "a" / "b" / "leaf"
    proc = run_pyinit(
        "--user", f"{UID}:{GID}", "--mkdir", f"{leaf}:2770", "--", "true",
        prefix=("sh", "-c", 'umask 077; exec "$@"', "sh"),
    )  # fmt: skip
    ok(proc)
    assert mode_owner(leaf) == (0o2770, UID, GID)
    # Parents it had to create are root's, 0755, like systemd's StateDirectory=.
    assert mode_owner(tmp_path / "a") == (0o755, 0, 0)
    assert mode_owner(tmp_path / "a" / "b") == (0o755, 0, 0)


def test_mkdir_default_mode_and_existing_directory(tmp_path: Path) -> None:
    new = tmp_path / "new"
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o700)
    ok(run_pyinit("--user", f"{UID}:{GID}", "--mkdir", str(new), "--mkdir", str(existing),
                  "--", "true"))  # fmt: skip
    assert mode_owner(new) == (0o755, UID, GID)
    assert mode_owner(existing) == (0o700, UID, GID)  # owner fixed, mode kept
    ok(run_pyinit("--user", f"{UID}:{GID}", "--mkdir", f"{existing}:0750", "--", "true"))
    assert mode_owner(existing) == (0o750, UID, GID)  # mode asked: fixed


def test_mkdir_existing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    proc = run_pyinit("--user", f"{UID}:{GID}", "--mkdir", str(path), "--", "true")
    assert proc.returncode == 125
    assert f"--mkdir {path}: {path} exists and is not a directory" in proc.stderr
    assert mode_owner(path)[1:] == (0, 0)


def test_mkdir_never_follows_a_symlink_leaf(tmp_path: Path) -> None:
    victim = tmp_path / "etc"
    victim.mkdir(mode=0o755)
    link = tmp_path / "run"
    link.symlink_to(victim)
    proc = run_pyinit("--user", f"{UID}:{GID}", "--mkdir", str(link), "--", "true")
    assert proc.returncode == 125
    assert "is a symbolic link" in proc.stderr
    assert mode_owner(victim) == (0o755, 0, 0)


def test_mkdir_refuses_a_parent_symlink_owned_by_a_user(tmp_path: Path) -> None:
    # The volume's owner made data/x a link to a root directory: --mkdir data/x/sub
    # must not create (or take over) anything there.
    victim = tmp_path / "etc"
    (victim / "sub").mkdir(parents=True)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, GID)
    (data / "x").symlink_to(victim)
    os.lchown(data / "x", UID, GID)
    proc = run_pyinit("--user", f"{UID}:{GID}", "--mkdir", f"{data}/x/sub", "--", "true")
    assert proc.returncode == 125
    assert "symbolic link not controlled by root" in proc.stderr
    assert mode_owner(victim / "sub")[1:] == (0, 0)


def test_mkdir_follows_a_root_owned_parent_symlink(tmp_path: Path) -> None:
    # Like /var/run -> /run in Debian images.
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to(tmp_path / "run")
    ok(run_pyinit("--user", f"{UID}:{GID}", "--mkdir", f"{tmp_path}/var/run/redis", "--", "true"))
    assert mode_owner(tmp_path / "run" / "redis") == (0o755, UID, GID)


def test_mkdir_follows_a_relative_root_owned_parent_symlink(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("../run")
    ok(run_pyinit("--user", f"{UID}:{GID}", "--mkdir", f"{tmp_path}/var/run/app", "--", "true"))
    assert mode_owner(tmp_path / "run" / "app") == (0o755, UID, GID)


def test_mkdir_checks_the_target_of_a_root_owned_link_too(tmp_path: Path) -> None:
    # Root's own link into a volume (/var/lib/app -> /data/app); the volume's
    # owner made data/app a link to a root directory.
    victim = tmp_path / "etc"
    victim.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, GID)
    (data / "app").symlink_to(victim)
    os.lchown(data / "app", UID, GID)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "app").symlink_to(data / "app")
    proc = run_pyinit("--user", f"{UID}:{GID}", "--mkdir", f"{tmp_path}/lib/app/logs", "--", "true")
    assert proc.returncode == 125
    assert f"{data}/app is a symbolic link not controlled by root" in proc.stderr
    assert not (victim / "logs").exists()


def test_mkdir_without_user_is_roots(tmp_path: Path) -> None:
    ok(run_pyinit("--mkdir", f"{tmp_path}/d:0700", "--", "true"))
    assert mode_owner(tmp_path / "d") == (0o700, 0, 0)


def test_mkdir_and_chown_refuse_the_root_directory() -> None:
    # --dry-run: a refusal must never be tested against the real root directory.
    for flag in ("--mkdir", "--chown"):
        proc = run_pyinit("--dry-run", "--user", "nobody", flag, "/", "--", "true")
        assert proc.returncode == 125
        assert "refusing to act on the root directory" in proc.stderr


# --- umask, rlimits, workdir as the target sees them -----------------------------------


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the target user can reach (pytest's tmp_path is root-only)."""
    with scratch_dir("pyinit-test-") as path:
        yield path


def test_umask_and_rlimits_as_the_target_sees_them(public_dir: Path) -> None:
    out = ok(
        run_pyinit(
            "--user", f"{UID}:{GID}", "--umask", "027",
            "--rlimit", "nofile=1000:2000", "--rlimit", "core=0",
            "--mkdir", f"{public_dir}/work", "--workdir", f"{public_dir}/work",
            "--", "sh", "-c", "id -u; umask; ulimit -n; ulimit -Hn; ulimit -c; pwd; touch new",
        )
    )  # fmt: skip
    assert out.split() == [str(UID), "0027", "1000", "2000", "0", f"{public_dir}/work"]
    assert mode_owner(public_dir / "work" / "new") == (0o640, UID, GID)


def test_rlimit_unlimited_reaches_the_target_only() -> None:
    # Limits are the target's (issue 8 item 12): hooks run with pyinit's own.
    out = ok(
        run_pyinit("--rlimit", "core=0", "--pre", "echo pre $(ulimit -c)",
                   "--", "sh", "-c", "echo target $(ulimit -c)")
    )  # fmt: skip
    pre, target = out.splitlines()
    assert target == "target 0"
    assert pre == f"pre {_shell_limit(resource.RLIMIT_CORE)}"


def _shell_limit(which: int) -> str:
    soft, _ = resource.getrlimit(which)
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft // 512)


def test_rlimit_failure_names_the_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    step = RlimitStep(name="nofile", resource=resource.RLIMIT_NOFILE, soft=hard + 1, hard=hard)
    with pytest.raises(PyinitError) as info:
        set_rlimit(step)
    assert info.value.message.startswith(f"--rlimit nofile={hard + 1}:{hard}: ")
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_raising_a_hard_limit_without_sys_resource_fails_before_anything(tmp_path: Path) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = run_pyinit(
        "--mkdir", f"{tmp_path}/d", "--rlimit", f"nofile={hard + 1}", "--", "true",
        prefix=("setpriv", "--bounding-set", "-sys_resource", "--"),
    )  # fmt: skip
    assert proc.returncode == 125
    assert "--rlimit nofile: raising the hard limit needs CAP_SYS_RESOURCE" in proc.stderr
    assert not (tmp_path / "d").exists()  # pre-flight: nothing was done


# --- secrets ---------------------------------------------------------------------------

SHOW_ENV = "echo DB_PASSWORD=${DB_PASSWORD-unset}; echo DB_PASSWORD_FILE=${DB_PASSWORD_FILE-unset}"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only secret file with a trailing newline."""
    path = tmp_path / "db_password"
    path.write_text("s3cret value\n")
    os.chmod(path, 0o600)
    return path


def test_file_env_reads_the_secret_as_root(secret: Path, tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    env = clean_env(DB_PASSWORD_FILE=str(secret), SSL_CERT_FILE=str(cert))
    out = ok(
        run_pyinit("--user", f"{UID}:{GID}", "--file-env", "DB_PASSWORD", "--",
                   "sh", "-c", SHOW_ENV + "; echo SSL_CERT_FILE=$SSL_CERT_FILE", env=env)
    )  # fmt: skip
    assert out.splitlines() == [
        "DB_PASSWORD=s3cret value",  # one trailing newline stripped
        "DB_PASSWORD_FILE=unset",  # removed
        f"SSL_CERT_FILE={cert}",  # not opted in: untouched
    ]


def test_pyinit_file_env_variable(secret: Path) -> None:
    env = clean_env(DB_PASSWORD_FILE=str(secret), PYINIT_FILE_ENV="OTHER, DB_PASSWORD")
    out = ok(run_pyinit("--", "sh", "-c", SHOW_ENV, env=env))
    assert out.splitlines() == ["DB_PASSWORD=s3cret value", "DB_PASSWORD_FILE=unset"]


def test_file_env_without_the_file_variable_keeps_the_value() -> None:
    env = clean_env(DB_PASSWORD="direct")
    out = ok(run_pyinit("--file-env", "DB_PASSWORD", "--", "sh", "-c", SHOW_ENV, env=env))
    assert out.splitlines() == ["DB_PASSWORD=direct", "DB_PASSWORD_FILE=unset"]


def test_file_env_both_set_is_an_error_naming_the_variable(secret: Path) -> None:
    env = clean_env(DB_PASSWORD="x", DB_PASSWORD_FILE=str(secret))
    proc = run_pyinit("--file-env", "DB_PASSWORD", "--", "true", env=env)
    assert proc.returncode == 125
    assert "DB_PASSWORD and DB_PASSWORD_FILE are set" in proc.stderr


def test_file_env_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    env = clean_env(DB_PASSWORD_FILE=str(missing))
    proc = run_pyinit("--file-env", "DB_PASSWORD", "--", "true", env=env)
    assert proc.returncode == 125
    assert f"DB_PASSWORD_FILE={missing}: No such file or directory" in proc.stderr


def test_other_file_variables_are_not_secrets(secret: Path) -> None:
    env = clean_env(DB_PASSWORD_FILE=str(secret))
    out = ok(run_pyinit("--", "sh", "-c", SHOW_ENV, env=env))
    assert out.splitlines() == ["DB_PASSWORD=unset", f"DB_PASSWORD_FILE={secret}"]


# --- hooks -----------------------------------------------------------------------------


def make_pre_dir(tmp_path: Path, log_file: Path) -> Path:
    """A /docker-entrypoint.d-style directory: two executables and a skipped plain file."""
    hooks = tmp_path / "entrypoint.d"
    hooks.mkdir()
    for name in ("20-second", "10-first", "30-not-executable"):
        script = hooks / name
        script.write_text(f"#!/bin/sh\necho {name} $(id -u) >> {log_file}\n")
        script.chmod(0o644 if "not" in name else 0o755)
    return hooks


def test_hooks_run_in_order_as_root_before_the_target(public_dir: Path) -> None:
    log_file = public_dir / "log"
    log_file.touch()
    log_file.chmod(0o666)
    hooks = make_pre_dir(public_dir, log_file)
    ok(
        run_pyinit(
            "--user", f"{UID}:{GID}",
            "--pre", f"echo pre-one $(id -u) >> {log_file}",
            "--pre-dir", str(hooks),
            "--pre", f"echo pre-two $(id -u) >> {log_file}",
            "--", "sh", "-c", f"echo target $(id -u) >> {log_file}",
        )
    )  # fmt: skip
    assert log_file.read_text().splitlines() == [
        "pre-one 0",
        "pre-two 0",
        "10-first 0",
        "20-second 0",
        f"target {UID}",
    ]


def test_hooks_see_the_plan_environment(secret: Path) -> None:
    env = clean_env(DB_PASSWORD_FILE=str(secret))
    out = ok(
        run_pyinit("--file-env", "DB_PASSWORD", "--pre", 'echo "hook sees $DB_PASSWORD"',
                   "--", "true", env=env)
    )  # fmt: skip
    assert out == "hook sees s3cret value\n"


def test_failing_hook_stops_everything_after_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = run_pyinit(
        "--user", f"{UID}:{GID}",
        "--pre", "exit 3",
        "--pre", f"touch {marker}.hook",
        "--", "sh", "-c", f"touch {marker}.target",
    )  # fmt: skip
    assert proc.returncode == 125
    assert proc.stderr.strip() == "pyinit: pre hook --pre 'exit 3' exited with 3"
    assert not Path(f"{marker}.hook").exists()
    assert not Path(f"{marker}.target").exists()


def test_hook_killed_by_a_signal_is_reported() -> None:
    proc = run_pyinit("--pre", "kill -KILL $$", "--", "true")
    assert proc.returncode == 125
    assert "pre hook --pre 'kill -KILL $$' was killed by SIGKILL" in proc.stderr


def test_hook_that_cannot_be_executed(tmp_path: Path) -> None:
    hooks = tmp_path / "d"
    hooks.mkdir()
    bad = hooks / "bad"
    bad.write_bytes(b"\x7fELF garbage")
    bad.chmod(0o755)
    proc = run_pyinit("--pre-dir", str(hooks), "--", "true")
    assert proc.returncode == 125
    assert f"--pre-dir {bad}: cannot run {bad}: " in proc.stderr


def test_hooks_get_a_clean_signal_state() -> None:
    # Python ignores SIGPIPE and pyinit blocks signals at start-up; a hook must
    # inherit neither (`yes | head` would otherwise report a broken pipe).
    out = ok(
        run_pyinit("--pre", "grep -E '^Sig(Blk|Ign)' /proc/self/status; yes | head -n1",
                   "--", "true")
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0].split() == ["SigBlk:", "0000000000000000"]
    # Standard signals only: glibc reserves 32 and 33 and cannot reset them.
    assert int(lines[1].split()[1], 16) & 0x7FFFFFFF == 0
    assert lines[2] == "y"


def test_stop_signal_during_a_pre_hook_is_relayed_and_stops_start_up(tmp_path: Path) -> None:
    started = tmp_path / "started"
    target_ran = tmp_path / "target"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyinit", "--pre", f"touch {started}; exec sleep 30",
         "--", "touch", str(target_ran)],
        stderr=subprocess.PIPE, text=True, env=clean_env(), cwd="/",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    assert time.monotonic() - t0 < 10  # the hook got the signal: no 30 s sleep
    assert proc.returncode == 128 + signal.SIGTERM
    assert "received SIGTERM during pre hook" in err
    assert not target_ran.exists()


def test_dry_run_lists_every_setup_action_in_order(tmp_path: Path) -> None:
    out = ok(
        run_pyinit(
            "--dry-run", "--user", "nobody",
            "--mkdir", f"{tmp_path}/m:0700", "--chown", f"{tmp_path}/c",
            "--rlimit", "core=0", "--pre", "echo hi", "--umask", "027", "--", "true",
        )
    )  # fmt: skip
    steps = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert steps[0].startswith(f"1. mkdir {tmp_path}/m (mode 0700), owned by nobody (65534:65534)")
    assert steps[1].startswith(f"2. chown -R (no symlinks) {tmp_path}/c to nobody (65534:65534)")
    assert steps[2] == "3. rlimit core soft=0 hard=0"
    assert steps[3] == "4. pre hook --pre 'echo hi'"
    assert "  umask 027" in out.splitlines()
    assert not (tmp_path / "m").exists()


# --- capability pre-flight -------------------------------------------------------------

needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


@needs_setpriv
def test_preflight_names_a_dropped_chown_capability(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").touch()
    proc = run_pyinit(
        "--user", f"{UID}:{GID}", "--mkdir", f"{tmp_path}/new", "--chown", str(data),
        "--pre", f"touch {tmp_path}/hook-ran", "--", "true",
        prefix=("setpriv", "--bounding-set", "-chown", "--"),
    )  # fmt: skip
    assert proc.returncode == 125
    assert "needs CAP_CHOWN, which this process lacks: the container drops it" in proc.stderr
    # Checked before acting: nothing happened.
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "hook-ran").exists()
    assert (data / "f").stat().st_uid == 0


@needs_setpriv
def test_preflight_names_every_missing_capability() -> None:
    proc = run_pyinit(
        "--user", "nobody", "--chown", "/tmp", "--", "true",
        prefix=("setpriv", "--bounding-set", "-chown,-setuid,-setgid", "--"),
    )  # fmt: skip
    assert proc.returncode == 125
    err = proc.stderr
    assert "needs CAP_SETUID" in err and "CAP_SETGID" in err and "CAP_CHOWN" in err
    assert err.count("\n") == 1


@needs_setpriv
def test_capsh_drop_is_seen_too(tmp_path: Path) -> None:
    if shutil.which("capsh") is None:
        pytest.skip("needs capsh")
    import shlex

    command = shlex.join([sys.executable, "-m", "pyinit", "--chown", str(tmp_path), "--", "true"])
    proc = subprocess.run(
        ["capsh", "--drop=cap_chown", "--", "-c", command],
        capture_output=True, text=True, timeout=TIMEOUT, env=clean_env(), cwd="/",
    )  # fmt: skip
    assert proc.returncode == 125
    assert "--chown: changing file ownership needs CAP_CHOWN" in proc.stderr


# --- non-root start --------------------------------------------------------------------


@pytest.fixture
def world_readable_pyinit(public_dir: Path) -> dict[str, str]:
    """An environment in which uid 1000 can import this pyinit (a world-readable copy).

    The test interpreter may live under /root (mode 0700); the system python3
    is used for the non-root runs.
    """
    if shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs setpriv and /usr/bin/python3")
    version = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    if version.stdout.strip() != "True":
        pytest.skip("/usr/bin/python3 is older than 3.11")
    root = public_dir / "site"
    shutil.copytree(Path(__file__).resolve().parent.parent / "pyinit", root / "pyinit")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755)
    return clean_env(PYTHONPATH=str(root))


AS_USER_1000 = ("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "--")


def test_non_root_start_skips_root_setup_with_one_notice(
    tmp_path: Path, world_readable_pyinit: dict[str, str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = run_pyinit(
        "--chown", str(data), "--mkdir", f"{tmp_path}/new", "--", "id", "-u",
        env=world_readable_pyinit, prefix=AS_USER_1000, python="/usr/bin/python3",
    )  # fmt: skip
    assert ok(proc) == "1000\n"
    assert proc.stderr == "pyinit: running as uid 1000, not root: skipping root setup\n"
    assert not (tmp_path / "new").exists()


def test_non_root_start_with_if_not_root_fail(
    tmp_path: Path, world_readable_pyinit: dict[str, str]
) -> None:
    proc = run_pyinit(
        "--if-not-root", "fail", "--chown", str(tmp_path), "--", "id",
        env=world_readable_pyinit, prefix=AS_USER_1000, python="/usr/bin/python3",
    )  # fmt: skip
    assert proc.returncode == 125
    assert "running as uid 1000 (--if-not-root fail)" in proc.stderr


def test_non_root_start_as_the_asked_user(
    tmp_path: Path, world_readable_pyinit: dict[str, str]
) -> None:
    # Kubernetes runAsUser: 1000 with --user 1000:1000 in the image: carry on.
    proc = run_pyinit(
        "--user", "1000:1000", "--chown", str(tmp_path), "--", "id", "-u",
        env=world_readable_pyinit, prefix=AS_USER_1000, python="/usr/bin/python3",
    )  # fmt: skip
    assert ok(proc) == "1000\n"
    assert "skipping root setup" in proc.stderr


# --- run_hook, in-process (the supervisor's --post hooks use it) ------------------------


def sh_hook(command: str) -> Hook:
    """A /bin/sh -c hook."""
    return Hook(label=f"--post {command!r}", argv=("/bin/sh", "-c", command))


def test_run_hook_status_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_hook(sh_hook(f'echo "$X" > {out}; exit 7'), {"X": "from env"}) == 7
    assert out.read_text() == "from env\n"
    assert run_hook(sh_hook("kill -TERM $$"), {}) == -signal.SIGTERM
    assert describe_returncode(7) == "exited with 7"
    assert describe_returncode(-signal.SIGTERM) == "was killed by SIGTERM"


def test_relay_bounds_a_hook_by_the_stop_deadline(tmp_path: Path) -> None:
    # A stop signal during a pre hook starts the one deadline: TERM, then
    # KILL for a hook (and its group) that ignores them.
    pid_file = tmp_path / "child"
    hook = sh_hook(
        f"trap '' TERM INT; sleep 60 & echo $! > {pid_file}; kill -INT $PPID; wait; wait"
    )
    t0 = time.monotonic()
    with SignalRelay([signal.SIGINT, signal.SIGTERM], stop_timeout=1.0) as relay:
        code = run_hook(hook, {"PATH": os.environ["PATH"]}, relay=relay)
    assert code == -signal.SIGKILL
    assert time.monotonic() - t0 < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)  # the hook's own child went with it


def test_signal_relay_hands_signals_on_and_restores_the_mask() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with SignalRelay([signal.SIGHUP]) as relay:
        # The hook signals us; the relay hands the signal on to the hook.
        code = run_hook(sh_hook("kill -HUP $PPID; sleep 5"), {}, relay=relay)
        assert code == -signal.SIGHUP
        assert relay.received == [signal.SIGHUP]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
