"""Supervise mode, tested with pyinit as the real PID 1 of a PID namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from pidns import (
    PYINIT,
    TARGET_PYTHON,
    UNSHARE,
    Namespace,
    python_target,
    run_pyinit,
    wait_for,
)
from sandbox import scratch_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch directory every user can write to (targets often run as nobody)."""
    with scratch_dir("pyinit-supervise-", 0o777) as path:
        yield path


# A target that records every signal it receives, one name per line, and
# exits 0 on the final SIGTERM.
RECORDER = textwrap.dedent("""
    import os, signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    def handler(signum, frame):
        log.write(signal.Signals(signum).name if signum < signal.SIGRTMIN
                  else f"RT{signum - signal.SIGRTMIN}")
        log.write("\\n")
        if signum == signal.SIGTERM:
            sys.exit(0)
    for s in signal.valid_signals():
        if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            signal.signal(s, handler)
    open(sys.argv[2], "w").close()
    while True:
        time.sleep(0.01)
""")

FORWARDED = [
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGURG,
    signal.SIGPIPE,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGPWR,
    signal.SIGSYS,
    signal.SIGABRT,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGSEGV,
    signal.SIGTRAP,
]


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _recorder(tmp_path: Path, *pyinit_args: str) -> tuple[Namespace, Path]:
    log_file, ready = tmp_path / "signals", tmp_path / "ready"
    args = [*pyinit_args, "--", *python_target(RECORDER), str(log_file), str(ready)]
    ns = Namespace(args)
    wait_for(ready.exists, what="the target to install its handlers")
    return ns, log_file


def test_every_catchable_signal_reaches_the_target(tmp_path: Path) -> None:
    ns, log_file = _recorder(tmp_path, "--user", "nobody", "--stop-timeout", "30")
    with ns:
        for number, sig in enumerate(FORWARDED, start=1):
            ns.signal(sig)
            wait_for(lambda n=number: len(_lines(log_file)) >= n, what=f"{sig.name} to arrive")
        ns.signal(signal.SIGRTMIN + 3)
        wait_for(lambda: "RT3" in _lines(log_file), what="SIGRTMIN+3")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert _lines(log_file) == [s.name for s in FORWARDED] + ["RT3", "SIGTERM"]
    assert code == 0, err


def test_fatal_signals_sent_to_pyinit_when_not_pid1_are_forwarded_not_fatal(
    tmp_path: Path,
) -> None:
    # `kill -ABRT` and friends kill tini and catatonit when they are not PID 1
    # (nothing shields them from default actions there); pyinit forwards them.
    log_file, ready = tmp_path / "signals", tmp_path / "ready"
    args = ["--mode", "supervise", "--", *python_target(RECORDER), str(log_file), str(ready)]
    fatal = [
        signal.SIGABRT,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGQUIT,
    ]
    with Namespace(args, pid1=False) as ns:
        wait_for(ready.exists, what="the target to install its handlers")
        for number, sig in enumerate(fatal, start=1):
            ns.signal(sig)
            wait_for(lambda n=number: len(_lines(log_file)) >= n, what=f"{sig.name} to arrive")
        assert ns.proc.poll() is None
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert _lines(log_file) == [s.name for s in fatal] + ["SIGTERM"]
    assert code == 0, err


def test_rewrite_maps_term_to_quit(tmp_path: Path) -> None:
    ns, log_file = _recorder(
        tmp_path, "--rewrite", "TERM:QUIT", "--rewrite", "USR1:0", "--stop-timeout", "30"
    )
    with ns:
        ns.signal(signal.SIGUSR1)  # dropped
        ns.signal(signal.SIGTERM)  # arrives as QUIT
        wait_for(lambda: "SIGQUIT" in _lines(log_file), what="SIGQUIT")
        ns.signal(signal.SIGUSR2)
        wait_for(lambda: "SIGUSR2" in _lines(log_file), what="SIGUSR2")
        ns.kill()
    assert _lines(log_file) == ["SIGQUIT", "SIGUSR2"]


def test_signal_group_reaches_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild"
    script = f"""
        trap 'echo parent-term >> {tmp_path}/log; wait; exit 0' TERM
        sh -c 'trap "echo child-term >> {tmp_path}/log; exit 0" TERM; touch {marker};
               while :; do sleep 0.05; done' &
        wait
    """
    with Namespace(["--signal-group", "--", "sh", "-c", script]) as ns:
        wait_for(marker.exists, what="the grandchild")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert sorted(_lines(tmp_path / "log")) == ["child-term", "parent-term"]
    assert code == 0, err


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -KILL $$", 128 + 9),
        ("kill -SEGV $$", 128 + 11),
    ],
)
def test_exit_code_passes_through(script: str, expected: int) -> None:
    code, _, err = run_pyinit(["--user", "nobody", "--", "sh", "-c", script])
    assert code == expected, err


def test_exec_failures_in_the_child_are_126_and_127(tmp_path: Path) -> None:
    code, _, err = run_pyinit(["--mode", "supervise", "--", "no-such-command"])
    assert code == 127
    assert err.strip().splitlines()[-1].startswith("pyinit: no-such-command: command not found")
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    code, _, err = run_pyinit(["--mode", "supervise", "--", str(not_executable)])
    assert code == 126, err


def test_orphan_storm_leaves_no_zombies() -> None:
    # 500 double-forked orphans: each subshell exits at once, so its sleep is
    # reparented to PID 1.  The target then waits until every orphan is gone
    # and counts the zombies left in the namespace: the reaper must collect them.
    script = r"""
        i=0
        while [ $i -lt 500 ]; do ( sleep 0.05 & ) ; i=$((i+1)); done
        n=0
        while pgrep -x sleep >/dev/null && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
        n=0
        while [ "$(ps -eo stat= | grep -c '^Z')" != 0 ] && [ $n -lt 400 ]; do
            sleep 0.05; n=$((n+1))
        done
        echo "zombies=$(ps -eo stat= | grep -c '^Z')"
    """
    code, out, err = run_pyinit(["--", "sh", "-c", script], timeout=60)
    assert code == 0, err
    assert out.strip() == "zombies=0"


def test_stop_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    target = python_target(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"open({str(ready)!r}, 'w').close(); time.sleep(120)"
    )
    with Namespace(["--stop-timeout", "1", "--", *target]) as ns:
        wait_for(ready.exists, what="the target")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGKILL
    assert "sending SIGKILL" in err


def test_leftovers_are_stopped_gracefully_before_exit(tmp_path: Path) -> None:
    # The target exits at once and leaves a daemon behind; the daemon gets
    # SIGTERM from pyinit and has time to finish its work before PID 1 exits.
    done, ready = tmp_path / "done", tmp_path / "ready"
    daemon = (
        f"trap 'sleep 0.2; echo finished > {done}; exit 0' TERM; touch {ready};"
        " while :; do sleep 0.05; done"
    )
    script = f'(sh -c "{daemon}" &) ; while [ ! -e {ready} ]; do sleep 0.01; done; exit 4'
    code, _, err = run_pyinit(["-v", "--stop-timeout", "10", "--", "sh", "-c", script])
    assert code == 4, err
    assert done.read_text() == "finished\n"
    assert "leftover process(es) with SIGTERM" in err


def test_leftover_ignoring_term_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"
    script = f'(sh -c "{stubborn}" &) ; while [ ! -e {ready} ]; do sleep 0.01; done'
    code, _, err = run_pyinit(["--stop-timeout", "0.5", "--", "sh", "-c", script])
    assert code == 0, err
    assert "ignored SIGTERM: sending SIGKILL" in err


def test_post_hooks_run_as_root_in_order_with_the_exit_code(tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    code, _, err = run_pyinit(
        [
            "--user",
            "nobody",
            "--post",
            f"echo one $(id -u) $PYINIT_EXIT_CODE >> {out}",
            "--post",
            f"echo two $(id -u) >> {out}",
            "--",
            "sh",
            "-c",
            "id -u > /dev/null; exit 5",
        ]
    )
    assert code == 5, err
    assert out.read_text() == "one 0 5\ntwo 0\n"


def test_hanging_post_hook_is_stopped(tmp_path: Path) -> None:
    code, _, err = run_pyinit(
        ["--stop-timeout", "0.5", "--post", "sleep 600", "--", "true"], timeout=30
    )
    assert code == 0, err
    assert "still running: sending SIGTERM" in err


def test_signal_in_the_start_up_window_is_forwarded(tmp_path: Path) -> None:
    # SIGTERM lands 10 ms after the target started: pyinit is still importing
    # trio (~0.1 s), so the signal must wait, blocked, and be forwarded later.
    started, got = tmp_path / "started", tmp_path / "got"
    script = f"trap 'echo TERM > {got}; exit 0' TERM; touch {started}; while :; do sleep 0.01; done"
    with Namespace(["-v", "--", "sh", "-c", script]) as ns:
        wait_for(started.exists, what="the target to start")
        trio.run(trio.sleep, 0.01)
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert got.read_text() == "TERM\n"
    assert code == 0, err
    assert "forwarded SIGTERM" in err


def test_not_pid1_becomes_a_subreaper(tmp_path: Path) -> None:
    # Not PID 1 (docker --init, shareProcessNamespace): orphans of the target
    # are reparented to pyinit itself, which reaps them.
    pidfile, ppidfile = tmp_path / "pid", tmp_path / "ppid"
    script = f"""
        (sleep 1 & echo $! > {pidfile})
        pid=$(cat {pidfile})
        awk '{{print $4}}' /proc/$pid/stat > {ppidfile}
    """
    with Namespace(["--mode", "supervise", "--", "sh", "-c", script], pid1=False) as ns:
        code, _, err = ns.wait()
        pyinit_pid = ns.proc.pid
    assert code == 0, err
    assert int(ppidfile.read_text()) == pyinit_pid
    assert "child subreaper" in err
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists()


def test_inherited_fds_are_closed_except_listen_fds_and_kept_ones() -> None:
    read_end, write_end = os.pipe()
    os.dup2(read_end, 20)
    # Socket activation: fd 3 is for pyinit (LISTEN_PID=1 is PID 1 in the
    # namespace); the target must get it with LISTEN_PID naming itself.
    # fd 5 is kept with --keep-fd; fd 7 must be closed.
    probe = textwrap.dedent("""
        import os
        def is_open(fd):
            try:
                os.fstat(fd)
            except OSError:
                return False
            return True
        print(*[fd for fd in range(64) if is_open(fd)])
        print(os.environ["LISTEN_PID"], os.getpid())
    """)
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID="1")
    cmd = [*UNSHARE, *PYINIT, "--keep-fd", "5", "--", *python_target(probe)]
    try:
        result = subprocess.run(
            ["bash", "-c", 'exec 3<&20 5<&20 7<&20 20<&-; exec "$@"', "bash", *cmd],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            pass_fds=(20,),
        )
    finally:
        for fd in (read_end, write_end, 20):
            os.close(fd)
    assert result.returncode == 0, result
    fds_line, pid_line = result.stdout.strip().splitlines()
    assert set(fds_line.split()) == {"0", "1", "2", "3", "5"}, result
    listen_pid, shell_pid = pid_line.split()
    assert listen_pid == shell_pid


def test_an_exception_in_the_supervisor_stops_the_target(tmp_path: Path) -> None:
    # Fault injection without test hooks in pyinit: patch the supervisor's
    # signal forwarding to raise, then send a signal.
    ready, got = tmp_path / "ready", tmp_path / "got"
    driver = textwrap.dedent("""
        import sys
        import pyinit.run.loop as loop
        async def broken(self):
            import os, trio
            while not os.path.exists(os.environ["READY"]):  # the target's trap is set
                await trio.sleep(0.01)
            raise RuntimeError("injected fault")
        loop.Supervision.run = broken
        from pyinit.cli import main
        main(sys.argv[1:])
    """)
    # A sidecar (started by the launcher) that keeps running after a SIGTERM: it must
    # still get that SIGTERM before the emergency stop's SIGKILL.
    side_ready, side_got = tmp_path / "side-ready", tmp_path / "side-got"
    sidecar = f"s -- sh -c \"trap 'echo TERM > {side_got}' TERM; touch {side_ready}; sleep 600\""
    script = (
        f"trap 'echo TERM > {got}; exit 0' TERM; while [ ! -e {side_ready} ]; do sleep 0.01; done;"
        f" touch {ready}; while :; do sleep 0.01; done"
    )
    argv = [*UNSHARE, sys.executable, "-c", driver]
    argv += ["--stop-timeout", "2", "--sidecar", sidecar, "--", "sh", "-c", script]
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent), READY=str(ready)),
    )
    try:
        wait_for(ready.exists, what="the target")
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 125
    assert "supervisor failed: RuntimeError: injected fault" in err
    assert got.read_text() == "TERM\n"
    assert side_got.read_text() == "TERM\n", err


def test_a_failed_trio_import_still_stops_the_target(tmp_path: Path) -> None:
    # Not PID 1 (a subreaper): nothing kills the target for pyinit.  A trio
    # that cannot be imported must end in the synchronous stop, not a 125
    # that leaves the target running.  (A sidecar: a plain target needs no trio.)
    fake = tmp_path / "fake" / "trio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, time\n"
        "while not os.path.exists(os.environ['READY']):  # the target's trap is set\n"
        "    time.sleep(0.01)\n"
        "raise ImportError('injected: no trio here')\n"
    )
    pid_file, got = tmp_path / "pid", tmp_path / "got"
    script = (
        f"trap 'echo TERM > {got}; exit 0' TERM; echo $$ > {pid_file}; while :; do sleep 0.01; done"
    )
    checkout = str(Path(__file__).parent.parent)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pyinit", "--mode", "supervise"),
            *("--sidecar", "s -- sleep 100", "--", "sh", "-c", script),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=f"{fake.parent}:{checkout}", READY=str(pid_file)),
    )
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 125, err
    assert "supervisor failed: ImportError: injected: no trio here" in err
    assert got.read_text() == "TERM\n"
    assert not Path(f"/proc/{pid_file.read_text().strip()}").exists()


def test_a_plain_target_is_supervised_without_trio(tmp_path: Path) -> None:
    # A trio that cannot even be imported: a plain target (no sidecar, task,
    # --ready or NOTIFY_SOCKET) is supervised for its whole life without it,
    # its stop signal forwarded, its leftovers stopped, its post hook run.
    fake = tmp_path / "fake" / "trio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('injected: no trio here')\n")
    started, got = tmp_path / "started", tmp_path / "got"
    script = (
        f"trap 'echo TERM > {got}; exit 7' TERM; sleep 100 & touch {started};"
        " while :; do sleep 0.01; done"
    )
    checkout = str(Path(__file__).parent.parent)
    argv = ["--mode", "supervise", "--post", "echo post $PYINIT_EXIT_CODE", "--", "sh", "-c"]
    with Namespace(
        [*argv, script], env=dict(os.environ, PYTHONPATH=f"{fake.parent}:{checkout}")
    ) as ns:
        wait_for(started.exists, what="the target's trap")
        ns.signal(signal.SIGTERM)
        code, out, err = ns.wait()
    assert code == 7, err
    assert got.read_text() == "TERM\n"
    assert out == "post 7\n"
    assert "trio" not in err


def test_no_signal_is_lost_in_the_first_300_ms_under_load_on_either_path(tmp_path: Path) -> None:
    # Issue 16's third sign: SIGUSR2 at random instants in pyinit's first
    # 300 ms, CPU burners on every core; plain (no trio) and loop paths.
    # benchmarks/signal_stress.py runs thousands; here a bounded count.
    stress = Path(__file__).resolve().parent.parent / "benchmarks" / "signal_stress.py"
    report = tmp_path / "stress.json"
    proc = subprocess.run(
        [sys.executable, str(stress), "--runs", "100", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(report.read_text())
    assert set(results) == {"plain", "loop"}
    for path, counts in results.items():
        assert counts["lost"] == 0, (path, counts)
        assert counts["runs"] == 100


def test_a_plain_target_imports_neither_trio_nor_psutil_as_pid1() -> None:
    # The target runs long enough for a loop thread to have imported trio.
    argv = [*UNSHARE, sys.executable, "-X", "importtime", "-m", "pyinit", "--mode", "supervise"]
    proc = subprocess.run(
        [*argv, "--", "sleep", "0.3"], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    modules = {
        line.split("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pyinit.run.plain" in modules
    for name in ("trio", "psutil", "pyinit.run.loop"):
        assert not any(m == name or m.startswith(name + ".") for m in modules), name
    # Nor what it does not use: argparse's gettext lookups (locale), the secrets and
    # services models, the hooks' modules (docs/design.md, "Start-up cost").
    unused = ("pyinit.plan.secrets", "pyinit.plan.services", "pyinit.root.hooks")
    for name in ("locale", *unused, "pyinit.run.posthooks"):
        assert name not in modules, name


async def test_terminal_gets_ctrl_c_and_ctrl_z_never_stops_pid1(tmp_path: Path) -> None:
    """docker run -it: Ctrl-C and Ctrl-Z go to the target's process group, not to PID 1."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()
    target = textwrap.dedent("""
        import signal, os, time
        # Only os.write (no buffered print) here: a handler that prints can
        # re-enter the BufferedWriter the main code is flushing.
        def on(signum, frame):
            os.write(1, b"target got " + signal.Signals(signum).name.encode() + b"\\n")
            if signum == signal.SIGINT:
                os._exit(0)
        signal.signal(signal.SIGINT, on)
        signal.signal(signal.SIGTSTP, on)
        fg = os.tcgetpgrp(0) == os.getpgrp()
        os.write(1, b"foreground\\n" if fg else b"background\\n")
        time.sleep(60)
    """)

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen(
        [*UNSHARE, *PYINIT, "--user", "nobody", "--", TARGET_PYTHON, "-c", target],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
        env=env,
    )
    os.close(slave)
    output = b""

    async def read_until(text: bytes) -> None:
        nonlocal output
        while text not in output:
            await trio.lowlevel.wait_readable(master)
            try:
                output += os.read(master, 4096)
            except OSError:  # EIO: the tty closed before the marker came
                raise AssertionError(f"no {text!r} before the tty closed: {output!r}") from None

    try:
        with trio.fail_after(20):
            await read_until(b"foreground")
            os.write(master, b"\x1a")  # Ctrl-Z
            await read_until(b"target got SIGTSTP")
            os.write(master, b"\x03")  # Ctrl-C
            await read_until(b"target got SIGINT")
            while proc.poll() is None:
                await trio.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        os.close(master)
    assert proc.returncode == 0, output
