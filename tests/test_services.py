"""Sidecars and tasks end to end (docs/services.md), with pyinit as PID 1 of a PID namespace.

Each test checks what a user sees: the order the processes themselves
recorded, exit codes, pids, users, files on disk, log lines.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
import sandbox
from pidns import TARGET_PYTHON, Namespace, run_pyinit, unread_pipe, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")


def recorder(log: Path, name: str, *, ready: Path | None = None) -> str:
    """A sidecar command string: records its start, and its stop on TERM, in ``log``."""
    touch = f"touch {ready}; " if ready is not None else ""
    script = (
        f"trap 'echo stop {name} >> {log}; exit 0' TERM; echo start {name} >> {log}; "
        f"{touch}while :; do sleep 0.05; done"
    )
    return f'-- sh -c "{script}"'


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_early_started_sidecars_stop_in_reverse_order_on_an_immediate_stop(
    tmp_path: Path,
) -> None:
    # Sidecars without a probe and the main are forked before trio loads.  A
    # stop that arrives before the loop runs (here: the main asks for it as
    # soon as every sidecar has written its first line) must still stop them
    # one at a time, in reverse start order, not all at once as leftovers.
    log = tmp_path / "order"
    main = (
        f"trap 'exit 0' TERM; while [ $(grep -c start {log} 2>/dev/null || echo 0) -lt 3 ];"
        " do sleep 0.01; done; kill -TERM 1; sleep 5 & wait"
    )
    code, _, err = run_pyinit(
        [
            "--sidecar", f"a {recorder(log, 'a')}",
            "--sidecar", f"b {recorder(log, 'b')}",
            "--sidecar", f"c {recorder(log, 'c')}",
            "--", "sh", "-c", main,
        ]
    )  # fmt: skip
    assert code == 0, err
    got = lines(log)
    assert sorted(got[:3]) == ["start a", "start b", "start c"], got
    assert got[3:] == ["stop c", "stop b", "stop a"], got
    assert "leftover" not in err, err


def test_an_exec_failure_among_early_sidecars_is_reported_and_all_started_are_stopped(
    tmp_path: Path,
) -> None:
    # The leading sidecars without a probe are forked back to back and their
    # exec results read after: x's failure must still be reported once, in the
    # same words, follow x's policy (here: give up, stop the container), keep
    # the main from starting, and stop whatever was forked, in reverse order.
    log = tmp_path / "order"
    marker = tmp_path / "main-ran"
    code, _, err = run_pyinit(
        [
            "--sidecar", f"a {recorder(log, 'a')}",
            "--sidecar", "x restart=never -- /nonexistent/cmd",
            "--sidecar", f"b {recorder(log, 'b')}",
            "--sidecar", f"c {recorder(log, 'c')}",
            "--", "touch", str(marker),
        ]
    )  # fmt: skip
    assert code == 127, err
    assert not marker.exists()
    assert err.count("pyinit: sidecar x: /nonexistent/cmd: no such file or directory\n") == 1, err
    assert "sidecar x gave up before it was ready (restart=never; last exit 127)" in err
    got = lines(log)
    started = [line.split()[1] for line in got if line.startswith("start ")]
    stopped = [line.split()[1] for line in got if line.startswith("stop ")]
    assert set(started) <= {"a", "b", "c"}, got
    # a, b and c were forked before x's exec failure was read; whichever of them
    # ran its shell this far (their order is the scheduler's) was stopped, the
    # last forked first; none was left to the kernel's SIGKILL.
    assert stopped == [n for n in ("c", "b", "a") if n in started], got
    assert "leftover" not in err, err


def test_start_and_stop_order_as_the_processes_saw_it(tmp_path: Path) -> None:
    log = tmp_path / "order"
    ready_a = tmp_path / "a-ready"
    code, _, err = run_pyinit(
        [
            "--sidecar", f"a ready=file:{ready_a} {recorder(log, 'a', ready=ready_a)}",
            "--task", f'migrate -- sh -c "echo task migrate >> {log}"',
            "--sidecar", f"b {recorder(log, 'b')}",
            "--", "sh", "-c", f"echo main >> {log}; exit 3",
        ]
    )  # fmt: skip
    assert code == 3, err
    # b has no probe: the main may start before b's first line; a's probe orders the rest.
    got = lines(log)
    assert got[:2] == ["start a", "task migrate"], got
    assert set(got[2:4]) == {"start b", "main"}, got
    assert got[4:] == ["stop b", "stop a"], got


def test_a_failing_task_stops_the_start_with_125_and_the_main_never_runs(tmp_path: Path) -> None:
    log = tmp_path / "order"
    code, _, err = run_pyinit(
        [
            "--sidecar", f"a {recorder(log, 'a')}",
            "--task", 'bad -- sh -c "exit 4"',
            "--", "sh", "-c", f"echo main >> {log}",
        ]
    )  # fmt: skip
    assert code == 125, err
    assert "pyinit: task bad failed (exit 4)" in err
    assert "main" not in lines(log)
    if lines(log):  # a got as far as starting: it was stopped too
        assert lines(log)[-1] == "stop a"


def test_a_stop_signal_during_start_up_stops_what_started_and_exits_128_plus_n(
    tmp_path: Path,
) -> None:
    log = tmp_path / "order"
    with Namespace(
        [
            "--sidecar", f"a {recorder(log, 'a')}",
            "--sidecar", f"slow ready=file:{tmp_path / 'never'} -- sleep 30",
            "--", "sh", "-c", f"echo main >> {log}",
        ]
    ) as ns:  # fmt: skip
        wait_for(lambda: "start a" in lines(log), what="sidecar a")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    assert lines(log) == ["start a", "stop a"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_sidecar_ready_on_tcp_saves_its_data_when_stopped(tmp_path: Path) -> None:
    port = _free_port()
    code, out, err = run_pyinit(
        [
            "--sidecar",
            f"redis ready=tcp:{port} -- redis-server --port {port} --bind 127.0.0.1 "
            f"--dir {tmp_path} --save '3600 1'",
            "--", "redis-cli", "-p", str(port), "SET", "greeting", "hello",
        ]
    )  # fmt: skip
    assert code == 0, err
    assert "OK" in out
    assert (tmp_path / "dump.rdb").exists(), err


def test_a_killed_sidecar_is_restarted_with_a_new_pid(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with Namespace(
        [
            "--sidecar", f"w backoff=0.05:1 -- sh -c 'echo $$ >> {pids}; exec sleep 30'",
            "--", "sleep", "30",
        ]
    ) as ns:  # fmt: skip
        assert ns.init_pid
        wait_for(lambda: len(lines(pids)) == 1, what="the sidecar's first start")
        first = int(lines(pids)[0])
        wait_for(lambda: _exe_is_sleep(ns, first), what="the sidecar to exec sleep")
        _kill_in_namespace(ns, first)
        wait_for(lambda: len(lines(pids)) == 2, what="the restart")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    assert int(lines(pids)[1]) != first
    assert "sidecar w exited (killed by SIGKILL): restarting" in err


def test_a_crash_looping_sidecar_gives_up_with_its_own_status() -> None:
    code, out, err = run_pyinit(
        [
            "--sidecar", 'crash backoff=0.01:0.05 max-restarts=2/60 -- sh -c "echo boom; exit 7"',
            "--", "sleep", "30",
        ]
    )  # fmt: skip
    assert code == 7, err
    assert out.count("crash | boom") == 3  # the start and two restarts
    assert "sidecar crash gave up (2 restarts within 60s used up; last exit 7)" in err


def test_on_giveup_ignore_keeps_the_main_and_its_exit_code(tmp_path: Path) -> None:
    done = tmp_path / "gave-up"
    code, _, err = run_pyinit(
        [
            "--sidecar", 'crash restart=never on-giveup=ignore -- sh -c "exit 7"',
            "--", "sh", "-c", "sleep 0.5; exit 5",
        ]
    )  # fmt: skip
    assert code == 5, err
    assert "staying down (on-giveup=ignore)" in err
    assert not done.exists()


def test_a_sidecar_ignoring_term_is_killed_at_the_deadline(tmp_path: Path) -> None:
    started = tmp_path / "started"
    code, _, err = run_pyinit(
        [
            "--stop-timeout", "1.5",
            "--sidecar",
            f"stubborn -- sh -c \"trap '' TERM; touch {started}; while :; do sleep 0.05; done\"",
            "--", "sh", "-c", f"while [ ! -e {started} ]; do sleep 0.01; done",
        ]
    )  # fmt: skip
    assert code == 0, err
    assert "sidecar stubborn still running at the deadline: sending SIGKILL" in err


def test_item_output_is_prefixed_line_by_line_and_the_main_is_untouched() -> None:
    code, out, err = run_pyinit(
        [
            "--task", "t -- sh -c \"echo one; echo two; echo oops >&2; printf 'last'\"",
            "--sidecar", "r log=raw -- sh -c \"echo raw line; sleep 30\"",
            "--", "sh", "-c", "sleep 0.2; echo main line",
        ]
    )  # fmt: skip
    assert code == 0, err
    out_lines = out.splitlines()
    # In order among themselves (a raw sidecar's own write may come between).
    assert [line for line in out_lines if line.startswith("t | ")] == [
        "t | one",
        "t | two",
        "t | last",
    ], out
    assert "raw line" in out_lines
    assert "main line" in out_lines
    assert "t | oops" in err.splitlines()


def test_a_sidecar_runs_as_its_own_user() -> None:
    code, out, err = run_pyinit(
        [
            "--sidecar", "u user=nobody -- sh -c 'id -u; echo home=$HOME user=$USER; sleep 30'",
            "--", "sh", "-c", "sleep 0.3; id -u",
        ]
    )  # fmt: skip
    assert code == 0, err
    assert "u | 65534" in out.splitlines()
    home = pwd.getpwnam("nobody").pw_dir
    assert f"u | home={home} user=nobody" in out.splitlines()
    assert "0" in out.splitlines()


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs systemd-notify")
def test_a_notify_sidecar_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "order"
    notifier = f'-- sh -c "sleep 0.3; echo ready >> {log}; systemd-notify --ready; exec sleep 30"'
    code, _, err = run_pyinit(
        ["--sidecar", f"n ready=notify ready-timeout=15 {notifier}",
         "--", "sh", "-c", f"echo main >> {log}"]
    )  # fmt: skip
    assert code == 0, err
    assert lines(log) == ["ready", "main"]


def test_ready_and_stopping_are_reported_upward_and_notify_socket_is_not_inherited(
    tmp_path: Path,
) -> None:
    address = f"pyinit-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + address)
        sock.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET="@" + address)
        said = tmp_path / "said"
        echo = "echo {0}=${{NOTIFY_SOCKET:-none}}; echo {0} >> " + str(said) + "; sleep 30"
        with Namespace(
            ["--sidecar", f"s -- sh -c '{echo.format('sidecar')}'",
             "--", "sh", "-c", echo.format("main")],
            env=env,
        ) as ns:  # fmt: skip
            assert sock.recv(4096) == b"READY=1"
            # READY=1 comes once the main has exec'd: a TERM before its echo would hide it.
            wait_for(lambda: sorted(lines(said)) == ["main", "sidecar"], what="both echoes")
            ns.signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            code, out, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    assert "main=none" in out.splitlines()
    assert "s | sidecar=none" in out.splitlines()


def test_hooks_do_not_inherit_pyinit_s_notify_socket_but_an_exec_target_does() -> None:
    address = f"pyinit-test-hooks-{os.getpid()}"
    echo = "echo {0}=${{NOTIFY_SOCKET:-none}}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + address)
        env = dict(os.environ, NOTIFY_SOCKET="@" + address)
        code, out, err = run_pyinit(
            ["--pre", echo.format("pre"), "--post", echo.format("post"),
             "--", "sh", "-c", echo.format("main")],
            env=env,
        )  # fmt: skip
        assert code == 0, err
        assert {"pre=none", "main=none", "post=none"} <= set(out.splitlines()), out
        # exec mode: the target is pyinit's own process, the socket is meant for it.
        code, out, err = run_pyinit(
            ["--mode", "exec", "--", "sh", "-c", echo.format("main")], env=env, pid1=False
        )
    assert (code, out) == (0, f"main=@{address}\n"), err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _host_pid(ns: Namespace, inner: int) -> int | None:
    """The host pid of the namespace's process ``inner`` (NSpid in /proc/PID/status)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                if len(ids) == 2 and int(ids[1]) == inner and _in_namespace(ns, entry.name):
                    return int(entry.name)
    return None


def _in_namespace(ns: Namespace, pid: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{ns.init_pid}/ns/pid")
    except OSError:
        return False


def _exe_is_sleep(ns: Namespace, inner: int) -> bool:
    host = _host_pid(ns, inner)
    if host is None:
        return False
    try:
        return os.path.basename(os.readlink(f"/proc/{host}/exe")) == "sleep"
    except OSError:
        return False


def _kill_in_namespace(ns: Namespace, inner: int) -> None:
    host = _host_pid(ns, inner)
    assert host is not None
    os.kill(host, signal.SIGKILL)


def test_a_stalled_stdout_neither_blocks_forwarding_nor_the_exit(tmp_path: Path) -> None:
    got = tmp_path / "got-usr1"
    started = tmp_path / "started"
    main = (
        f"import signal, time; signal.signal(signal.SIGUSR1, lambda *a: open({str(got)!r}, 'w'));"
        f" open({str(started)!r}, 'w'); signal.pause(); time.sleep(30)"
    )
    with unread_pipe() as (read_end, write_end), Namespace(
        ["--stop-timeout", "2", "--sidecar", "flood -- yes 0123456789abcdef",
         "--", TARGET_PYTHON, "-c", main],
        stdout=write_end,
    ) as ns:  # fmt: skip
        wait_for(started.exists, what="the main")
        code, _, err = _forward_then_stop(ns, read_end, got)
    assert code == 128 + signal.SIGTERM, err
    assert "log line(s) of sidecars/tasks: output stalled" in err


@pytest.mark.parametrize("sidecars", [[], ["--sidecar", "s -- sleep 30"]], ids=["plain", "sidecar"])
def test_a_stalled_stderr_blocks_neither_the_intake_nor_the_exit(
    tmp_path: Path, sidecars: list[str]
) -> None:
    # pyinit's own lines (here -v's "reaped ..." for 3000 orphans: ~90 KB)
    # must not block PID 1 when nobody reads its stderr: they are queued,
    # then dropped and counted, never waited for.
    got = tmp_path / "got-usr1"
    done = tmp_path / "forked"
    main = (
        "import os, signal, time\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(got)!r}, 'w'))\n"
        "for _ in range(3000):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        os.fork()\n"
        "        os._exit(0)\n"  # the grandchild is an orphan: PID 1 reaps it
        "    os.waitpid(child, 0)\n"
        f"open({str(done)!r}, 'w')\n"
        "time.sleep(30)\n"
    )
    with (
        unread_pipe() as (read_end, write_end),
        Namespace(
            ["-v", "--stop-timeout", "3", *sidecars, "--", TARGET_PYTHON, "-c", main],
            stderr=write_end,
        ) as ns,
    ):
        wait_for(done.exists, what="the main's 3000 orphans")
        code, _, _ = _forward_then_stop(ns, read_end, got)
    assert code == 128 + signal.SIGTERM


def _forward_then_stop(ns: Namespace, read_end: int, got: Path) -> tuple[int, str, str]:
    """Once the pipe is full, USR1 must reach the main (it writes ``got``); TERM ends pyinit."""
    assert ns.init_pid
    wait_for(lambda: _pipe_full(read_end), what="pyinit's output to fill the pipe")
    ns.signal(signal.SIGUSR1)
    wait_for(got.exists, what="the forwarded SIGUSR1")
    ns.signal(signal.SIGTERM)
    return ns.wait()


def _pipe_full(read_end: int) -> bool:
    import fcntl
    import termios

    buffered = fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buffered, "little") >= 60000


def test_an_fd_ready_sidecar_s6_style_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "order"
    sidecar = f'f ready=fd:3 -- sh -c "sleep 0.3; echo ready >> {log}; echo >&3; exec sleep 30"'
    code, _, err = run_pyinit(["--sidecar", sidecar, "--", "sh", "-c", f"echo main >> {log}"])
    assert code == 0, err
    assert lines(log) == ["ready", "main"]


def test_the_mains_notify_readiness_is_what_is_reported_upward(tmp_path: Path) -> None:
    address = f"pyinit-test-main-{os.getpid()}"
    marker = tmp_path / "notified"
    main = (
        "import os, socket, time; time.sleep(0.3);"
        f" open({str(marker)!r}, 'w').close();"
        " s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
        " s.sendto(b'READY=1', '\\0' + os.environ['NOTIFY_SOCKET'][1:]); time.sleep(30)"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + address)
        sock.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET="@" + address)
        with Namespace(["--ready", "notify", "--", TARGET_PYTHON, "-c", main], env=env) as ns:
            assert sock.recv(4096) == b"READY=1"
            assert marker.exists()  # not before the main said so
            ns.signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err


# --- a sidecar that exits before it is first ready -----------------------------------------------


def flaky(tmp_path: Path, *, good_on: int, code: int = 1, probe: str = "file") -> str:
    """A sidecar's keys and command: counts its starts; ready only from start ``good_on`` on.

    ``probe`` ``file``: it creates ``tmp_path/ready``; ``fd``: it also writes a newline on fd 3.
    """
    count, pids, ready = tmp_path / "count", tmp_path / "pids", tmp_path / "ready"
    notify = "; echo >&3" if probe == "fd" else ""
    script = (
        f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}.new; "
        f"mv {count}.new {count}; "
        f"echo $$ >> {pids}; [ $n -ge {good_on} ] || exit {code}; touch {ready}{notify}; "
        "exec sleep 30"
    )
    ready_key = "ready=fd:3" if probe == "fd" else f"ready=file:{ready}"
    return f"{ready_key} -- sh -c '{script}'"


@pytest.mark.parametrize("probe", ["file", "fd"])
def test_a_sidecar_failing_twice_before_it_is_ready_is_restarted_then_the_main_starts(
    tmp_path: Path, probe: str
) -> None:
    main_pid = tmp_path / "main-pid"
    code, _, err = run_pyinit(
        [
            "--sidecar", f"db backoff=0.05:1 {flaky(tmp_path, good_on=3, probe=probe)}",
            "--", "sh", "-c", f"[ -e {tmp_path / 'ready'} ] && echo $$ > {main_pid}; exit 4",
        ]
    )  # fmt: skip
    assert code == 4, err
    assert lines(tmp_path / "count") == ["3"], err
    pids = [*lines(tmp_path / "pids"), *lines(main_pid)]
    assert len(pids) == 4 and len(set(pids)) == 4, (pids, err)
    # backoff=0.05:1 doubles, each delay within +-20% of itself and within the bounds.
    delays = [float(d) for d in re.findall(r"ready \(exit 1\): restarting in ([0-9.]+)s", err)]
    assert len(delays) == 2, err
    assert 0.05 <= delays[0] <= 0.06 and 0.08 <= delays[1] <= 0.12, delays


@pytest.mark.parametrize(
    ("command", "expected"),
    [("exit 7", 7), ("kill -USR1 $$", 128 + signal.SIGUSR1)],
    ids=["exit-7", "killed-by-usr1"],
)
def test_restart_never_before_ready_stops_the_container_with_the_sidecars_status(
    tmp_path: Path, command: str, expected: int
) -> None:
    marker = tmp_path / "main-ran"
    code, _, err = run_pyinit(
        [
            "--sidecar", f"db restart=never ready=file:{tmp_path / 'never'} -- sh -c '{command}'",
            "--", "touch", str(marker),
        ]
    )  # fmt: skip
    assert code == expected, err
    assert not marker.exists()
    assert "pyinit: sidecar db gave up before it was ready (restart=never; last " in err
    assert "stopping the container" in err


def test_on_giveup_ignore_before_ready_starts_the_next_items_and_the_main(tmp_path: Path) -> None:
    log = tmp_path / "order"
    code, _, err = run_pyinit(
        [
            "--sidecar",
            f"bad restart=never on-giveup=ignore ready=file:{tmp_path / 'never'} -- sh -c 'exit 7'",
            "--task", f'after -- sh -c "echo task >> {log}"',
            "--", "sh", "-c", f"echo main >> {log}; exit 5",
        ]
    )  # fmt: skip
    assert code == 5, err
    assert lines(log) == ["task", "main"]
    assert (
        "sidecar bad gave up before it was ready (restart=never; last exit 7): staying down "
        "(on-giveup=ignore)" in err
    )


def test_max_restarts_used_up_before_ready_is_a_give_up(tmp_path: Path) -> None:
    marker = tmp_path / "main-ran"
    code, _, err = run_pyinit(
        [
            "--sidecar",
            f"db backoff=0.01:0.05 max-restarts=1/60 {flaky(tmp_path, good_on=9, code=3)}",
            "--", "touch", str(marker),
        ]
    )  # fmt: skip
    assert code == 3, err
    assert lines(tmp_path / "count") == ["2"]  # the start and its one restart
    assert not marker.exists()
    gave_up = "sidecar db gave up before it was ready (1 restarts within 60s used up; last exit 3)"
    assert gave_up in err


def test_ready_timeout_bounds_the_wait_across_restarts(tmp_path: Path) -> None:
    marker = tmp_path / "main-ran"
    code, _, err = run_pyinit(
        [
            "--sidecar",
            "db ready-timeout=2 backoff=0.05:0.05 max-restarts=1000/60 "
            + flaky(tmp_path, good_on=10**6),
            "--", "touch", str(marker),
        ]
    )  # fmt: skip
    assert code == 125, err
    assert int(lines(tmp_path / "count")[0]) >= 2, err
    assert not marker.exists()
    assert "pyinit: sidecar db not ready within 2s" in err


def test_a_stop_signal_during_the_backoff_before_ready_exits_128_plus_n(tmp_path: Path) -> None:
    marker = tmp_path / "main-ran"
    with Namespace(
        ["--sidecar", f"db backoff=30:30 {flaky(tmp_path, good_on=2)}", "--", "touch", str(marker)]
    ) as ns:
        wait_for(lambda: lines(tmp_path / "count") == ["1"], what="the sidecar's first start")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    assert lines(tmp_path / "count") == ["1"]
    assert not marker.exists()


def test_a_sidecar_that_cannot_exec_is_not_ready_and_follows_its_restart_policy(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "main-ran"
    code, _, err = run_pyinit(
        ["--sidecar", "x restart=never -- /nonexistent/cmd", "--", "touch", str(marker)]
    )
    assert code == 127, err
    assert not marker.exists()
    assert "sidecar x gave up before it was ready (restart=never; last exit 127)" in err


# --- --ready fd:N for the main --------------------------------------------------------------------


def test_the_mains_fd_readiness_is_what_is_reported_upward(tmp_path: Path) -> None:
    address = f"pyinit-test-mainfd-{os.getpid()}"
    marker = tmp_path / "about-to-be-ready"
    main = (
        "import os, time; time.sleep(0.3);"
        f" open({str(marker)!r}, 'w').close(); os.write(3, b'\\n'); time.sleep(30)"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + address)
        sock.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET="@" + address)
        with Namespace(["--ready", "fd:3", "--", TARGET_PYTHON, "-c", main], env=env) as ns:
            assert sock.recv(4096) == b"READY=1"
            assert marker.exists()  # not before the main wrote its newline
            ns.signal(signal.SIGTERM)
            assert sock.recv(4096) == b"STOPPING=1"
            code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err


def test_the_mains_fd_probe_colliding_with_keep_fd_is_125_in_one_line() -> None:
    code, out, err = run_pyinit(["--ready", "fd:3", "--keep-fd", "3", "--", "true"])
    assert (code, out) == (125, ""), err
    assert err.startswith("pyinit: --ready 'fd:3': --keep-fd 3 passes the main"), err
    assert err.count("\n") == 1


def test_a_restarted_sidecar_starts_where_pyinit_was_started(tmp_path: Path) -> None:
    # As PID 1 pyinit leaves its start directory (the image's WORKDIR) for /
    # once the main runs, so as not to pin a volume; a sidecar without workdir=
    # restarted after that still starts in the WORKDIR, as its first run did.
    workdir = tmp_path / "app"
    workdir.mkdir()
    log = tmp_path / "cwd.log"
    two_runs = f'until [ "$(cat {log} 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.02; done'
    code, _, err = sandbox.run_pyinit(
        "--sidecar", f'w restart=always backoff=0.05:0.05 -- sh -c "pwd >> {log}"',
        "--", "sh", "-c", f"{two_runs}; pwd >> {log}",
        pid1=True,
        cwd=str(workdir),
    )  # fmt: skip
    assert code == 0, err
    assert "sidecar w is back" in err
    assert len(lines(log)) >= 3  # the sidecar's first run, its restart, the main
    assert set(lines(log)) == {str(workdir)}
