"""The reaper hands each status over once and forgets the pid (docs/design.md).

In-process tests with real short-lived children, then the PID-reuse defect of
issue 16 reproduced from outside: pyinit as PID 1 of a fresh PID namespace,
``ns_last_pid`` forcing a restarted sidecar onto the pid of its first run.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pidns import TARGET_PYTHON, run_pyinit

from pyinit.run.reaper import Reaper, Watched


def _child(code: int) -> int:
    """Fork a child that exits ``code`` at once."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid


def _reap_until(reaper: Reaper, watched: Watched) -> None:
    """Reap until ``watched`` is handed its status (bounded: the child exits at once)."""
    for _ in range(2000):
        reaper.reap()
        if watched.exited:
            return
        signal.sigtimedwait([signal.SIGCHLD], 0.005)
    raise AssertionError(f"pid {watched.pid} was never reaped")


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    # SIGCHLD blocked so sigtimedwait can take it; nothing of pytest's is a child.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    try:
        yield Reaper()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_a_watched_childs_status_is_handed_over_and_the_pid_forgotten(reaper: Reaper) -> None:
    with reaper.spawning() as watch:
        watched = watch(_child(7))
    assert watched.status is None or watched.exited  # reaped only by reap()
    assert reaper.tracked() == 1
    _reap_until(reaper, watched)
    assert os.waitstatus_to_exitcode(watched.status or 0) == 7
    assert reaper.tracked() == 0


def test_a_reused_pid_is_a_new_child_not_the_old_exit(reaper: Reaper) -> None:
    # The kernel may give a reaped pid to the next fork: watching that pid
    # again must start afresh, not report the exit of the process before.
    first = reaper.watch(_child(7))
    _reap_until(reaper, first)
    again = reaper.watch(first.pid)  # what a fork that got the same pid watches
    assert again.status is None
    assert first.status is not None and os.waitstatus_to_exitcode(first.status) == 7
    reaper.reap()
    assert again.status is None  # nothing stored for the pid was handed to it
    assert reaper.tracked() == 1


def test_an_unwatched_childs_status_is_not_kept(reaper: Reaper) -> None:
    orphan = _child(3)
    watched = reaper.watch(_child(0))
    _reap_until(reaper, watched)
    for _ in range(200):  # the orphan is reaped too, and nothing of it stays
        if not os.path.exists(f"/proc/{orphan}"):
            break
        reaper.reap()
        signal.sigtimedwait([signal.SIGCHLD], 0.005)
    assert not os.path.exists(f"/proc/{orphan}")
    assert reaper.tracked() == 0
    assert reaper.watch(orphan).status is None  # its exit was not kept for a later watch


def test_watching_a_pid_still_tracked_is_a_logged_internal_error(
    reaper: Reaper, capfd: pytest.CaptureFixture[str]
) -> None:
    pid = _child(0)
    reaper.watch(pid)
    second = reaper.watch(pid)
    assert capfd.readouterr().err == (
        f"pyinit: internal error: pid {pid} is watched already; the new watch wins\n"
    )
    _reap_until(reaper, second)
    assert reaper.tracked() == 0


def test_many_children_leave_nothing_behind(reaper: Reaper) -> None:
    # Histories are bounded: exec probes, hooks and restarts add nothing that stays.
    for _ in range(50):
        _reap_until(reaper, reaper.watch(_child(1)))
    assert reaper.tracked() == 0


# --- from outside: a restarted sidecar that gets its first run's pid --------------------


def test_a_restart_on_a_reused_pid_is_not_taken_for_the_old_exit(tmp_path: Path) -> None:
    # Run 1 of the sidecar waits until pyinit's loop runs and the main has
    # started (so no later fork or thread takes a pid), sets ns_last_pid so
    # that the next pid is its own, and exits 7.  The restart gets that pid.
    # The old reaper still held "exit 7" for it: the new run looked dead at
    # once and was SIGKILLed.  Run 2 must live until the shutdown stops it.
    # The threads take pids too: the main waits for the loop thread and the
    # relay's two writers (started with the loop); --control none (the
    # tests' default) has no server thread.
    first, log, go = tmp_path / "first", tmp_path / "log", tmp_path / "go"
    os.mkfifo(go)
    sidecar = (
        f"if [ -e {first} ]; then "
        f'trap "echo stopped \\$\\$ >> {log}; exit 0" TERM; echo run $$ >> {log}; '
        "while :; do sleep 0.05; done; fi; "
        f"read x < {go}; echo $$ > {first}; "
        "echo $(( $$ - 1 )) > /proc/sys/kernel/ns_last_pid; exit 7"
    )
    main = (
        "import os, sys, time\n"
        "while len(os.listdir('/proc/1/task')) < 4: time.sleep(0.01)\n"  # loop, 2 writers
        f"open({str(go)!r}, 'w').write('go\\n')\n"
        f"while not os.path.exists({str(log)!r}) or 'run' not in open({str(log)!r}).read():\n"
        "    time.sleep(0.02)\n"
        "time.sleep(0.3)\n"
        "sys.exit(3)\n"
    )
    code, _, err = run_pyinit(
        [
            "--quiet",
            "--sidecar", f"s backoff=0.05:1 log=raw -- sh -c '{sidecar}'",
            "--", TARGET_PYTHON, "-c", main,
        ]
    )  # fmt: skip
    assert code == 3, err
    pid = int(first.read_text())
    # The reuse happened (else this test proves nothing), and that run lived.
    assert log.read_text().split("\n") == [f"run {pid}", f"stopped {pid}", ""], err
    assert "pyinit:" not in err, err  # no give-up, no error (sh may say "Terminated")
