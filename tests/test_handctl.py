"""Sidecars stopped, started and restarted by hand (docs/services.md, "By hand").

pyinit runs as PID 1 of a PID namespace through a test-only entry
(:mod:`handctl_entry`) that calls ``ItemRun.stop_by_hand`` and friends on
the loop, as the control socket does.  Each sidecar records its own starts
and the stop signal it got, with its pid, in a file: what a user sees.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from pidns import Namespace, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

ENTRY = (sys.executable, str(Path(__file__).with_name("handctl_entry.py")))
#: The main: runs until SIGTERM.
MAIN = ["--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]


def recorder(log: Path, *, stop: str = "TERM", crash: Path | None = None) -> str:
    """A sidecar script: 'start PID' in ``log``, 'SIG PID' on its stop signal (and exits).

    ``crash``: it exits 3 once that file exists (and removes it).
    """
    crashing = f"[ -e {crash} ] && rm {crash} && exit 3; " if crash is not None else ""
    return (
        f"trap 'echo {stop} $$ >> {log}; exit 0' {stop}; echo start $$ >> {log}; "
        f"while :; do {crashing}sleep 0.05; done"
    )


def stubborn(log: Path) -> str:
    """A sidecar script that records its start and its TERM, and runs on: only SIGKILL ends it."""
    return (
        f"trap 'echo TERM $$ >> {log}' TERM; echo start $$ >> {log}; while :; do sleep 0.05; done"
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


class Hand:
    """pyinit as PID 1 with requests by hand through files (see handctl_entry)."""

    def __init__(self, tmp_path: Path, args: list[str]) -> None:
        self.dir = tmp_path / "hand"
        self.dir.mkdir()
        env = {**os.environ, "HANDCTL_DIR": str(self.dir)}
        self.ns = Namespace(args, env=env, entry=ENTRY)
        assert self.ns.init_pid  # known from the start: a failed test's teardown kills it
        self.sent = 0

    def send(self, request: str) -> int:
        """Send ``request``; its number, for :meth:`answer`."""
        number = self.sent
        self.sent += 1
        written = self.dir / f"req.{number}.tmp"
        written.write_text(request)
        written.rename(self.dir / f"req.{number}")
        return number

    def answer(self, number: int) -> str:
        """The answer to request ``number``: '0 LINE' or '1 LINE'."""
        answer = self.dir / f"resp.{number}"
        wait_for(answer.exists, what=f"the answer to request {number}")
        return answer.read_text()

    def ask(self, request: str) -> str:
        return self.answer(self.send(request))

    def __enter__(self) -> Hand:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ns.__exit__(*exc)


def forked(answer: str) -> bool:
    """A 'show' answer: the sidecar is starting, its run forked."""
    return answer.startswith("0 starting pid=") and "pid=None" not in answer


def started_pids(log: Path) -> list[int]:
    return [int(line.split()[1]) for line in lines(log) if line.startswith("start ")]


def new_run(answer: str, done: str, log: Path) -> int:
    """The pid in ``answer`` ('0 DONE (pid N)'), once that run has written its start line."""
    prefix = f"0 {done} (pid "
    assert answer.startswith(prefix) and answer.endswith(")"), answer
    pid = int(answer[len(prefix) : -1])
    # Answered once it has exec'd: its shell writes the line a moment later.
    wait_for(lambda: pid in started_pids(log), what=f"the start line of pid {pid}")
    return pid


def test_a_restart_by_hand_stops_with_the_stop_signal_starts_anew_and_spends_no_budget(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.log"
    crash = tmp_path / "crash"
    script = recorder(log, stop="USR1", crash=crash)
    sidecar = f'a stop-signal=USR1 max-restarts=1/60 backoff=0.1:0.1 -- sh -c "{script}"'
    with Hand(tmp_path, ["--sidecar", sidecar, *MAIN]) as hand:
        wait_for(lambda: started_pids(log), what="sidecar a")
        for turn in range(3):
            old = started_pids(log)[-1]
            new = new_run(hand.ask("restart a"), "restarted sidecar a", log)
            assert new != old
            assert lines(log)[-2:] == [f"USR1 {old}", f"start {new}"], turn
        assert hand.ask("show a") == f"0 running pid={new} restarts=0 total=0"
        crash.touch()  # its one restart of the budget is still there
        wait_for(lambda: len(started_pids(log)) == 5, what="the restart after the crash")
        assert hand.ask("show a") == f"0 running pid={started_pids(log)[-1]} restarts=1 total=1"
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert f"stopping sidecar a (pid {old}) with SIGUSR1 (by hand)" in err
    assert err.count("pyinit: sidecar a is back") == 4, err
    assert "gave up" not in err


def test_a_sidecar_stopped_by_hand_stays_down_until_started(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    sidecar = f'a backoff=0.2:0.2 -- sh -c "{recorder(log)}"'
    with Hand(tmp_path, ["--sidecar", sidecar, *MAIN]) as hand:
        wait_for(lambda: started_pids(log), what="sidecar a")
        (first,) = started_pids(log)
        assert hand.ask("stop a") == f"0 stopped sidecar a (was pid {first})"
        assert lines(log) == [f"start {first}", f"TERM {first}"]
        time.sleep(1.0)  # five times its backoff: no restart comes
        assert lines(log) == [f"start {first}", f"TERM {first}"]
        assert hand.ask("show a") == "0 stopped pid=None restarts=0 total=0"
        assert hand.ask("stop a") == "1 sidecar a is stopped already"
        second = new_run(hand.ask("start a"), "started sidecar a", log)
        assert started_pids(log) == [first, second]
        wait_for(lambda: hand.ask("show a").startswith("0 running"), what="sidecar a")
        assert hand.ask("start a") == f"1 sidecar a is running already (pid {second})"
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert lines(log) == [f"start {first}", f"TERM {first}", f"start {second}", f"TERM {second}"]
    assert err.count("stopping sidecar a") == 1, err  # the run stopped by hand is down already


def test_a_sidecar_stopped_by_hand_at_shutdown_is_not_stopped_again(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    with Hand(tmp_path, ["--sidecar", f'a -- sh -c "{recorder(log)}"', *MAIN]) as hand:
        wait_for(lambda: started_pids(log), what="sidecar a")
        assert hand.ask("stop a").startswith("0 stopped sidecar a")
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert len(lines(log)) == 2
    assert "still running" not in err


def test_an_exited_and_a_given_up_sidecar_can_be_started_again(tmp_path: Path) -> None:
    once = tmp_path / "once.log"
    flaky = tmp_path / "flaky.log"
    fixed = tmp_path / "fixed"
    flaky_script = f"echo start $$ >> {flaky}; [ -e {fixed} ] || exit 3; {recorder(flaky)}"
    args = [
        "--sidecar", f'once restart=never -- sh -c "echo start $$ >> {once}"',
        "--sidecar", f'flaky restart=on-failure max-restarts=0 on-giveup=ignore'
        f' -- sh -c "{flaky_script}"',
        *MAIN,
    ]  # fmt: skip
    with Hand(tmp_path, args) as hand:
        wait_for(lambda: hand.ask("show once").startswith("0 exited"), what="once's exit")
        wait_for(lambda: hand.ask("show flaky").startswith("0 gave-up"), what="flaky's give-up")
        new_run(hand.ask("start once"), "started sidecar once", once)
        assert len(started_pids(once)) == 2
        fixed.touch()
        new_run(hand.ask("start flaky"), "started sidecar flaky", flaky)
        wait_for(lambda: lines(flaky)[-1].startswith("start"), what="flaky's second start")
        assert hand.ask("show flaky").startswith("0 running")
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert err.count("sidecar flaky gave up") == 1, err  # its second run did not fail
    assert lines(flaky)[-1].startswith("TERM ")


def test_refused_requests_change_nothing(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    got_term = tmp_path / "got-term"
    main = f"trap 'touch {got_term}' TERM; while :; do sleep 0.05; done"
    args = [
        "--stop-timeout", "3",
        "--sidecar", f'a -- sh -c "{stubborn(log)}"',
        "--", "sh", "-c", main,
    ]  # fmt: skip
    with Hand(tmp_path, args) as hand:
        wait_for(lambda: started_pids(log), what="sidecar a")
        wait_for(lambda: hand.ask("show a").startswith("0 running"), what="sidecar a running")
        (pid,) = started_pids(log)
        assert hand.ask("start a") == f"1 sidecar a is running already (pid {pid})"
        stop = hand.send("stop a")  # it ignores TERM: SIGKILL after --stop-timeout
        wait_for(lambda: len(lines(log)) == 2, what="its TERM")
        assert hand.ask("stop a") == "1 sidecar a is being stopped already"
        assert hand.ask("restart a") == "1 sidecar a is being stopped already"
        assert hand.ask("show a") == f"0 stopping pid={pid} restarts=0 total=0"
        assert hand.answer(stop) == f"0 stopped sidecar a (was pid {pid})"
        assert hand.ask("show a") == "0 stopped pid=None restarts=0 total=0"
        second = new_run(hand.ask("restart a"), "started sidecar a", log)
        hand.ns.signal(signal.SIGTERM)
        wait_for(got_term.exists, what="the main's TERM")  # it ignores it: the stop goes on
        assert hand.ask("restart a") == "1 pyinit is stopping: cannot restart sidecar a"
        assert hand.ask("stop a") == "1 pyinit is stopping: cannot stop sidecar a"
        code, _, err = hand.ns.wait()
    assert code == 128 + signal.SIGKILL, err
    assert started_pids(log) == [pid, second]
    assert "sidecar a still running after 3s: sending SIGKILL" in err


def test_a_restart_by_hand_answers_once_execd_and_the_probe_says_when_it_is_back(
    tmp_path: Path,
) -> None:
    log, ready, go = tmp_path / "a.log", tmp_path / "ready", tmp_path / "go"
    script = (
        f"trap 'rm {ready}; exit 0' TERM; echo start $$ >> {log}; "
        f"while [ ! -e {go} ]; do sleep 0.05; done; rm {go}; touch {ready}; "
        "while :; do sleep 0.05; done"
    )
    sidecar = f'a ready=file:{ready} -- sh -c "{script}"'
    with Hand(tmp_path, ["--sidecar", sidecar, *MAIN]) as hand:
        go.touch()
        wait_for(lambda: hand.ask("show a").startswith("0 running"), what="a ready")
        new = new_run(hand.ask("restart a"), "restarted sidecar a", log)
        assert hand.ask("show a") == f"0 starting pid={new} restarts=0 total=0"
        go.touch()
        wait_for(lambda: hand.ask("show a").startswith("0 running"), what="a ready again")
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert f"pyinit: sidecar a is back (pid {new}): ready again (file:{ready})" in err


def test_a_stop_by_hand_before_the_first_readiness_lets_the_start_up_go_on(
    tmp_path: Path,
) -> None:
    main_ran = tmp_path / "main-ran"
    never = tmp_path / "never"
    args = [
        "--sidecar", f"slow ready=file:{never} -- sleep 60",
        "--", "sh", "-c", f"trap 'exit 0' TERM; touch {main_ran}; while :; do sleep 0.05; done",
    ]  # fmt: skip
    with Hand(tmp_path, args) as hand:
        wait_for(lambda: forked(hand.ask("show slow")), what="slow's fork")
        assert hand.ask("stop slow").startswith("0 stopped sidecar slow (was pid ")
        wait_for(main_ran.exists, what="the main")
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert "sidecar slow stopped by hand before it was ready: going on" in err


def test_a_restart_by_hand_under_way_when_the_container_stops_is_stopped_in_its_turn(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.log"
    args = ["--stop-timeout", "4", "--sidecar", f'a -- sh -c "{stubborn(log)}"', *MAIN]
    with Hand(tmp_path, args) as hand:
        wait_for(lambda: started_pids(log), what="sidecar a")
        (pid,) = started_pids(log)
        hand.send("restart a")  # it ignores TERM: the restart waits for SIGKILL
        wait_for(lambda: f"TERM {pid}" in lines(log), what="its TERM")
        hand.ns.signal(signal.SIGTERM)
        code, _, err = hand.ns.wait()
    assert code == 0, err
    assert started_pids(log) == [pid]  # not started again
    assert lines(log).count(f"TERM {pid}") == 1  # and not sent its stop-signal again
    assert f"stopping sidecar a (pid {pid}) with SIGTERM (by hand)" in err
    assert err.count("stopping sidecar a") == 1, err
    assert "sending SIGKILL" in err
