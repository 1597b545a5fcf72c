"""Exec mode end to end: PID, exit codes, errors, step-down hardening, process attributes.

Everything runs in the fixture sandbox (see :mod:`sandbox`): a private mount
namespace with fixture users, and for the PID-1 tests a private PID
namespace too (``unshare --pid --fork --mount-proc``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox import (
    PROJECT_ROOT,
    PYINIT,
    PYINIT_IMPORTTIME,
    Sandbox,
    base_environment,
    children,
    imported_modules,
    run_pyinit,
    scratch_dir,
    status_field,
)

AS_NOBODY = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")


def one_error_line(stderr: str) -> str:
    """The single ``pyinit: ...`` line of a failed start (fails on anything else)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pyinit: "), stderr
    return lines[0]


# --- PID and mode ----------------------------------------------------------------------


def test_exec_mode_as_pid1_makes_the_target_pid1(sandbox: Sandbox) -> None:
    code, out, err = sandbox.pyinit(
        "--mode", "exec", "--user", "redis", "--", "sh", "-c", "echo $$", pid_namespace=True
    )
    assert (code, out, err) == (0, "1\n", "")


def test_pyinit_mode_env_selects_exec(sandbox: Sandbox) -> None:
    env = base_environment(PYINIT_MODE="exec")
    code, out, _ = sandbox.pyinit("--", "sh", "-c", "echo $$", pid_namespace=True, env=env)
    assert (code, out) == (0, "1\n")


def test_auto_mode_when_not_pid1_execs_in_place(sandbox: Sandbox) -> None:
    # The shell prints its pid, then becomes pyinit, which becomes the target.
    code, out, err = sandbox.run(
        [
            "sh",
            "-c",
            'echo $$; exec "$@"',
            "sh",
            *PYINIT,
            "--user",
            "alice",
            "--",
            "sh",
            "-c",
            "echo $$",
        ]
    )
    assert code == 0, err
    first, second = out.split()
    assert first == second


# --- exit status -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [0, 1, 7, 125, 126, 127, 255])
def test_exit_status_passes_through(sandbox: Sandbox, status: int) -> None:
    code, _, err = sandbox.pyinit(
        "--mode",
        "exec",
        "--user",
        "redis",
        "--",
        "sh",
        "-c",
        f"exit {status}",
        pid_namespace=True,
    )
    assert (code, err) == (status, "")


def test_killed_target_dies_by_the_signal_itself(sandbox: Sandbox) -> None:
    # In exec mode the target *is* pyinit's process: its parent (here the
    # test, in a container the runtime) sees the signal, and reports 128+N.
    code, _, _ = sandbox.pyinit("--user", "redis", "--", "sh", "-c", "kill -TERM $$")
    assert code == -signal.SIGTERM
    code, out, _ = sandbox.run(
        [
            "sh",
            "-c",
            '"$@"; echo $?',
            "sh",
            *PYINIT,
            "--user",
            "redis",
            "--",
            "sh",
            "-c",
            "kill -KILL $$",
        ]
    )
    assert out.strip() == str(128 + signal.SIGKILL)


def test_pid1_target_killed_from_outside(sandbox: Sandbox) -> None:
    argv = sandbox.argv(
        [*PYINIT, "--mode", "exec", "--user", "redis", "--", "sleep", "30"], pid_namespace=True
    )
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base_environment(),
        start_new_session=True,
    )
    try:
        pid1 = _wait_for_comm(proc.pid, "sleep")
        os.kill(pid1, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # unshare reports a child killed by signal N by killing itself with N;
    # util-linux 2.38 fails to do that for SIGKILL and exits 1 with a message.
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or (
        proc.returncode == 1 and "unshare" in err
    ), (proc.returncode, err)


def _wait_for_comm(unshare_pid: int, comm: str, timeout: float = 10.0) -> int:
    """The namespace's PID 1 (unshare's child), once it runs ``comm``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(unshare_pid):
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                    return child
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no child of {unshare_pid} became {comm!r}")


# --- 126 and 127 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bindir() -> Iterator[Path]:
    """A world-searchable directory with an executable, a non-executable file, a directory."""
    with scratch_dir("pyinit-bin-") as directory:
        (directory / "hello").write_text("#!/bin/sh\necho hello from $0\n")
        (directory / "hello").chmod(0o755)
        (directory / "noexec").write_text("#!/bin/sh\necho never\n")
        (directory / "noexec").chmod(0o644)
        (directory / "adir").mkdir()
        (directory / "garbage").write_bytes(b"\x7fELF not really\n")
        (directory / "garbage").chmod(0o755)
        later = directory / "later"
        later.mkdir()
        (later / "noexec").write_text("#!/bin/sh\necho found later\n")
        (later / "noexec").chmod(0o755)
        for path in (later, directory / "adir"):
            path.chmod(0o755)
        yield directory


@pytest.mark.parametrize(
    ("command", "code", "words"),
    [
        (["/etc"], 126, "is a directory"),
        (["/etc/passwd"], 126, "permission denied"),
        (["/nonexistent/cmd"], 127, "no such file"),
        (["/etc/passwd/x"], 127, "no such file"),
        (["no-such-command-xyz"], 127, "not found"),
        ([""], 127, "not found"),
    ],
)
def test_cannot_run(sandbox: Sandbox, command: list[str], code: int, words: str) -> None:
    result = sandbox.pyinit("--user", "redis", "--", *command)
    assert result.returncode == code
    line = one_error_line(result.stderr)
    assert words in line
    assert command[0] in line


def test_126_for_a_file_that_is_not_executable(sandbox: Sandbox, bindir: Path) -> None:
    result = sandbox.pyinit("--user", "redis", "--", str(bindir / "noexec"))
    assert result.returncode == 126
    assert "permission denied" in one_error_line(result.stderr)


def test_126_for_exec_format_error(sandbox: Sandbox, bindir: Path) -> None:
    result = sandbox.pyinit("--user", "redis", "--", str(bindir / "garbage"))
    assert result.returncode == 126
    assert "exec format error" in one_error_line(result.stderr)


def test_path_lookup_finds_later_directories(sandbox: Sandbox, bindir: Path) -> None:
    env = base_environment(PATH=f"/root:/nonexistent:{bindir}:/usr/bin:/bin")
    code, out, err = sandbox.pyinit("--user", "redis", "--", "hello", env=env)
    assert (code, err) == (0, "")
    assert out == f"hello from {bindir}/hello\n"


def test_unsearchable_path_dir_is_skipped_not_126(sandbox: Sandbox) -> None:
    # /root is not searchable by redis: a missing command is "not found" (127), not EACCES.
    env = base_environment(PATH="/root:/usr/bin:/bin")
    result = sandbox.pyinit("--user", "redis", "--", "no-such-command-xyz", env=env)
    assert result.returncode == 127
    assert "not found" in one_error_line(result.stderr)
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "id", "-u", env=env)
    assert (code, out) == (0, "999\n")


def test_path_directory_named_like_the_command_is_skipped(sandbox: Sandbox, bindir: Path) -> None:
    env = base_environment(PATH=f"{bindir}:/usr/bin:/bin")
    result = sandbox.pyinit("--user", "redis", "--", "adir", env=env)
    assert result.returncode == 127


def test_non_executable_match_does_not_hide_a_later_one(sandbox: Sandbox, bindir: Path) -> None:
    env = base_environment(PATH=f"{bindir}:{bindir}/later:/usr/bin:/bin")
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "noexec", env=env)
    assert (code, out) == (0, "found later\n")
    only_bad = base_environment(PATH=f"{bindir}:/usr/bin:/bin")
    assert sandbox.pyinit("--user", "redis", "--", "noexec", env=only_bad).returncode == 126


# --- every start-up error: 125 and one line naming the flag and value ------------------

ERRORS = [
    (["--user", "nosuchuser"], {}, ["--user", "nosuchuser"]),
    (["--user", "alice:nosuchgroup"], {}, ["--user", "nosuchgroup"]),
    (["--user", "2147483648"], {}, ["--user", "2147483648"]),
    (["--umask", "999"], {}, ["--umask", "999"]),
    (["--umask", "0o1777"], {}, ["--umask", "1777"]),
    (["--rlimit", "nofile"], {}, ["--rlimit", "nofile"]),
    (["--rlimit", "bogus=1"], {}, ["--rlimit", "bogus"]),
    (["--rlimit", "nofile=10:5"], {}, ["--rlimit", "nofile=10:5"]),
    (["--mode", "bogus"], {}, ["--mode", "bogus"]),
    ([], {"PYINIT_MODE": "bogus"}, ["PYINIT_MODE", "bogus"]),
    (["--mode", "exec", "--post", "true"], {}, ["--post", "--mode"]),
    (["--json"], {}, ["--json", "--dry-run"]),
    (["--verbose", "--quiet"], {}, ["--verbose", "--quiet"]),
    (["--user", "redis", "--groups", "nosuchgroup"], {}, ["--groups", "nosuchgroup"]),
    (["--groups", "audio"], {}, ["--groups", "--user"]),
    (["--keep-cap", "NOT_A_CAP"], {}, ["--keep-cap", "NOT_A_CAP"]),
    (["--stop-timeout", "soon"], {}, ["--stop-timeout", "soon"]),
    (["--mkdir", "relative/dir"], {}, ["--mkdir", "relative/dir"]),
    (["--file-env", "SECRET"], {"SECRET": "a", "SECRET_FILE": "/x"}, ["SECRET"]),
    (["--file-env", "SECRET"], {"SECRET_FILE": "/nonexistent"}, ["SECRET", "/nonexistent"]),
    (["--user", "redis", "--workdir", "/nonexistent"], {}, ["--workdir", "/nonexistent"]),
    (["--no-such-flag"], {}, ["--no-such-flag"]),
]


@pytest.mark.parametrize(("args", "env", "words"), ERRORS, ids=lambda v: repr(v)[:40])
def test_errors_are_125_and_one_line(
    sandbox: Sandbox, args: list[str], env: dict[str, str], words: list[str]
) -> None:
    result = sandbox.pyinit(*args, "--", "true", env=base_environment(**env))
    assert result.returncode == 125
    assert result.stdout == ""
    line = one_error_line(result.stderr)
    for word in words:
        assert word in line


def test_no_command_is_125(sandbox: Sandbox) -> None:
    for args in ([], ["--"], ["--user", "redis"], ["--user", "redis", "--"]):
        result = sandbox.pyinit(*args)
        assert result.returncode == 125
        assert "no command" in one_error_line(result.stderr)


# --- the step-down as the target sees it -----------------------------------------------

STATUS = "cat /proc/self/status"


def test_signal_state_is_fresh(sandbox: Sandbox) -> None:
    # Python ignores SIGPIPE/SIGXFSZ and pyinit blocks signals while starting:
    # none of that may reach the target.  pyinit starts with default
    # dispositions (env --default-signal), so what the test runner inherited
    # (nohup's SIGHUP, a background job's SIGINT) does not count.
    argv = ["env", "--default-signal", *PYINIT, "--user", "redis", "--", "sh", "-c", STATUS]
    code, out, _ = sandbox.run(argv)
    assert code == 0
    assert int(status_field(out, "SigIgn"), 16) == 0
    assert int(status_field(out, "SigBlk"), 16) == 0


def test_target_dies_of_sigpipe(sandbox: Sandbox) -> None:
    # yes(1) writing into a closed pipe must die of SIGPIPE, as without pyinit,
    # not get EPIPE and complain (what an inherited SIG_IGN would cause).
    proc = subprocess.Popen(
        sandbox.argv([*PYINIT, "--user", "redis", "--", "yes"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_environment(),
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(1) == b"y"
        proc.stdout.close()
        proc.wait(10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == -signal.SIGPIPE
    assert err == b""


@pytest.mark.parametrize("user", ["redis", "root", "alice", "4242"])
def test_root_groups_never_leak(sandbox: Sandbox, user: str) -> None:
    code, out, err = sandbox.run(
        ["setpriv", "--groups", "4,24", *PYINIT, "--user", user, "--", "sh", "-c", STATUS]
    )
    assert code == 0, err
    groups = set(status_field(out, "Groups").split())
    assert not groups & {"4", "24"}
    assert groups == ({"29", "44", "50"} if user == "alice" else set())


def test_step_down_drops_every_capability(sandbox: Sandbox) -> None:
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "sh", "-c", STATUS)
    assert code == 0
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status_field(out, field), 16) == 0, field
    assert status_field(out, "Uid").split() == ["999"] * 4
    assert status_field(out, "Gid").split() == ["999"] * 4


def test_extra_groups(sandbox: Sandbox) -> None:
    code, out, err = sandbox.pyinit(
        "--user", "redis", "--groups", "audio,44", "--groups", "4242", "--", "sh", "-c", STATUS
    )
    assert code == 0, err
    assert sorted(status_field(out, "Groups").split()) == ["29", "4242", "44"]


def test_no_new_privs(sandbox: Sandbox) -> None:
    code, out, _ = sandbox.pyinit("--user", "redis", "--no-new-privs", "--", "sh", "-c", STATUS)
    assert code == 0
    assert status_field(out, "NoNewPrivs") == "1"
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "sh", "-c", STATUS)
    assert status_field(out, "NoNewPrivs") == "0"


BIND_80 = """
import errno, socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 80))
    print("bound")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_keep_cap_net_bind_service(sandbox: Sandbox, python_any_user: str) -> None:
    code, out, err = sandbox.pyinit(
        "--user", "nobody", "--keep-cap", "NET_BIND_SERVICE", "--", "sh", "-c", STATUS
    )
    assert code == 0, err
    bit = 1 << 10
    assert int(status_field(out, "CapAmb"), 16) == bit
    assert int(status_field(out, "CapEff"), 16) == bit
    assert status_field(out, "Uid").split() == ["65534"] * 4
    # The kernel checks the privileged port before the address: EADDRINUSE
    # (something on :80 already) still proves the permission was granted.
    code, out, err = sandbox.pyinit(
        "--user",
        "nobody",
        "--keep-cap",
        "cap_net_bind_service",
        "--",
        python_any_user,
        "-c",
        BIND_80,
    )
    assert code == 0, err
    assert out.strip() in ("bound", "EADDRINUSE")


def test_without_keep_cap_port_80_is_refused(sandbox: Sandbox, python_any_user: str) -> None:
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    if int(start) <= 80:
        pytest.skip("unprivileged ports start at or below 80 here")
    code, out, _ = sandbox.pyinit("--user", "nobody", "--", python_any_user, "-c", BIND_80)
    assert (code, out.strip()) == (0, "EACCES")


def test_workdir_home(sandbox: Sandbox) -> None:
    code, out, err = sandbox.pyinit("--user", "alice", "--workdir", "~", "--", "pwd")
    assert (code, out, err) == (0, "/home/alice\n", "")
    code, out, _ = sandbox.pyinit("--user", "alice", "--workdir", "/tmp", "--", "pwd")
    assert (code, out) == (0, "/tmp\n")


def test_workdir_checked_as_the_target(sandbox: Sandbox) -> None:
    result = sandbox.pyinit("--user", "redis", "--workdir", "/root", "--", "pwd")
    assert result.returncode == 125
    line = one_error_line(result.stderr)
    assert "--workdir '/root'" in line
    assert "uid 999" in line


def test_workdir_tilde_names_the_resolved_path(sandbox: Sandbox) -> None:
    result = sandbox.pyinit("--user", "nobody", "--workdir", "~", "--", "pwd")
    assert result.returncode == 125
    assert "/nonexistent" in one_error_line(result.stderr)


@pytest.mark.parametrize(("mask", "shown"), [("027", "0027"), ("0o77", "0077"), ("0", "0000")])
def test_umask(sandbox: Sandbox, mask: str, shown: str) -> None:
    code, out, _ = sandbox.pyinit("--user", "redis", "--umask", mask, "--", "sh", "-c", "umask")
    assert (code, out) == (0, shown + "\n")


SESSION_PROBE = "echo $$; cut -d')' -f2 /proc/$$/stat | cut -d' ' -f4,5"


def _pid_pgrp_sid(out: str) -> tuple[str, str, str]:
    pid, ids = out.splitlines()
    pgrp, sid = ids.split()
    return pid, pgrp, sid


def _session_probe_as_shell_child(sandbox: Sandbox, *flags: str) -> tuple[int, str, str]:
    """Run pyinit as a plain child of a non-interactive shell (not a group leader)."""
    pyinit = [*PYINIT, "--user", "redis", *flags, "--", "sh", "-c", SESSION_PROBE]
    code, out, err = sandbox.run(["sh", "-c", '"$@"; exit $?', "sh", *pyinit])
    return code, out, err


def test_setsid_when_not_a_group_leader(sandbox: Sandbox) -> None:
    # pyinit as a plain child of a non-interactive shell: setsid() itself works.
    code, out, err = _session_probe_as_shell_child(sandbox, "--setsid")
    assert code == 0, err
    pid, pgrp, sid = _pid_pgrp_sid(out)
    assert pid == pgrp == sid


def test_setsid_when_already_leading_a_session_without_terminal(sandbox: Sandbox) -> None:
    # Sandbox.run starts a new session, so pyinit leads it already: nothing to do.
    code, out, err = sandbox.pyinit("--user", "redis", "--setsid", "--", "sh", "-c", SESSION_PROBE)
    assert (code, err) == (0, "")
    pid, _, sid = _pid_pgrp_sid(out)
    assert pid == sid


def test_without_setsid_the_session_is_inherited(sandbox: Sandbox) -> None:
    code, out, _ = _session_probe_as_shell_child(sandbox)
    assert code == 0
    pid, _, sid = _pid_pgrp_sid(out)
    assert pid != sid


@pytest.mark.skipif(shutil.which("script") is None, reason="script(1) is not installed")
def test_setsid_refuses_to_keep_a_terminal(sandbox: Sandbox) -> None:
    # script(1) makes the command a session leader with a controlling terminal:
    # exec mode cannot shed it, so --setsid must fail rather than pretend.
    command = " ".join([*PYINIT, "--user", "redis", "--setsid", "--", "true"])
    code, out, _ = sandbox.run(["script", "-qec", f"exec {command}", "/dev/null"])
    assert code == 125
    assert "pyinit: --setsid" in out
    assert "--mode supervise" in out


def test_environment_reaches_the_target(sandbox: Sandbox) -> None:
    env = base_environment(KEEP_ME="yes", SSL_CERT_FILE="/etc/ssl/certs/x.pem")
    code, out, _ = sandbox.pyinit("--user", "redis", "--", "env", env=env)
    assert code == 0
    lines = set(out.splitlines())
    assert {"KEEP_ME=yes", "SSL_CERT_FILE=/etc/ssl/certs/x.pem", "HOME=/var/lib/redis"} <= lines
    assert "USER=redis" in lines


# --- starting as non-root --------------------------------------------------------------


def test_non_root_same_user_carries_on(sandbox: Sandbox, pyinit_any_user: tuple[str, ...]) -> None:
    for spec in ("nobody", "65534", "nobody:nogroup", "65534:65534"):
        code, out, err = sandbox.run(
            [*AS_NOBODY, *pyinit_any_user, "--user", spec, "--", "sh", "-c", "id -u; id -g"]
        )
        assert (code, out, err) == (0, "65534\n65534\n", ""), spec


def test_non_root_no_new_privs_still_works(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...]
) -> None:
    code, out, _ = sandbox.run(
        [
            *AS_NOBODY,
            *pyinit_any_user,
            "--user",
            "nobody",
            "--no-new-privs",
            "--",
            "sh",
            "-c",
            STATUS,
        ]
    )
    assert code == 0
    assert status_field(out, "NoNewPrivs") == "1"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("alice", ["--user 'alice'", "uid 1000", "CAP_SETUID", "65534"]),
        ("1000", ["--user '1000'", "uid 1000", "CAP_SETUID"]),
        ("nobody:audio", ["--user 'nobody:audio'", "gid 29", "CAP_SETGID"]),
    ],
)
def test_non_root_other_user_fails_naming_the_capability_with_if_not_root_fail(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...], spec: str, words: list[str]
) -> None:
    result = sandbox.run(
        [*AS_NOBODY, *pyinit_any_user, "--if-not-root", "fail", "--user", spec, "--", "true"]
    )
    assert result.returncode == 125
    line = one_error_line(result.stderr)
    for word in words:
        assert word in line


@pytest.mark.parametrize("spec", ["alice", "1000", "nobody:audio"])
def test_non_root_other_user_skips_the_step_down_with_a_notice_by_default(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...], spec: str
) -> None:
    # Like the official images' entrypoints under `docker run --user`: no
    # setup, no step-down, the command runs as the user the runtime chose.
    result = sandbox.run(
        [*AS_NOBODY, *pyinit_any_user, "--user", spec, "--chown", "/tmp", "--", "id", "-u"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "65534"
    assert result.stderr.count("\n") == 1
    assert "skipping root setup and the step-down" in result.stderr


def test_non_root_extra_groups_need_setgid(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...]
) -> None:
    result = sandbox.run(
        [
            *AS_NOBODY,
            *pyinit_any_user,
            "--if-not-root",
            "fail",
            "--user",
            "nobody",
            "--groups",
            "audio",
            "--",
            "true",
        ]
    )
    assert result.returncode == 125
    assert "CAP_SETGID" in one_error_line(result.stderr)


def test_non_root_keep_cap_names_the_missing_capability(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...]
) -> None:
    result = sandbox.run(
        [
            *AS_NOBODY,
            *pyinit_any_user,
            "--user",
            "nobody",
            "--keep-cap",
            "NET_BIND_SERVICE",
            "--",
            "true",
        ]
    )
    assert result.returncode == 125
    assert "CAP_NET_BIND_SERVICE" in one_error_line(result.stderr)


def test_root_without_setuid_capability_fails_before_anything(sandbox: Sandbox) -> None:
    # securityContext drop [SETUID]: still uid 0, but the switch would fail.
    result = sandbox.run(
        [
            "setpriv",
            "--inh-caps=-setuid",
            "--bounding-set=-setuid",
            "--",
            *PYINIT,
            "--user",
            "redis",
            "--",
            "true",
        ]
    )
    assert result.returncode == 125
    line = one_error_line(result.stderr)
    assert "CAP_SETUID" in line
    assert "drop" in line


# --- refusing a setuid install ---------------------------------------------------------


#: A real setuid/setgid start: setpriv leaves differing real and effective ids, as
#: exec of a setuid-root (or setgid-root) copy would.
SETUID_START = ("setpriv", "--ruid", "1000", "--euid", "0", "--keep-groups")
SETGID_START = ("setpriv", "--rgid", "1000", "--egid", "0", "--keep-groups")


def test_refuses_to_run_setuid(sandbox: Sandbox) -> None:
    result = run_pyinit("--", "true", sandbox=sandbox, prefix=SETUID_START)
    assert result.returncode == 125
    line = one_error_line(result.stderr)
    assert "setuid" in line
    assert "real uid 1000, effective uid 0" in line


def test_refuses_to_run_setgid(sandbox: Sandbox) -> None:
    result = run_pyinit("--", "true", sandbox=sandbox, prefix=SETGID_START)
    assert result.returncode == 125
    assert "setgid" in one_error_line(result.stderr)


def test_same_real_and_effective_ids_are_fine(sandbox: Sandbox) -> None:
    as_alice = ("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups")
    result = run_pyinit("--", "id", sandbox=sandbox, prefix=as_alice)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("uid=1000(alice) gid=1000(alice)"), result.stdout


# --- dry run ---------------------------------------------------------------------------


def test_dry_run_text(sandbox: Sandbox) -> None:
    code, out, err = sandbox.pyinit(
        "--dry-run", "--user", "alice", "--umask", "027", "--", "redis-server", "--port", "1"
    )
    assert (code, err) == (0, "")
    assert "alice (uid 1000, gid 1000, groups [29,44,50], home /home/alice)" in out
    assert "umask 027" in out
    assert "command: redis-server --port 1" in out
    assert "mode: exec" in out


def test_dry_run_changes_nothing_and_runs_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code, _, _ = sandbox.pyinit("--dry-run", "--", "touch", str(marker))
    assert code == 0
    assert not marker.exists()


def test_dry_run_json(sandbox: Sandbox) -> None:
    code, out, _ = sandbox.pyinit("--dry-run", "--json", "--user", "redis", "--", "true")
    assert code == 0
    data = json.loads(out)
    assert data["identity"]["uid"] == 999
    assert data["identity"]["groups"] == []
    assert data["command"] == ["true"]
    assert data["mode"] == "exec"
    assert data["env_changes"]["set"]["HOME"] == "/var/lib/redis"


def test_dry_run_never_prints_secrets(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2-very-secret\n")
    env = base_environment(DB_PASSWORD_FILE=str(secret))
    for extra in ([], ["--json"], ["--verbose"]):
        code, out, err = sandbox.pyinit(
            "--dry-run", *extra, "--file-env", "DB_PASSWORD", "--", "true", env=env
        )
        assert code == 0, err
        assert "hunter2" not in out + err
        assert "DB_PASSWORD" in out


def test_file_env_reaches_the_target(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("hunter2\n")
    env = base_environment(DB_PASSWORD_FILE=str(secret), OTHER_FILE="/etc/hostname")
    code, out, _ = sandbox.pyinit("--file-env", "DB_PASSWORD", "--", "env", env=env)
    assert code == 0
    lines = set(out.splitlines())
    assert "DB_PASSWORD=hunter2" in lines
    assert not any(line.startswith("DB_PASSWORD_FILE=") for line in lines)
    assert "OTHER_FILE=/etc/hostname" in lines


# --- start-up cost: the exec path imports nothing heavy --------------------------------

HEAVY = ("trio", "psutil", "dataclasses", "typing", "inspect", "asyncio", "logging", "locale")
#: pyinit's own modules for what this command does not use (secrets, items, --mkdir, a stop).
UNUSED = (
    "pyinit.plan.secrets",
    "pyinit.plan.services",
    "pyinit.plan.items",
    "pyinit.root.mkdir",
    "pyinit.plan.stop",
)
#: What only a user, group or owner to resolve needs: the user database's reader.
USER_DATABASE = ("pyinit.plan.userspec", "pyinit.plan.files")


def test_exec_path_imports_nothing_heavy(sandbox: Sandbox) -> None:
    # -S: without site, so only the interpreter's own start-up and pyinit's
    # imports show up (site-packages .pth hooks may pull in typing themselves).
    env = base_environment(PYTHONPATH=str(PROJECT_ROOT))
    code, _, err = sandbox.run(
        [
            *PYINIT_IMPORTTIME,
            "--mode",
            "exec",
            "--user",
            "nobody",
            "--no-new-privs",
            "--keep-cap",
            "NET_BIND_SERVICE",
            "--umask",
            "022",
            "--workdir",
            "/",
            "--",
            "true",
        ],
        env=env,
    )
    assert code == 0, err
    modules = imported_modules(err)
    assert "pyinit.run.execmode" in modules
    for name in HEAVY:
        assert not any(m == name or m.startswith(name + ".") for m in modules), name
    for name in UNUSED:
        assert name not in modules, name


def test_exec_path_without_a_user_reads_no_user_database(sandbox: Sandbox) -> None:
    env = base_environment(PYTHONPATH=str(PROJECT_ROOT))
    code, _, err = sandbox.run([*PYINIT_IMPORTTIME, "--mode", "exec", "--", "true"], env=env)
    assert code == 0, err
    modules = imported_modules(err)
    assert "pyinit.run.execmode" in modules
    for name in (*UNUSED, *USER_DATABASE):
        assert name not in modules, name


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ["65534"]),
        (["--keep-groups"], ["65534", "2000", "2001"]),
        (["--keep-groups", "--groups", "audio"], ["65534", "29", "2000", "2001"]),
    ],
)
def test_keep_groups_keeps_runtime_groups_but_never_roots(
    sandbox: Sandbox, flags: list[str], expected: list[str]
) -> None:
    # Like docker --group-add 2000 / Kubernetes fsGroup: root starts with extra
    # groups next to its own gid 0; --keep-groups passes on those, never gid 0.
    runtime = ("setpriv", "--groups", "0,2000,2001")
    result = run_pyinit(
        "--user", "nobody", *flags, "--", "id", "-G", sandbox=sandbox, prefix=runtime
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split(), key=int) == sorted(expected, key=int)


def test_keep_groups_needs_user(sandbox: Sandbox) -> None:
    result = run_pyinit("--keep-groups", "--", "true", sandbox=sandbox)
    assert result.returncode == 125
    assert "--keep-groups needs --user" in one_error_line(result.stderr)
