"""A refused fork is an event, not a crash (issue 16; docs/services.md, docs/design.md).

pyinit runs as PID 1 of a PID namespace inside a pids cgroup of its own; the
test lowers ``pids.max`` so that a fork fails with EAGAIN, exactly as in a
container whose pids limit is used up.  A sidecar's refused restart is logged
and retried after its backoff, within its budget; the main's status is still
pyinit's exit.  A main whose own fork is refused: one line, 125, nothing left.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sandbox
from pidns import TARGET_PYTHON, wait_for
from sandbox import PYINIT, UNSHARE_PID_SHARED_RUN

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups and namespaces")

REFUSED = "fork failed: Resource temporarily unavailable"


def _in_cgroup(group: Path, *args: str) -> list[str]:
    """argv: pyinit ARGS as PID 1 of a new PID namespace, everything in ``group``."""
    join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    # base_environment's PYINIT_CONTROL=none: no socket in the host's /run.
    return ["sh", "-c", join, str(group), *UNSHARE_PID_SHARED_RUN, *PYINIT, *args]


def _start(group: Path, stderr: Path, *args: str) -> subprocess.Popen[bytes]:
    sandbox.require_pid_namespace()
    with stderr.open("wb") as err:
        return subprocess.Popen(
            _in_cgroup(group, *args),
            env=sandbox.base_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextlib.contextmanager
def _running(group: Path, stderr: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`_start`, and whatever is still running at the end killed (a failed test)."""
    proc = _start(group, stderr, *args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def _wait(proc: subprocess.Popen[bytes], stderr: Path) -> int:
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise AssertionError(f"pyinit did not exit; stderr:\n{stderr.read_text()}") from None


#: A sidecar (python: no forks of its own): its first run waits for ``full``
#: and exits 7; later runs record ``run PID`` and ``stopped PID`` on TERM.
SIDECAR = """
import os, signal, sys, time
T = sys.argv[1]
if os.path.exists(T + "/first"):
    def stop(*_):
        open(T + "/log", "a").write(f"stopped {os.getpid()}\\n")
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    open(T + "/log", "a").write(f"run {os.getpid()}\\n")
    while True:
        time.sleep(1)
open(T + "/first", "w").write(str(os.getpid()))
while not os.path.exists(T + "/full"):
    time.sleep(0.01)
sys.exit(7)
"""

#: The main: exits 3 once ``done`` exists; records ``main stopped`` on TERM.
MAIN = """
import os, signal, sys, time
T = sys.argv[1]
def stop(*_):
    open(T + "/main", "a").write("main stopped\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
open(T + "/main-up", "w").close()
while not os.path.exists(T + "/done"):
    time.sleep(0.01)
sys.exit(3)
"""


def _sidecar_arg(tmp_path: Path, keys: str) -> str:
    # ready=: the loop starts it (not the launcher); the relay's writer
    # threads start with the loop, before the cgroup is full.
    script = tmp_path / "sidecar.py"
    script.write_text(SIDECAR)
    ready = f"ready=file:{tmp_path / 'first'}"
    return f"s {keys} {ready} log=raw -- {TARGET_PYTHON} {script} {tmp_path}"


def _main_args(tmp_path: Path) -> list[str]:
    script = tmp_path / "main.py"
    script.write_text(MAIN)
    return ["--", TARGET_PYTHON, str(script), str(tmp_path)]


def _fill(group: Path) -> None:
    """Leave ``group`` one pid short: the sidecar's exit frees none for its restart.

    (As if another process took every freed slot at once.)
    """
    (group / "pids.max").write_text(str(int((group / "pids.current").read_text()) - 1))


def test_a_refused_restart_is_retried_after_the_backoff_and_the_main_s_status_wins(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    errors = tmp_path / "stderr"
    with _running(
        pids_cgroup,
        errors,
        "--verbose",
        "--sidecar", _sidecar_arg(tmp_path, "backoff=0.1:0.2 max-restarts=100/60"),
        *_main_args(tmp_path),
    ) as proc:  # fmt: skip
        wait_for(lambda: (tmp_path / "main-up").exists(), what="the main")
        _fill(pids_cgroup)
        (tmp_path / "full").touch()
        wait_for(
            lambda: errors.read_text().count(f"could not start ({REFUSED})") >= 2,
            what="two refused restarts",
        )
        (pids_cgroup / "pids.max").write_text("max")
        wait_for(lambda: "run" in _read(tmp_path / "log"), what="the restart once forks work")
        (tmp_path / "done").touch()
        code = _wait(proc, errors)
    err = errors.read_text()
    assert code == 3, err
    assert "sidecar s could not start (fork failed: Resource temporarily unavailable): " in err
    assert "restarting in" in err
    assert "supervisor failed" not in err and "Traceback" not in err, err
    runs = _read(tmp_path / "log").split("\n")
    assert runs[0].startswith("run ") and runs[1] == f"stopped {runs[0].split()[1]}", (runs, err)


def test_refused_restarts_use_up_the_budget_and_the_container_stops_cleanly(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    errors = tmp_path / "stderr"
    with _running(
        pids_cgroup,
        errors,
        "--verbose",
        "--sidecar", _sidecar_arg(tmp_path, "backoff=0.05:0.1 max-restarts=3/60"),
        *_main_args(tmp_path),
    ) as proc:  # fmt: skip
        wait_for(lambda: (tmp_path / "main-up").exists(), what="the main")
        _fill(pids_cgroup)
        (tmp_path / "full").touch()
        code = _wait(proc, errors)
    err = errors.read_text()
    # The exit's restart and two more are refused: the budget of 3 is used
    # up, a give-up, with the main stopped by its stop signal (not SIGKILL).
    assert code == 125, err
    assert err.count("sidecar s exited (exit 7): restarting in") == 1, err
    assert err.count(f"sidecar s could not start ({REFUSED}): restarting in") == 2, err
    assert (
        f"sidecar s gave up (3 restarts within 60s used up; last {REFUSED}): stopping the container"
        in err
    )
    assert _read(tmp_path / "main") == "main stopped\n", err
    assert "supervisor failed" not in err, err


def test_a_main_whose_fork_is_refused_is_one_line_and_125(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    errors = tmp_path / "stderr"
    # unshare and pyinit: the cgroup has room for nothing more.
    (pids_cgroup / "pids.max").write_text("2")
    proc = _start(pids_cgroup, errors, "--", "true")
    code = _wait(proc, errors)
    assert code == 125
    assert errors.read_text() == f"pyinit: cannot start the target: {REFUSED}\n"
    assert (pids_cgroup / "cgroup.procs").read_text() == ""


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_refused_main_fork_beside_a_running_sidecar_still_ends_with_125(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    # unshare, pyinit and the early-started sidecar fill the cgroup: the main's
    # fork is refused, and so is the loop's thread.  No traceback, nothing left.
    errors = tmp_path / "stderr"
    (pids_cgroup / "pids.max").write_text("3")
    proc = _start(pids_cgroup, errors, "--sidecar", "s -- sleep 30", "--", "true")
    code = _wait(proc, errors)
    err = errors.read_text()
    assert code == 125, err
    assert err.startswith(f"pyinit: cannot start the target: {REFUSED}\n"), err
    assert "Traceback" not in err, err
    assert "supervisor failed: RuntimeError: can't start new thread" in err, err
    assert (pids_cgroup / "cgroup.procs").read_text() == ""


def test_a_stop_with_no_thread_to_be_had_still_stops_every_process(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    """The leftovers' scan runs in a worker thread; in a full cgroup none can start.

    The stop must go on (the scan then runs in the loop's own thread), not crash
    into the emergency stop's SIGKILL.
    """
    errors = tmp_path / "stderr"
    (tmp_path / "first").write_text("0")  # the sidecar runs for good from its first run
    with _running(
        pids_cgroup,
        errors,
        "--verbose",
        "--sidecar", _sidecar_arg(tmp_path, "restart=never"),
        *_main_args(tmp_path),
    ) as proc:  # fmt: skip
        wait_for(
            lambda: (tmp_path / "main-up").exists() and "run" in _read(tmp_path / "log"),
            what="the main and the sidecar",
        )
        # Two short: the main's and the sidecar's exits leave none for a thread.
        current = int((pids_cgroup / "pids.current").read_text())
        (pids_cgroup / "pids.max").write_text(str(current - 2))
        (tmp_path / "done").touch()
        code = _wait(proc, errors)
    err = errors.read_text()
    assert code == 3, err
    assert "supervisor failed" not in err and "Traceback" not in err, err
    assert "stopped " in _read(tmp_path / "log"), (err, _read(tmp_path / "log"))


def test_a_relayed_line_after_the_cgroup_filled_up_is_written_not_a_crash(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    """The relay's writer threads start with the loop, not at the first relayed line.

    A task that the loop starts once the cgroup is full (its fork takes the
    last pid) prints a line: relaying it needs no new thread.
    """
    errors, output = tmp_path / "stderr", tmp_path / "stdout"
    up = f"touch {tmp_path / 'a-up'}; exec sleep 60"
    args = [
        "--sidecar", f"a ready=file:{tmp_path / 'go'} log=raw -- sh -c '{up}'",
        "--task", "t -- echo hello from t",
        *_main_args(tmp_path),
    ]  # fmt: skip
    proc = _start_to(pids_cgroup, errors, output, *args)
    try:
        wait_for(lambda: (tmp_path / "a-up").exists(), what="sidecar a")
        # Room for the task's fork only: its exit frees the pid the main's fork takes.
        current = int((pids_cgroup / "pids.current").read_text())
        (pids_cgroup / "pids.max").write_text(str(current + 1))
        (tmp_path / "go").touch()
        wait_for(lambda: (tmp_path / "main-up").exists() or proc.poll() is not None, what="main")
        (tmp_path / "done").touch()
        code = _wait(proc, errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    err = errors.read_text()
    assert code == 3, err
    assert "t | hello from t\n" in output.read_text(), err
    assert "supervisor failed" not in err and "Traceback" not in err, err


def test_with_no_thread_for_the_relay_lines_are_written_by_the_loop(
    tmp_path: Path, pids_cgroup: Path
) -> None:
    # unshare, pyinit, the early-started sidecar, the main and the loop's
    # thread fill the cgroup: no writer thread can start for the relay.
    errors, output = tmp_path / "stderr", tmp_path / "stdout"
    (pids_cgroup / "pids.max").write_text("5")
    sidecar = "s -- sh -c 'echo one; echo two; exec sleep 60'"
    proc = _start_to(pids_cgroup, errors, output, "--sidecar", sidecar, *_main_args(tmp_path))
    try:
        wait_for(lambda: "s | two\n" in output.read_text() or proc.poll() is not None, what="lines")
        (tmp_path / "done").touch()
        code = _wait(proc, errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    err = errors.read_text()
    assert code == 3, err
    assert output.read_text() == "s | one\ns | two\n", err
    assert "supervisor failed" not in err and "Traceback" not in err, err


def _start_to(group: Path, stderr: Path, stdout: Path, *args: str) -> subprocess.Popen[bytes]:
    """:func:`_start` with pyinit's stdout in a file too."""
    sandbox.require_pid_namespace()
    with stderr.open("wb") as err, stdout.open("wb") as out:
        return subprocess.Popen(
            _in_cgroup(group, *args),
            env=sandbox.base_environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
