"""Supervise mode's core: the start-up window, pyinit's own signals, queued signals, stdio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sandbox
from pidns import PYINIT, Namespace, python_target, run_pyinit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))


def test_signal_sent_by_a_pre_hook_reaches_the_target() -> None:
    # Deterministic start-up window: the USR1 is pending before the target
    # exists and must be forwarded to it (sleep dies of it: 128+10).
    code, _, err = run_pyinit(["--pre", "kill -USR1 1", "--", "sleep", "3"])
    assert code == 138, err


def test_pending_signal_that_kills_the_target_is_logged_as_forwarded() -> None:
    code, _, err = run_pyinit(["-v", "--pre", "kill -USR1 1", "--", "sleep", "3"])
    assert code == 138, err
    assert "forwarded SIGUSR1" in err
    assert "not forwarded" not in err


def test_signal_and_exit_storm_while_trio_loads() -> None:
    # During trio's import, signals are taken by Python handlers that may
    # nest (a SIGCHLD arriving while a SIGUSR1 is forwarded): none may be
    # lost, deadlock the intake, or end in a traceback.  The target keeps
    # signalling PID 1 and forking children that exit at once, then exits 3.
    storm = (
        "trap 'n=$((n+1))' USR1; n=0; i=0; "
        "while [ $i -lt 300 ]; do kill -USR1 1; (exit 0) & i=$((i+1)); done; "
        "wait; exit 3"
    )
    for _ in range(8):  # the window is short: give the race several chances
        code, _, err = run_pyinit(["-v", "--", "sh", "-c", storm], timeout=20)
        assert code == 3, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert "forwarded SIGUSR1" in err


#: Runs Intake.import_loop with a child exiting in its last window: after the
#: signals are blocked again, before the handlers are put back.  Prints what
#: is left of that exit: "pending" (sigwaitinfo will take it) or "lost".
LAST_WINDOW = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from pyinit.plan.signals import blockable_signals
signal.pthread_sigmask(signal.SIG_BLOCK, blockable_signals())
from plan_helpers import plan_for
from pyinit.run.intake import Intake
from pyinit.run.reaper import Reaper

real = signal.pthread_sigmask
child = []

def block_then_exit(how, mask):
    old = real(how, mask)
    if how == signal.SIG_BLOCK and signal.SIGCHLD in mask and not child:
        child.append(os.fork() or os._exit(0))
        stat = f"/proc/{child[0]}/stat"
        deadline = time.monotonic() + 10
        while open(stat).read().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.001)
    return old

signal.pthread_sigmask = block_then_exit
Intake(plan_for(["--", "true"]), Reaper()).import_loop()
signal.pthread_sigmask = real
pending = signal.sigtimedwait([signal.SIGCHLD], 0) is not None
assert os.waitpid(child[0], os.WNOHANG)[0] == child[0]  # still a zombie: nobody reaped it
print("pending" if pending else "lost")
"""


def test_a_child_exiting_as_the_import_ends_is_still_reaped_then() -> None:
    # A child that exits after the import blocked the signals again, before the
    # handlers are put back: its SIGCHLD waits, blocked, for sigwaitinfo.  Put
    # back to SIG_DFL, a default-ignored signal pending is discarded by the
    # kernel: the child stayed a zombie, unseen, until another child exited
    # (a sidecar never restarted, a main whose exit did not stop the container).
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run(
        [sys.executable, "-c", LAST_WINDOW, tests],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "pending\n", proc.stderr


def test_queued_realtime_signals_are_each_delivered(tmp_path: Path) -> None:
    counter = textwrap.dedent("""
        import signal, sys, time
        rt = signal.SIGRTMIN + 1
        signal.pthread_sigmask(signal.SIG_BLOCK, [rt, signal.SIGTERM])
        open(sys.argv[1], "w").close()
        n = 0
        while True:
            info = signal.sigwaitinfo([rt, signal.SIGTERM])
            if info.si_signo == signal.SIGTERM:
                break
            n += 1
        print(n)
    """)
    ready = tmp_path / "ready"
    with Namespace(["--", *python_target(counter), str(ready)]) as ns:
        wait_for(ready.exists, what="the target")
        # Queue 50 while pyinit is stopped, so they are all pending at once.
        os.kill(ns.init_pid, signal.SIGSTOP)
        for _ in range(50):
            os.kill(ns.init_pid, signal.SIGRTMIN + 1)
        os.kill(ns.init_pid, signal.SIGCONT)
        wait_for(lambda: _sig_pending_empty(ns.init_pid), what="pyinit to take the signals")
        ns.signal(signal.SIGTERM)
        code, out, err = ns.wait()
    assert code == 0, err
    assert out.strip() == "50"


def _sig_pending_empty(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    shdpnd = next(line for line in status.splitlines() if line.startswith("ShdPnd:"))
    return int(shdpnd.split()[1], 16) == 0


def test_dead_stderr_does_not_kill_a_healthy_target(tmp_path: Path) -> None:
    # pyinit -v ... 2>&1 | head -0: every log line raises SIGPIPE in pyinit,
    # which must not be forwarded; the target keeps running and exits 3.
    ready = tmp_path / "ready"
    script = f"touch {ready}; sleep 0.5; exit 3"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone
    with Namespace(["-v", "--", "sh", "-c", script], stderr=write_end) as ns:
        os.close(write_end)
        wait_for(ready.exists, what="the target")
        ns.signal(signal.SIGWINCH)  # forwarded and logged: another SIGPIPE in pyinit
        code, _, _ = ns.wait()
    assert code == 3


@pytest.mark.parametrize("mode", ["exec", "supervise"])
@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&-"])
def test_closed_stdio_runs_the_target_with_it(mode: str, redirect: str) -> None:
    probe = "ls /proc/self/fd > /dev/null 2>&1; exit 3"
    command = " ".join([*PYINIT, "--mode", mode, "--", "sh", "-c", repr(probe)])
    proc = subprocess.run(
        ["sh", "-c", f"{command} {redirect}"], env=ENV, capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr


def test_closed_stdout_stays_closed_for_the_target() -> None:
    probe = "if [ -e /proc/self/fd/1 ]; then exit 4; fi; exit 3"
    command = " ".join([*PYINIT, "--mode", "supervise", "--", "sh", "-c", repr(probe)])
    proc = subprocess.run(
        ["sh", "-c", f"{command} >&-"], env=ENV, capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 3, proc.stderr


def test_dry_run_into_a_closed_pipe_is_no_traceback() -> None:
    command = " ".join([*PYINIT, "--dry-run", "--", "true"])
    proc = subprocess.run(
        ["bash", "-c", f"{command} | head -c0; exit ${{PIPESTATUS[0]}}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_pid1_does_not_pin_its_start_up_directory(tmp_path: Path) -> None:
    out = tmp_path / "cwd"
    # The forwarded USR2 proves pyinit is past start-up before we look.
    proc = sandbox.run_pyinit(
        "--",
        "sh",
        "-c",
        f"trap 'readlink /proc/1/cwd > {out}; exit 0' USR2; kill -USR2 1; "
        "while :; do sleep 0.01; done",
        pid1=True,
        env=ENV,
        cwd=str(tmp_path),
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().strip() == "/"


def test_without_its_own_proc_pyinit_touches_no_foreign_process(tmp_path: Path) -> None:
    # unshare --pid --fork without --mount-proc: /proc shows the host's pids.
    # pyinit must notice and not signal (or wait for) anything by those pids.
    script = "sleep 30 & exit 0"
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", *PYINIT, "--stop-timeout", "1", "--", "sh", "-c", script],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "/proc is not this PID namespace's" in proc.stderr


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _only_child(pid: int) -> int:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    wait_for(lambda: path.read_text().split(), what=f"a child of {pid}")
    return int(path.read_text().split()[0])


def test_ctrl_z_with_signal_group_stops_the_target_too() -> None:
    """Not PID 1, --signal-group: the target's group is orphaned, so it gets SIGSTOP."""
    import fcntl
    import pty
    import termios

    master, slave = pty.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    # A shell (the session leader, ignoring TSTP itself) runs pyinit in its
    # foreground group, as an interactive shell's job would be.
    command = " ".join([*PYINIT, "--mode", "supervise", "--signal-group", "--", "sleep", "30"])
    shell = subprocess.Popen(
        ["sh", "-c", f"trap '' TSTP; {command}; :"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_tty,
        env=ENV,
    )
    os.close(slave)
    try:
        pyinit = _only_child(shell.pid)
        target = _only_child(pyinit)
        wait_for(lambda: Path(f"/proc/{target}/exe").resolve().name == "sleep", what="exec")
        os.write(master, b"\x1a")  # Ctrl-Z
        wait_for(lambda: _state(target) == "T", what="the target to stop")
        wait_for(lambda: _state(pyinit) == "T", what="pyinit to stop")
        os.kill(pyinit, signal.SIGCONT)
        wait_for(lambda: _state(target) != "T", what="the target to resume")
        os.kill(pyinit, signal.SIGTERM)
        assert shell.wait(timeout=20) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait(timeout=5)
        os.close(master)


@pytest.mark.parametrize(
    ("sent", "rewrite", "received"), [("TSTP", "HUP", "HUP"), ("TTIN", "USR1", "USR1")]
)
def test_rewrite_of_job_control_signal_wins_over_sigstop(
    tmp_path: Path, sent: str, rewrite: str, received: str
) -> None:
    """Not PID 1, --signal-group: --rewrite TSTP:HUP delivers HUP, not SIGSTOP (dumb-init's -r)."""
    got = tmp_path / "got"
    ready = tmp_path / "ready"
    script = (
        f"trap 'echo {received} >> {got}' {received}; touch {ready}; while :; do sleep 0.05; done"
    )
    flags = ["--mode", "supervise", "--signal-group", "--rewrite", f"{sent}:{rewrite}"]
    proc = subprocess.Popen(
        [*PYINIT, "-v", *flags, "--stop-timeout", "2", "--", "sh", "-c", script],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        target = _only_child(proc.pid)
        wait_for(ready.exists, what="the target")
        os.kill(proc.pid, signal.Signals["SIG" + sent])
        wait_for(lambda: got.exists() and got.read_text() == f"{received}\n", what="the rewrite")
        assert _state(target) != "T"
        # pyinit itself still stops, so a shell sees the job stop (as dumb-init does).
        wait_for(lambda: _state(proc.pid) == "T", what="pyinit to stop")
        os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: _state(proc.pid) != "T", what="pyinit to resume")
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert f"forwarded SIG{rewrite} to group {target}" in err
    assert "SIGSTOP" not in err
