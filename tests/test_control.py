"""The control socket, its server and pyinitctl, as a user sees them (docs/operate.md).

pyinit runs as PID 1 of a PID namespace with the fixture users
(:mod:`sandbox`) and a private tmpfs on /run; ``pyinitctl`` runs inside
it through ``nsenter``, as root and as a service user; raw clients reach
the socket through ``/proc/PID/root``.  What is checked is what a user
sees: exit codes, the one line, the JSON against /proc, signals a target
traps, files on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pidns import wait_for
from plan_helpers import plan_for
from sandbox import (
    PROJECT_ROOT,
    PYINIT,
    Result,
    Sandbox,
    base_environment,
    children,
    imported_modules,
    require_pid_namespace,
    run,
    scratch_dir,
)

from pyinit.errors import UsageError

SOCKET = "/run/pyinit/control.sock"
#: pyinitctl as the tests run it: the interpreter running pytest, this checkout.
CTL = (sys.executable, "-m", "pyinit.ctl")
#: setpriv to the fixture's redis (999:999).
AS_REDIS = ("setpriv", "--reuid=999", "--regid=999", "--clear-groups")
#: Every wait is bounded.
WAIT = 15.0


def socket_env(**extra: str) -> dict[str, str]:
    """:func:`sandbox.base_environment` with the control socket's default (its own /run)."""
    env = base_environment(**extra)
    if "PYINIT_CONTROL" not in extra:
        del env["PYINIT_CONTROL"]
    return env


class Container:
    """pyinit ARGS as PID 1 of a namespace with fixture users and its own /run."""

    def __init__(self, box: Sandbox, args: list[str], **env: str) -> None:
        require_pid_namespace()
        environ = socket_env(**env)
        self.proc = subprocess.Popen(
            box.argv([*PYINIT, *args], pid_namespace=True),
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """pyinit's host pid (the namespace's PID 1)."""
        if self._pid is None:
            wait_for(lambda: children(self.proc.pid), WAIT, "the namespace's PID 1")
            self._pid = children(self.proc.pid)[0]
        return self._pid

    def path(self, inside: str) -> str:
        """A path of the namespace's mount namespace, reached from the host."""
        return f"/proc/{self.pid}/root{inside}"

    def ctl(self, *args: str, uid: int | None = None, timeout: float = WAIT) -> Result:
        """Run pyinitctl ARGS inside the namespace, as root or as ``uid``."""
        command = ["nsenter", "-t", str(self.pid), "-p", "-m", "--"]
        if uid is not None:
            command += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return run([*command, *CTL, *args], env=socket_env(), timeout=timeout)

    def wait_listening(self, socket_path: str = SOCKET) -> None:
        """Until the control socket answers."""
        wait_for(lambda: os.path.exists(self.path(socket_path)), WAIT, "the control socket")

    def main_host_pid(self) -> int:
        """The host pid of the main (pyinit's child that runs the command)."""
        wait_for(lambda: children(self.pid), WAIT, "the main")
        return children(self.pid)[-1]

    def stop(self, timeout: float = WAIT) -> tuple[int, str, str]:
        """SIGTERM to PID 1, as docker stop; (exit code, stdout, stderr)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = WAIT) -> tuple[int, str, str]:
        """Wait for pyinit's end; (exit code, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=5)
            raise AssertionError(f"pyinit did not exit within {timeout}s:\n{err}") from None
        return self.proc.returncode, out, err

    def kill(self) -> None:
        """Take the namespace down."""
        for pid in (self._pid, self.proc.pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def container(box: Sandbox, *args: str, **env: str) -> Iterator[Container]:
    """A :class:`Container`, torn down on leaving whatever happened."""
    c = Container(box, list(args), **env)
    try:
        yield c
    finally:
        if c.proc.poll() is None:
            c.kill()
            c.proc.communicate(timeout=5)


def ns_pid(host_pid: int) -> int:
    """The pid a process has in its own (innermost) PID namespace."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


def all_children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (the loop thread forks items too)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def proc_uid(host_pid: int) -> int:
    """The real uid of a process, from /proc."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def status_json(c: Container) -> list[dict[str, object]]:
    """``pyinitctl status --json``, parsed (it must succeed)."""
    result = c.ctl("status", "--json")
    assert result.returncode == 0, result
    processes: list[dict[str, object]] = json.loads(result.stdout)
    return processes


def raw_client(c: Container, socket_path: str = SOCKET) -> socket.socket:
    """A raw connection to the control socket, from the host."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(c.path(socket_path))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


TRAP_USR1 = "trap 'echo usr1 >> {out}' USR1; echo up > {ready}; while :; do sleep 0.05; done"


# --- planning ------------------------------------------------------------------------


def test_control_is_decided_in_the_plan() -> None:
    default = socket_env()
    assert plan_for(["--mode", "supervise", "--", "true"], default).control == SOCKET
    assert plan_for(["--mode", "exec", "--", "true"], default).control is None
    assert (
        plan_for(["--mode", "supervise", "--control", "none", "--", "t"], default).control is None
    )
    env = base_environment(PYINIT_CONTROL="/run/app/ctl.sock")
    assert plan_for(["--mode", "supervise", "--", "true"], env).control == "/run/app/ctl.sock"
    flag_wins = plan_for(["--mode", "supervise", "--control", "/x/y.sock", "--", "true"], env)
    assert flag_wins.control == "/x/y.sock"
    assert (
        plan_for(["--mode", "supervise", "--control", "/a//b/./c", "--", "t"]).control == "/a/b/c"
    )


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (["--control", "run/x.sock"], {}, "pyinit: --control 'run/x.sock': expected an absolute"),
        (["--control", "/run/" + "a" * 103], {}, "too long for a unix socket (at most 107 bytes)"),
        (["--control", "/x.sock/"], {}, "expected a socket path in a directory"),
        ([], {"PYINIT_CONTROL": "rel"}, "pyinit: PYINIT_CONTROL='rel': expected an absolute"),
    ],
)
def test_a_bad_control_path_is_one_line_and_125(
    argv: list[str], env: dict[str, str], line: str
) -> None:
    with pytest.raises(UsageError) as refused:
        plan_for(["--mode", "supervise", *argv, "--", "true"], base_environment(**env))
    assert line.removeprefix("pyinit: ") in refused.value.message
    result = run([*PYINIT, "--mode", "supervise", *argv, "--", "true"], env=base_environment(**env))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pyinit: ")
    assert line in result.stderr


def test_dry_run_shows_the_socket() -> None:
    env = base_environment(PYINIT_CONTROL="/run/app/ctl.sock")
    text = run([*PYINIT, "--dry-run", "--mode", "supervise", "--", "true"], env=env)
    assert "  control socket: /run/app/ctl.sock" in text.stdout
    data = run([*PYINIT, "--dry-run", "--json", "--mode", "supervise", "--", "t"], env=env)
    assert json.loads(data.stdout)["control"] == "/run/app/ctl.sock"
    exec_mode = run([*PYINIT, "--dry-run", "--json", "--mode", "exec", "--", "t"], env=env)
    assert json.loads(exec_mode.stdout)["control"] is None


# --- pyinitctl alone -------------------------------------------------------------------


def test_pyinitctl_usage_help_and_unreachable_socket(tmp_path: Path) -> None:
    env = base_environment()
    helped = run([*CTL, "--help"], env=env)
    assert helped.returncode == 0 and "status [--json]" in helped.stdout
    for argv in (["bogus"], ["restart"], ["signal", "main"], ["status", "--xml"], []):
        usage = run([*CTL, *argv], env=env)
        assert usage.returncode == 2, argv
        assert usage.stderr.count("\n") == 1 and usage.stderr.startswith("pyinitctl: ")
    missing = str(tmp_path / "nothing.sock")
    for argv, environ in (
        (["--control", missing, "health"], env),
        (["health"], base_environment(PYINIT_CONTROL=missing)),
    ):
        gone = run([*CTL, *argv], env=environ)
        assert gone.returncode == 3
        assert gone.stderr.startswith(f"pyinitctl: cannot reach pyinit at {missing}: no such file")
        assert gone.stderr.count("\n") == 1


def test_pyinitctl_health_imports_no_trio_psutil_json_or_argparse(tmp_path: Path) -> None:
    env = base_environment(PYINIT_CONTROL=str(tmp_path / "x.sock"))
    result = run([sys.executable, "-S", "-X", "importtime", "-m", "pyinit.ctl", "health"], env=env)
    assert result.returncode == 3
    modules = imported_modules(result.stderr)
    assert "pyinit" in modules  # pyinit.ctl itself runs as __main__
    for name in ("trio", "psutil", "json", "argparse", "socket", "pyinit.cli"):
        assert not any(m == name or m.startswith(name + ".") for m in modules), name


# --- a plain target ----------------------------------------------------------------------


def test_status_of_a_plain_target_matches_proc(sandbox: Sandbox) -> None:
    with container(sandbox, "--user", "redis", "--", "sleep", "30") as c:
        c.wait_listening()
        main = c.main_host_pid()
        (entry,) = status_json(c)
        assert entry["name"] == "main" and entry["kind"] == "main"
        assert entry["state"] == "running" and entry["ready"] is True
        assert entry["pid"] == ns_pid(main)
        assert entry["user"] == "redis" and proc_uid(main) == 999
        assert entry["command"] == ["sleep", "30"]
        assert Path(f"/proc/{main}/cmdline").read_bytes() == b"sleep\x0030\x00"
        assert entry["restarts"] == 0 and entry["restarts_total"] == 0
        assert entry["last_exit"] is None and entry["alive"] is None
        assert isinstance(entry["rss_bytes"], int) and entry["rss_bytes"] > 0
        assert isinstance(entry["cpu_seconds"], float)
        assert isinstance(entry["uptime"], float) and entry["uptime"] >= 0
        assert list(entry) == [
            "name",
            "kind",
            "state",
            "pid",
            "user",
            "uptime",
            "restarts",
            "restarts_total",
            "last_exit",
            "ready",
            "alive",
            "cpu_seconds",
            "rss_bytes",
            "command",
        ]
        table = c.ctl("status")
        assert table.returncode == 0
        header, row = table.stdout.splitlines()
        assert header.split() == [
            "NAME",
            "KIND",
            "STATE",
            "PID",
            "USER",
            "UPTIME",
            "RESTARTS",
            "LAST-EXIT",
            "READY",
            "ALIVE",
            "CPU",
            "RSS",
            "COMMAND",
        ]
        assert row.split()[:5] == ["main", "main", "running", str(ns_pid(main)), "redis"]
        health = c.ctl("health")
        assert (health.returncode, health.stdout) == (0, "healthy\n")
        code, _, err = c.stop()
    assert code == 143
    assert "control socket" not in err


def test_signal_main_reaches_a_target_that_traps_it(sandbox: Sandbox) -> None:
    with (
        scratch_dir("pyinit-ctl-", 0o777) as tmp,
        container(
            sandbox,
            "--user",
            "redis",
            "--",
            "sh",
            "-c",
            TRAP_USR1.format(out=tmp / "got", ready=tmp / "up"),
        ) as c,
    ):
        c.wait_listening()
        wait_for((tmp / "up").exists, WAIT, "the target's trap")
        sent = c.ctl("signal", "main", "USR1")
        assert sent.returncode == 0, sent
        assert sent.stdout.startswith("sent SIGUSR1 to main (process group ")
        wait_for(lambda: (tmp / "got").exists(), WAIT, "the target's USR1")
        assert c.ctl("signal", "main", "SIGUSR1").returncode == 0
        wait_for(lambda: (tmp / "got").read_text() == "usr1\nusr1\n", WAIT, "a second USR1")
        for argv, line in (
            (["stop", "main"], MAIN_BY_HAND),
            (["restart", "main"], MAIN_BY_HAND),
            (["restart", "db"], "pyinitctl: no process named 'db' (known: main)\n"),
            (["signal", "main", "NOPE"], "pyinitctl: signal 'NOPE': unknown signal"),
        ):
            refused = c.ctl(*argv)
            assert refused.returncode == 1, argv
            assert refused.stderr.startswith(line), refused.stderr
        assert c.main_host_pid() in children(c.pid)  # still there
        code, _, _ = c.stop()
    assert code == 143


MAIN_BY_HAND = "pyinitctl: the main cannot be stopped or restarted by hand: stop the container\n"


def test_a_non_root_user_is_refused_and_nothing_happens(sandbox: Sandbox) -> None:
    # A directory the service user may enter: the server's SO_PEERCRED check
    # is what refuses it (with the default 0700 directory it cannot even connect).
    with container(
        sandbox,
        "--pre",
        "mkdir -m 755 /run/ctl",
        "--control",
        "/run/ctl/control.sock",
        "--user",
        "redis",
        "--",
        "sleep",
        "30",
    ) as c:
        c.wait_listening("/run/ctl/control.sock")
        main = c.main_host_pid()
        for argv in (["signal", "main", "KILL"], ["status"], ["health"], ["stop", "main"]):
            denied = c.ctl("--control", "/run/ctl/control.sock", *argv, uid=999)
            assert (denied.returncode, denied.stderr) == (1, "pyinitctl: permission denied\n")
        # Garbage from a refused peer is refused the same way, not parsed.
        as_redis = ["nsenter", "-t", str(c.pid), "-p", "-m", "--", *AS_REDIS]
        probe = (
            "import socket; s = socket.socket(socket.AF_UNIX);"
            " s.connect('/run/ctl/control.sock'); s.sendall(bytes([255]) + b' x\\n');"
            " print(s.recv(99).decode(), end='')"
        )
        garbage = run([*as_redis, sys.executable, "-c", probe], env=base_environment())
        assert garbage.stdout == "1 permission denied\n", garbage
        time.sleep(0.2)
        assert main in children(c.pid), "the main was signalled"
        assert Path(f"/proc/{main}/stat").read_text().split()[2] != "Z"
        ok = c.ctl("--control", "/run/ctl/control.sock", "health")
        assert ok.returncode == 0
        c.stop()


def test_default_socket_directory_is_roots_0700(sandbox: Sandbox) -> None:
    with container(sandbox, "--user", "redis", "--", "sleep", "30") as c:
        c.wait_listening()
        st = os.stat(c.path("/run/pyinit"))
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o700)
        assert (
            os.stat(c.path(SOCKET)).st_mode & 0o170000 == 0o140000
        )  # a socket in the file system, not abstract
        denied = c.ctl("health", uid=999)
        assert denied.returncode == 3
        assert denied.stderr.startswith(f"pyinitctl: cannot reach pyinit at {SOCKET}: permission")
        code, _, _ = c.stop()
    assert code == 143


def test_a_symlink_where_the_directory_goes_is_never_followed(sandbox: Sandbox) -> None:
    with (
        scratch_dir("pyinit-ctl-elsewhere-") as elsewhere,
        container(
            sandbox,
            "--pre",
            f"ln -s {elsewhere} /run/pyinit",
            "--",
            "sh",
            "-c",
            "echo target ran",
        ) as c,
    ):
        code, out, err = c.wait()
        assert list(elsewhere.iterdir()) == []
    assert (code, out) == (0, "target ran\n")
    notices = [line for line in err.splitlines() if "control socket" in line]
    assert notices == [
        f"pyinit: control socket {SOCKET}: /run/pyinit is a symbolic link (never followed);"
        " running without it (pyinitctl cannot reach pyinit)"
    ]


def test_read_only_run_is_one_notice_and_the_target_runs(sandbox: Sandbox) -> None:
    with container(
        sandbox, "--pre", "mount -o remount,ro /run", "--", "sh", "-c", "echo target ran"
    ) as c:
        code, out, err = c.wait()
    assert (code, out) == (0, "target ran\n")
    notices = [line for line in err.splitlines() if "control socket" in line]
    assert notices == [
        f"pyinit: control socket {SOCKET}: cannot create /run/pyinit: read-only file system;"
        " running without it (pyinitctl cannot reach pyinit)"
    ]


def test_control_none_makes_no_socket(sandbox: Sandbox) -> None:
    look = "sleep 0.3; test -e /run/pyinit && echo there || echo absent"
    with container(sandbox, "--control", "none", "--", "sh", "-c", look) as c:
        code, out, err = c.wait()
    assert (code, out, err) == (0, "absent\n", "")


def test_a_stale_socket_is_replaced_and_a_live_one_left_alone(sandbox: Sandbox) -> None:
    make_stale = (
        "mkdir -m 700 /run/pyinit && "
        f"{sys.executable} -c \"import socket; socket.socket(socket.AF_UNIX).bind('{SOCKET}')\""
    )
    # The target is a second pyinit in the same /run: the first one's socket is live.
    second = f"{' '.join(PYINIT)} --mode supervise -- true"
    with container(
        sandbox, "--pre", make_stale, "--", "sh", "-c", f"sleep 0.5; {second}; sleep 30"
    ) as c:
        c.wait_listening()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "the server over the stale socket")
        time.sleep(1.5)  # the second pyinit has come and gone
        assert c.ctl("health").returncode == 0, "the second pyinit took the socket"
        code, _, err = c.stop()
    assert code == 143
    assert (
        f"pyinit: control socket {SOCKET}: another pyinit listens there; running without it" in err
    )
    assert err.count("control socket") == 1


def test_hostile_clients_never_block_another_client(sandbox: Sandbox) -> None:
    with container(sandbox, "--", "sleep", "30") as c:
        c.wait_listening()
        silent = [raw_client(c) for _ in range(3)]
        oversized = raw_client(c)
        oversized.sendall(b"x" * 5000)
        garbage = raw_client(c)
        garbage.sendall(b"\xff\xfe hello\n")
        words = raw_client(c)
        words.sendall(b"restart  db\n")
        # Another client still gets its answer at once.
        assert c.ctl("health").returncode == 0
        assert read_all(garbage) == b"1 bad request: not UTF-8\n"
        assert read_all(words).startswith(b"1 bad request: 'restart  db': expected status, ")
        assert read_all(oversized) == b"1 bad request: longer than 1024 bytes\n"
        began = time.monotonic()
        for sock in silent:
            assert read_all(sock) == b""  # dropped after the request timeout
        assert time.monotonic() - began < WAIT
        # More clients at once than the server serves: the extra ones hear "busy".
        crowd = [raw_client(c) for _ in range(12)]
        time.sleep(0.3)
        busy = 0
        for sock in crowd:
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                busy += read_all(sock).startswith(b"1 busy")
        assert busy >= 4
        for sock in [*silent, *crowd, oversized, garbage, words]:
            sock.close()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "the server after the crowd")
        code, _, _ = c.stop()
    assert code == 143


def test_a_plain_target_imports_no_json_or_psutil_until_asked(sandbox: Sandbox) -> None:
    # Started as the console script starts it, without site: what site and runpy
    # (-m) import, contextlib among them, is not pyinit's.
    entry = "from pyinit.__main__ import main; main()"
    argv = sandbox.argv(
        [sys.executable, "-S", "-X", "importtime", "-c", entry, "--", "sleep", "0.5"],
        pid_namespace=True,
    )
    result = run(argv, env=socket_env())
    assert result.returncode == 0, result.stderr
    modules = imported_modules(result.stderr)
    assert "pyinit.run.control" in modules and "pyinit.root.control" in modules
    # Nor the loop's backend, nor contextlib (the root layer's socket code uses none).
    idle = ("pyinit.run.loopcontrol", "contextlib")
    for name in ("trio", "psutil", "json", "socket", "threading", "pyinit.run.loop", *idle):
        assert not any(m == name or m.startswith(name + ".") for m in modules), name


def test_during_the_stop_only_status_is_answered(sandbox: Sandbox) -> None:
    slow = "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.05; done"
    with container(sandbox, "--stop-timeout", "8", "--", "sh", "-c", slow) as c:
        c.wait_listening()
        os.kill(c.pid, signal.SIGTERM)
        wait_for(lambda: c.ctl("health").returncode == 1, WAIT, "the stop to begin")
        health = c.ctl("health")
        assert health.stderr == "pyinitctl: unhealthy: the container is stopping\n"
        refused = c.ctl("signal", "main", "USR1")
        assert refused.returncode == 1
        assert refused.stderr == ("pyinitctl: the container is stopping: only status is answered\n")
        assert c.ctl("status").returncode == 0
        code, _, _ = c.wait()
    assert code == 0


# --- sidecars (the event loop) -----------------------------------------------------------


def test_status_and_health_with_sidecars(sandbox: Sandbox) -> None:
    with (
        scratch_dir("pyinit-ctl-", 0o777) as tmp,
        container(
            sandbox,
            "--user",
            "redis",
            "--sidecar",
            f"db user=nobody ready=file:{tmp}/db-ready -- sleep 60",
            "--sidecar",
            "extra on-giveup=ignore restart=never -- sh -c 'exit 3'",
            "--",
            "sleep",
            "60",
        ) as c,
    ):
        c.wait_listening()
        # The main waits for db's readiness: not healthy yet.
        wait_for(lambda: "main is starting" in c.ctl("health").stderr, WAIT, "start-up health")
        starting = c.ctl("health")
        assert starting.returncode == 1
        assert starting.stderr.startswith("pyinitctl: unhealthy: main is starting (not ready)")
        (tmp / "db-ready").touch()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "healthy")
        main, db, extra = status_json(c)
        assert [p["name"] for p in (main, db, extra)] == ["main", "db", "extra"]
        assert (main["kind"], main["state"], main["user"]) == ("main", "running", "redis")
        assert (db["kind"], db["state"], db["user"], db["ready"]) == (
            "sidecar",
            "running",
            "nobody",
            True,
        )
        assert isinstance(db["pid"], int)
        db_host = [p for p in all_children(c.pid) if ns_pid(p) == db["pid"]]
        assert len(db_host) == 1 and proc_uid(db_host[0]) == 65534
        assert (extra["state"], extra["pid"], extra["last_exit"]) == (
            "gave-up",
            None,
            {"code": 3, "signal": None},
        )
        # A crash of db: its first backoff is still healthy.
        killed = c.ctl("signal", "db", "KILL")
        assert killed.returncode == 0, killed
        wait_for(lambda: status_json(c)[1]["last_exit"] is not None, WAIT, "db's exit")
        assert status_json(c)[1]["last_exit"] == {"code": None, "signal": "SIGKILL"}
        wait_for(lambda: status_json(c)[1]["state"] == "running", WAIT, "db back")
        assert status_json(c)[1]["restarts"] == 1
        assert c.ctl("health").returncode == 0
        unknown = c.ctl("signal", "nope", "TERM")
        assert unknown.stderr == "pyinitctl: no process named 'nope' (known: main, db, extra)\n"
        assert c.ctl("restart", "nope").stderr == unknown.stderr
        assert c.ctl("stop", "main").stderr == MAIN_BY_HAND
        gone = c.ctl("signal", "extra", "TERM")  # gave up: nothing runs
        assert (gone.returncode, gone.stderr) == (1, "pyinitctl: sidecar extra is not running\n")
        code, _, _ = c.stop()
    assert code == 143


def test_stop_start_restart_a_sidecar_by_hand(sandbox: Sandbox) -> None:
    with container(
        sandbox, "--sidecar", "db max-restarts=1/60 -- sleep 60", "--", "sleep", "60"
    ) as c:
        c.wait_listening()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "healthy")
        first = status_json(c)[1]["pid"]
        for _ in range(3):  # more restarts than max-restarts allows: by hand spends none
            restarted = c.ctl("restart", "db", timeout=60)
            assert restarted.returncode == 0, restarted
        db = status_json(c)[1]
        assert db["state"] == "running" and db["pid"] != first
        assert db["restarts_total"] == 0
        stopped = c.ctl("stop", "db", timeout=60)
        assert stopped.returncode == 0, stopped
        db = status_json(c)[1]
        assert (db["state"], db["pid"]) == ("stopped", None)
        assert not [
            p
            for p in children(c.pid)
            if Path(f"/proc/{p}/cmdline").read_bytes() == b"sleep\x0060\x00" and ns_pid(p) == first
        ]
        assert c.ctl("health").returncode == 0  # stopped by hand: left out
        started = c.ctl("start", "db", timeout=60)
        assert started.returncode == 0, started
        assert status_json(c)[1]["state"] == "running"
        code, _, _ = c.stop()
    assert code == 143


def test_python_m_pyinit_ctl_and_the_console_script_entry() -> None:
    text = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert 'pyinitctl = "pyinit.ctl:main"' in text
    result = run([*CTL, "--help"], env=base_environment())
    assert result.returncode == 0 and result.stdout.startswith("usage: pyinitctl")


def test_the_socket_and_a_directory_pyinit_made_are_removed_at_exit() -> None:
    with scratch_dir("pyinit-ctl-", 0o700) as tmp:
        made = tmp / "made" / "control.sock"
        # The socket is made just after the main is forked: wait for it (bounded).
        look = f"for i in $(seq 100); do test -S {made} && echo listening && exit; sleep 0.05; done"
        env = base_environment(PYINIT_CONTROL=str(made))
        result = run([*PYINIT, "--mode", "supervise", "--", "sh", "-c", look], env=env)
        assert (result.returncode, result.stdout) == (0, "listening\n"), result.stderr
        assert not (tmp / "made").exists()
        kept = tmp / "control.sock"
        env = base_environment(PYINIT_CONTROL=str(kept))
        look = f"for i in $(seq 100); do test -S {kept} && exit; sleep 0.05; done; exit 1"
        result = run([*PYINIT, "--mode", "supervise", "--", "sh", "-c", look], env=env)
        assert result.returncode == 0, result.stderr
        assert list(tmp.iterdir()) == []


def test_a_refused_thread_turns_one_client_away_never_pid1(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    from test_fork_refused import _start, _wait

    group = pids_cgroup
    errors = tmp_path / "stderr"
    with scratch_dir("pyinit-ctl-", 0o700) as tmp:
        path = str(tmp / "control.sock")
        done = tmp / "done"
        wait = f"while [ ! -e {done} ]; do sleep 0.05; done; exit 3"
        proc = _start(group, errors, "--control", path, "--", "sh", "-c", wait)
        try:
            wait_for(lambda: os.path.exists(path), WAIT, "the control socket")
            ctl = [*CTL, "--control", path, "health"]
            assert run(ctl, env=base_environment()).returncode == 0
            # Every pid the cgroup allows is taken: no thread for the next client.
            (group / "pids.max").write_text((group / "pids.current").read_text())
            busy = run(ctl, env=base_environment())
            assert busy.returncode == 1
            assert busy.stderr == "pyinitctl: busy: pyinit cannot start a thread now, try again\n"
            (group / "pids.max").write_text("max")
            assert run(ctl, env=base_environment()).returncode == 0
            done.touch()
            code = _wait(proc, errors)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    err = errors.read_text()
    assert code == 3, err
    assert "Traceback" not in err and "internal error" not in err, err


def test_a_non_root_pyinit_answers_its_own_uid(
    sandbox: Sandbox, pyinit_any_user: tuple[str, ...], python_any_user: str
) -> None:
    # runAsUser: 1000 -- pyinit cannot make /run/pyinit; a directory of its own serves.
    with scratch_dir("pyinit-ctl-", 0o755) as tmp:
        os.chown(tmp, 1000, 1000)
        path = tmp / "ctl" / "control.sock"
        wait = f"for i in $(seq 100); do test -S {path} && break; sleep 0.05; done"
        ask = f"{python_any_user} -m pyinit.ctl --control {path} health"
        as_alice = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
        argv = [*as_alice, *pyinit_any_user, "--mode", "supervise", "--control", str(path)]
        result = sandbox.run([*argv, "--", "sh", "-c", f"{wait}; {ask}"], env=base_environment())
        assert (result.returncode, result.stdout) == (0, "healthy\n"), result.stderr
        assert "control socket" not in result.stderr
        assert not (tmp / "ctl").exists()  # made by pyinit, removed at its exit


def test_a_non_root_pyinit_has_no_default_socket() -> None:
    argv = ["--mode", "supervise", "--", "true"]
    assert plan_for(argv, socket_env(), euid=0).control == "/run/pyinit/control.sock"
    assert plan_for(argv, socket_env(), euid=1000).control is None
    asked = socket_env(PYINIT_CONTROL="/tmp/pyinit/control.sock")
    assert plan_for(argv, asked, euid=1000).control == "/tmp/pyinit/control.sock"


def test_the_config_file_names_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "pyinit.toml"
    config.write_text('control = "/run/app/control.sock"\n')
    argv = ["--config", str(config), "--mode", "supervise", "--", "true"]
    assert plan_for(argv, socket_env()).control == "/run/app/control.sock"
    assert plan_for(argv, base_environment()).control is None  # PYINIT_CONTROL=none wins
    config.write_text('control = "relative.sock"\n')
    with pytest.raises(UsageError) as refused:
        plan_for(argv, socket_env())
    assert "key 'control'" in refused.value.message
    assert "expected an absolute path or none" in refused.value.message


def test_a_dead_sidecar_shows_stopping_then_is_restarted_by_its_policy(sandbox: Sandbox) -> None:
    # The sidecar takes its time on TERM (a second), so its stop for failed
    # liveness checks is seen in status: the supervisor's own state, not "running".
    with scratch_dir("pyinit-dead-") as tmp:
        alive = tmp / "alive"
        alive.write_text("")
        slow = "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.05; done"
        sidecar = f'w alive=file:{alive} alive-every=0.1 alive-failures=2 -- sh -c "{slow}"'
        with container(sandbox, "--sidecar", sidecar, "--", "sleep", "60") as c:
            c.wait_listening()
            wait_for(lambda: status_json(c)[1]["alive"] == "ok", WAIT, "alive ok")
            first = status_json(c)[1]["pid"]
            alive.unlink()
            wait_for(lambda: status_json(c)[1]["state"] == "stopping", WAIT, "stopping")
            assert status_json(c)[1]["alive"] == "dead"
            alive.write_text("")
            wait_for(lambda: status_json(c)[1]["alive"] == "ok", WAIT, "restarted and alive")
            w = status_json(c)[1]
            assert w["pid"] != first and w["state"] == "running"
            assert (w["restarts"], w["restarts_total"]) == (1, 1)  # a liveness kill spends one
            code, _, err = c.stop()
        assert code == 143
        assert "sidecar w failed its liveness check 2 times in a row" in err
        assert f"stopping sidecar w (pid {first}) with SIGTERM (dead)" in err


# --- post hooks: shown during the stop --------------------------------------------------


@pytest.mark.parametrize("sidecar", [False, True], ids=["plain", "loop"])
def test_status_shows_a_running_post_hook_and_its_cut_off(sandbox: Sandbox, sidecar: bool) -> None:
    # The main exits at once; the hook ignores SIGTERM and is cut off at the end of its turn.
    items = ["--sidecar", "db -- sleep 60"] if sidecar else []
    with scratch_dir("pyinit-ctl-", 0o777) as tmp:
        hook = f"trap '' TERM; touch {tmp}/hook-started; sleep 60"
        args = ["--stop-timeout", "4", *items, "--post", hook]
        with container(
            sandbox, *args, "--", "sh", "-c", f"until [ -e {tmp}/go ]; do sleep 0.02; done"
        ) as c:
            wait_for(lambda: c.ctl("status").returncode == 0, WAIT, "the control socket")
            (tmp / "go").touch()
            wait_for(lambda: (tmp / "hook-started").exists(), WAIT, "the post hook")
            entry = status_json(c)[-1]
            assert entry["name"] == "post-1" and entry["kind"] == "hook"
            assert entry["state"] == "running" and entry["user"] == "root"
            assert entry["ready"] is None and entry["last_exit"] is None
            assert entry["command"] == ["/bin/sh", "-c", hook]
            assert isinstance(entry["pid"], int)
            # SIGTERM at the end of its turn (it ignores it): stopping until its SIGKILL.
            wait_for(lambda: status_json(c)[-1]["state"] == "stopping", WAIT, "the cut-off")
            code, _, err = c.wait()
    assert code == 0
    assert f"pyinit: warning: post hook --post {hook!r} failed: killed by SIGKILL\n" in err
