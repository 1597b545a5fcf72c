"""Privilege hardening of the step-down (issue 8 items 4, 5, 7, 12, 16; issue 9 item 3).

Each test shows what the service user sees: capability sets, the controlling
terminal, inherited descriptors, resource limits, and plans that refuse
exactly as the run would.  Everything runs in the fixture sandbox.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import PYINIT, Sandbox, scratch_dir, status_field

MODES = ("exec", "supervise")

#: What an old runtime (or ``setpriv --inh-caps``) leaves in CapInh.
INHERITABLE = "+dac_override,+net_bind_service,+chown,+setuid,+setgid"


@pytest.fixture
def capable_cat() -> Iterator[tuple[Path, Path]]:
    """A copy of cat with file capabilities ``cap_dac_override+ei`` and a 0600 root file."""
    if shutil.which("setcap") is None:
        pytest.skip("setcap (libcap2-bin) is not installed")
    with scratch_dir("pyinit-caps-") as directory:
        cat = directory / "cat"
        shutil.copy("/bin/cat", cat)
        cat.chmod(0o755)
        os.system(f"setcap cap_dac_override+ei {cat}")
        secret = directory / "secret"
        secret.write_text("root only\n")
        secret.chmod(0o600)
        yield cat, secret


# --- item 4: the inheritable set does not survive the step-down -------------------


@pytest.mark.parametrize("mode", MODES)
def test_inheritable_caps_do_not_reach_a_file_capability_binary(
    sandbox: Sandbox, capable_cat: tuple[Path, Path], mode: str
) -> None:
    cat, secret = capable_cat
    result = sandbox.run(
        [
            "setpriv",
            "--inh-caps",
            INHERITABLE,
            *PYINIT,
            "--mode",
            mode,
            "--user",
            "nobody",
            "--",
            str(cat),
            str(secret),
        ],
        pid_namespace=True,
    )
    assert "root only" not in result.stdout
    assert result.returncode != 0, result


@pytest.mark.parametrize("mode", MODES)
def test_target_capability_sets_are_empty_after_inheritable_start(
    sandbox: Sandbox, mode: str
) -> None:
    result = sandbox.run(
        [
            "setpriv",
            "--inh-caps",
            INHERITABLE,
            *PYINIT,
            "--mode",
            mode,
            "--user",
            "nobody",
            "--",
            "cat",
            "/proc/self/status",
        ],
        pid_namespace=True,
    )
    assert result.returncode == 0, result
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status_field(result.stdout, field), 16) == 0, field


@pytest.mark.parametrize("mode", MODES)
def test_keep_cap_keeps_only_that_capability_in_every_set(sandbox: Sandbox, mode: str) -> None:
    result = sandbox.run(
        [
            "setpriv",
            "--inh-caps",
            INHERITABLE,
            *PYINIT,
            "--mode",
            mode,
            "--user",
            "nobody",
            "--keep-cap",
            "NET_BIND_SERVICE",
            "--",
            "cat",
            "/proc/self/status",
        ],
        pid_namespace=True,
    )
    assert result.returncode == 0, result
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status_field(result.stdout, field), 16) == 1 << 10, field


# --- item 5: --setsid means no controlling terminal, also when pyinit leads the session ---

TTY_PROBE = """
import fcntl, os, termios
tty_nr = int(open("/proc/self/stat").read().rpartition(")")[2].split()[4])
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    sti = "worked"
except OSError as e:
    sti = "failed"
try:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    sctty = "worked"
except OSError as e:
    sctty = "failed"
print(f"tty_nr={tty_nr} sti={sti} sctty={sctty}")
"""


def run_on_a_terminal(argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run ``argv`` as the session leader of a new pty (``docker run -it``); (status, output)."""
    import pty
    import select
    import time

    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave fd is closed
                    break
                if not chunk:
                    break
                output += chunk
        else:
            os.kill(pid, 9)
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.parametrize("mode", MODES)
def test_setsid_target_has_no_controlling_terminal_when_pyinit_leads_the_session(
    sandbox: Sandbox, mode: str
) -> None:
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 for the target")
    # setsid -c: pyinit is PID 1, leads its session and the pty is its
    # controlling terminal, as with `docker run -it`.
    argv = sandbox.argv(
        [
            "setsid",
            "-c",
            *PYINIT,
            "--mode",
            mode,
            "--setsid",
            "--user",
            "nobody",
            "--",
            "/usr/bin/python3",
            "-I",
            "-c",
            TTY_PROBE,
        ],
        pid_namespace=True,
    )
    status, output = run_on_a_terminal(argv)
    if mode == "exec" and "cannot start a new session" in output:
        return  # exec mode refuses clearly: the target never runs with the terminal
    assert "tty_nr=0 sti=failed sctty=failed" in output, (status, output)
    assert status == 0, output


# --- items 7 and 16: inherited fds closed in both modes; LISTEN_FDS decided by the plan ---

FD_PROBE = """
import os
print(*sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
print(os.environ.get("LISTEN_PID"), os.getpid())
"""


def run_with_inherited_fds(mode: str, env_extra: dict[str, str]) -> tuple[int, str, str]:
    """Run pyinit (PID 1) with fds 3, 5, 7 and 1000 inherited, ``--keep-fd 5``."""
    import subprocess

    from pidns import TARGET_PYTHON, UNSHARE

    read_end, write_end = os.pipe()
    os.dup2(read_end, 20)
    cmd = [*UNSHARE, *PYINIT, "--mode", mode, "--keep-fd", "5", "--", TARGET_PYTHON, "-c"]
    env = dict(os.environ, **env_extra)
    try:
        result = subprocess.run(
            [
                "bash",
                "-c",
                'exec 3<&20 5<&20 7<&20 1000<&20 20<&-; exec "$@"',
                "bash",
                *cmd,
                FD_PROBE,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            pass_fds=(20,),
        )
    finally:
        for fd in (read_end, write_end, 20):
            os.close(fd)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_inherited_fds_are_closed_in_both_modes(mode: str) -> None:
    code, out, err = run_with_inherited_fds(mode, {})
    assert code == 0, err
    fds = out.splitlines()[0].split()
    # 0, 1, 2, the kept 5, and listdir's own descriptor.
    assert "5" in fds and "7" not in fds and "1000" not in fds and len(fds) == 5, out


@pytest.mark.parametrize("mode", MODES)
def test_listen_fds_are_kept_and_name_the_target(mode: str) -> None:
    code, out, err = run_with_inherited_fds(mode, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert code == 0, err
    fds_line, pid_line = out.splitlines()
    fds = fds_line.split()
    assert "3" in fds and "5" in fds and "7" not in fds and "1000" not in fds, out
    assert len(fds) == 6, out  # 0, 1, 2, 3, 5 and listdir's own
    listen_pid, target_pid = pid_line.split()
    assert listen_pid == target_pid


def test_listen_fds_for_another_process_are_closed() -> None:
    code, out, err = run_with_inherited_fds("exec", {"LISTEN_FDS": "1", "LISTEN_PID": "4242"})
    assert code == 0, err
    assert "7" not in out.splitlines()[0].split()


def test_listen_fds_beyond_the_fd_table_is_refused_in_the_plan(sandbox: Sandbox) -> None:
    env = {"LISTEN_FDS": "5000000", "LISTEN_PID": "1"}
    result = sandbox.pyinit("--dry-run", "--", "true", pid_namespace=True, env=_env(env))
    assert result.returncode == 125, result
    assert result.stderr.startswith("pyinit: LISTEN_FDS"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_plan_records_the_listen_fds() -> None:
    from pyinit.cli import parse_options
    from pyinit.plan import build_plan

    options = parse_options(["--", "true"], {})
    env = {"LISTEN_FDS": "2", "LISTEN_PID": "77"}
    assert build_plan(options, env, pid=77, euid=0).listen_fds == 2
    assert build_plan(options, env, pid=78, euid=0).listen_fds == 0
    assert build_plan(options, {"LISTEN_FDS": "²", "LISTEN_PID": "77"}, pid=77).listen_fds == 0


def _env(extra: dict[str, str]) -> dict[str, str]:
    from sandbox import base_environment

    return base_environment(**extra)


# --- issue 9 item 3: --dry-run refuses what the run refuses ---------------------------


@pytest.mark.parametrize("extra", [(), ("--dry-run",)])
def test_keep_cap_setuid_is_refused_by_the_plan(sandbox: Sandbox, extra: tuple[str, ...]) -> None:
    result = sandbox.pyinit(*extra, "--user", "nobody", "--keep-cap", "SETUID", "--", "true")
    assert result.returncode == 125, result
    assert result.stderr.startswith("pyinit: --keep-cap SETUID:"), result.stderr
    assert len(result.stderr.splitlines()) == 1


# --- item 12: rlimits are the target's, not PID 1's --------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", [(), ("--user", "nobody")])
def test_rlimit_nofile_applies_to_the_target_only(
    sandbox: Sandbox, mode: str, user: tuple[str, ...]
) -> None:
    # nofile=4: trio's wakeup pipes and epoll alone would not fit in PID 1.
    script = "cat /proc/self/limits; exit 3"
    result = sandbox.pyinit(
        "--mode",
        mode,
        "--rlimit",
        "nofile=4",
        *user,
        "--",
        "/bin/sh",
        "-c",
        script,
        pid_namespace=True,
    )
    assert result.returncode == 3, result
    assert "Max open files            4                    4" in result.stdout, result.stdout


def test_exec_mode_setsid_that_cannot_work_is_refused_by_dry_run_too(sandbox: Sandbox) -> None:
    argv = sandbox.argv(
        ["setsid", "-c", *PYINIT, "--mode", "exec", "--setsid", "--dry-run", "--", "true"],
        pid_namespace=True,
    )
    status, output = run_on_a_terminal(argv)
    assert status == 125, output
    assert output.startswith("pyinit: --setsid:"), output
