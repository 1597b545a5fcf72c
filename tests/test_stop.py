"""The one stop: the budget the plan decides, the stop primitive, and what a user sees.

The budget and the primitive are tested in-process with plain numbers (no
processes, no sleeps); the two defects the budget fixes are reproduced from
outside, with pyinit as PID 1 of a PID namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from pidns import Namespace, run_pyinit, wait_for
from test_cli_sources import plan_for

from pyinit.plan.render import render_plan
from pyinit.plan.stop import StopBudget, StopDeadline, stop_budget, stop_schedule
from pyinit.stopping import kill_group, stop, stop_now

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

# --- the budget: pure numbers ------------------------------------------------------------


def test_the_default_budget_with_two_sidecars_and_a_post_hook() -> None:
    budget = StopBudget.for_stop(8.0, ("sidecar b", "sidecar a"), ("--post 'x'",))
    assert budget.share == 1.5
    assert [(t.who, t.signal_by) for t in budget.turns] == [
        ("main", 0.0),
        ("sidecar b", 1.5),
        ("sidecar a", 3.0),
        ("leftovers", 4.5),
    ]
    assert budget.kill_by == 6.0
    assert [(h.label, h.kill_by) for h in budget.hooks] == [("--post 'x'", 7.5)]
    assert budget.grace == 0.5


def test_a_plain_target_keeps_the_whole_deadline_before_sigkill() -> None:
    budget = StopBudget.for_stop(8.0, (), ())
    assert [(t.who, t.signal_by) for t in budget.turns] == [("main", 0.0), ("leftovers", 3.75)]
    assert budget.kill_by == StopDeadline(start=0.0, timeout=8.0).kill_at == 7.5


def test_the_reproduced_cases_leave_every_process_a_turn() -> None:
    # --stop-timeout 2, sidecars a and b: b by 0.375 s, a by 0.75 s, SIGKILL at 1.5 s.
    two = StopBudget.for_stop(2.0, ("sidecar b", "sidecar a"), ())
    assert [t.signal_by for t in two.turns] == [0.0, 0.375, 0.75, 1.125]
    assert two.kill_by == 1.5
    # --stop-timeout 4, two post hooks: the first is cut off in time for the second.
    four = StopBudget.for_stop(4.0, (), ("first", "second"))
    assert [h.kill_by for h in four.hooks] == [2.625, 3.5]


@given(
    timeout=st.floats(min_value=0.01, max_value=3600),
    items=st.integers(min_value=0, max_value=30),
    hooks=st.integers(min_value=0, max_value=10),
)
def test_every_process_gets_a_turn_of_grace_before_sigkill_and_all_ends_by_the_deadline(
    timeout: float, items: int, hooks: int
) -> None:
    budget = StopBudget.for_stop(
        timeout, tuple(f"sidecar s{i}" for i in range(items)), tuple(f"h{i}" for i in range(hooks))
    )
    signal_by = [t.signal_by for t in budget.turns]
    assert signal_by == sorted(signal_by) and signal_by[0] == 0
    # The last stop signal goes out one whole turn before the SIGKILL.
    assert budget.kill_by - signal_by[-1] == pytest.approx(budget.share)
    assert budget.share > 0
    kills = [budget.kill_by, *(h.kill_by for h in budget.hooks)]
    assert kills == sorted(kills)
    assert all(b - a == pytest.approx(budget.share) for a, b in itertools.pairwise(kills))
    assert kills[-1] == pytest.approx(timeout - budget.grace)
    assert budget.grace == min(0.5, timeout / 4)


def test_the_plan_budget_stops_items_in_reverse_start_order() -> None:
    plan = plan_for(
        [
            "--task",
            "t -- true",
            "--sidecar",
            "s -- true",
            "--post",
            "x",
            "--stop-timeout",
            "6",
            "true",
        ]
    )
    budget = stop_budget(plan)
    assert [t.who for t in budget.turns] == ["main", "sidecar s", "task t", "leftovers"]
    assert [h.label for h in budget.hooks] == ["--post 'x'"]
    assert budget.share == 1.1


def test_a_hook_schedule_terms_one_second_or_half_way_before_its_kill() -> None:
    term, kill = stop_schedule(10.0, 14.0)
    assert term == (13.0, signal.SIGTERM) and kill == (14.0, signal.SIGKILL)
    assert stop_schedule(10.0, 11.0)[0] == (10.5, signal.SIGTERM)
    assert stop_schedule(10.0, 9.0)[0] == (10.0, signal.SIGTERM)


# --- dry run -------------------------------------------------------------------------------


def test_dry_run_shows_the_stop_timeline() -> None:
    items = ["--sidecar", "a stop-signal=QUIT -- true", "--sidecar", "b -- true"]
    plan = plan_for([*items, "--post", "x", "--mode", "supervise", "true"])
    text = render_plan(plan, {})
    assert (
        "  stop budget: 8s in turns of 1.5s (seconds after the stop; a turn ends early once "
        "its process is gone)\n"
        "    at 0s      main: the forwarded stop signal (after a give-up: SIGTERM)\n"
        "    by 1.5s    sidecar b: SIGTERM\n"
        "    by 3s      sidecar a: SIGQUIT\n"
        "    by 4.5s    leftovers: SIGTERM\n"
        "    at 6s      SIGKILL to every process still running\n"
        "    by 7.5s    post hook --post 'x' cut off (SIGTERM up to 1s before, then SIGKILL)\n"
        "    at 8s      pyinit exits\n"
    ) in text
    data = json.loads(render_plan(plan, {}, as_json=True))
    assert data["stop_budget"]["kill_by"] == 6.0
    assert [t["who"] for t in data["stop_budget"]["turns"]] == [
        "main",
        "sidecar b",
        "sidecar a",
        "leftovers",
    ]


def test_exec_mode_has_no_stop_budget() -> None:
    plan = plan_for(["--mode", "exec", "true"])
    assert "stop budget" not in render_plan(plan, {})
    assert "stop_budget" not in json.loads(render_plan(plan, {}, as_json=True))


# --- the primitive, with a fake clock ------------------------------------------------------


class FakeProcess:
    """Ends by itself at ``ends_at`` (or on SIGKILL, if ``dies_of_kill``); a clock that jumps."""

    def __init__(self, ends_at: float = float("inf"), term_ends: float | None = None) -> None:
        self.now = 0.0
        self.ends_at = ends_at
        self.term_ends = term_ends  # seconds after the first signal, if it obeys it
        self.sent: list[tuple[float, int]] = []

    def send(self, sig: int) -> None:
        self.sent.append((self.now, sig))
        if sig == signal.SIGKILL:
            self.ends_at = min(self.ends_at, self.now)
        elif self.term_ends is not None:
            self.ends_at = min(self.ends_at, self.now + self.term_ends)

    def ended_by(self, when: float) -> bool:
        if self.ends_at <= when:
            self.now = max(self.now, self.ends_at)
            return True
        self.now = max(self.now, when)
        return False

    async def async_ended_by(self, when: float) -> bool:
        await trio.lowlevel.checkpoint()
        return self.ended_by(when)


def both(
    process_for: Callable[[], FakeProcess], first: int | None, term_at: float, kill_at: float
) -> list[tuple[bool, list[tuple[float, int]]]]:
    """The synchronous twin's and the async primitive's outcome on the same process."""
    results = []
    sync = process_for()
    results.append((stop_now(sync.send, sync.ended_by, first, term_at, kill_at, 9.0), sync.sent))
    fake = process_for()

    async def run() -> bool:
        ended_by: Callable[[float], Awaitable[bool]] = fake.async_ended_by
        return await stop(fake.send, ended_by, first, term_at, kill_at, 9.0)

    results.append((trio.run(run), fake.sent))
    return results


def test_a_process_that_obeys_its_stop_signal_never_gets_sigkill() -> None:
    for ended, sent in both(lambda: FakeProcess(term_ends=0.5), signal.SIGQUIT, 1.0, 5.0):
        assert ended and sent == [(1.0, signal.SIGQUIT)]


def test_a_process_ignoring_its_stop_signal_gets_sigkill_at_kill_at() -> None:
    for ended, sent in both(FakeProcess, signal.SIGTERM, 1.0, 5.0):
        assert ended and sent == [(1.0, signal.SIGTERM), (5.0, signal.SIGKILL)]


def test_a_process_gone_before_its_turn_gets_nothing() -> None:
    for ended, sent in both(lambda: FakeProcess(ends_at=0.5), signal.SIGTERM, 1.0, 5.0):
        assert ended and sent == []


def test_a_stop_signal_sent_already_is_not_sent_again() -> None:
    for ended, sent in both(FakeProcess, None, 0.0, 5.0):
        assert ended and sent == [(5.0, signal.SIGKILL)]


def test_a_process_surviving_sigkill_is_reported_after_reap_by() -> None:
    class Unkillable(FakeProcess):
        def send(self, sig: int) -> None:
            self.sent.append((self.now, sig))

    for ended, sent in both(Unkillable, signal.SIGTERM, 1.0, 5.0):
        assert not ended and sent == [(1.0, signal.SIGTERM), (5.0, signal.SIGKILL)]


def _kill_group_calls(monkeypatch: pytest.MonkeyPatch, reaped: bool) -> list[str]:
    """kill_group on a group that has no member left; which calls it made."""
    calls: list[str] = []

    def killpg(pgid: int, sig: int) -> None:
        calls.append("killpg")
        raise ProcessLookupError

    def kill(pid: int, sig: int) -> None:
        calls.append("kill")

    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(os, "kill", kill)
    kill_group(4242, signal.SIGKILL, reaped=reaped)
    return calls


def test_a_reaped_leader_s_pid_is_never_signalled_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After the reap the pid may be another process's: only its group (what it left) is signalled.
    assert _kill_group_calls(monkeypatch, reaped=True) == ["killpg"]


def test_a_live_process_that_leads_no_group_is_signalled_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _kill_group_calls(monkeypatch, reaped=False) == ["killpg", "kill"]


# --- the reproduced defects, from outside ----------------------------------------------------


def _trapping(name: str, log: Path, ready: Path) -> str:
    """A sidecar that records each TERM it gets in ``log`` and keeps running."""
    script = f"trap 'echo TERM {name} >> {log}' TERM; touch {ready}; while :; do sleep 0.05; done"
    return f'{name} -- sh -c "{script}"'


@needs_root
def test_a_main_ignoring_term_does_not_starve_the_sidecars_of_their_stop(tmp_path: Path) -> None:
    log = tmp_path / "signals"
    ready = [tmp_path / "a-ready", tmp_path / "b-ready", tmp_path / "main-ready"]
    main = f"trap '' TERM; touch {ready[2]}; while :; do sleep 0.05; done"
    with Namespace(
        [
            "-v", "--stop-timeout", "2",
            "--sidecar", _trapping("a", log, ready[0]),
            "--sidecar", _trapping("b", log, ready[1]),
            "--", "sh", "-c", main,
        ]
    ) as ns:  # fmt: skip
        for path in ready:
            wait_for(path.exists, what=path.name)
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGKILL, err
    # Each sidecar got its stop signal and lived to record it (each records on its own
    # schedule: the order they were sent in is pyinit's log's).
    assert sorted(log.read_text().splitlines()) == ["TERM a", "TERM b"], err
    actions = [line for line in err.splitlines() if "SIGTERM" in line or "SIGKILL" in line]
    stops = [line for line in actions if line.startswith("pyinit: stopping sidecar")]
    assert [line.split()[3] for line in stops] == ["b", "a"], err
    # ... and pyinit sent every stop signal before its first SIGKILL.
    first_kill = next(i for i, line in enumerate(actions) if "SIGKILL" in line)
    assert all(actions.index(line) < first_kill for line in stops), err


@needs_root
def test_a_hung_post_hook_is_cut_off_so_the_next_one_runs() -> None:
    code, out, err = run_pyinit(
        [
            "--stop-timeout", "4",
            "--post", "trap '' TERM; sleep 100",
            "--post", "echo second $PYINIT_EXIT_CODE",
            "--", "sh", "-c", "exit 3",
        ],
        timeout=30,
    )  # fmt: skip
    assert code == 3, err
    assert out.splitlines() == ["second 3"], err
    assert "not run" not in err
    assert "sending SIGKILL" in err


@needs_root
def test_leftovers_get_their_turn_while_a_slow_main_runs_and_its_children_stay_its_own(
    tmp_path: Path,
) -> None:
    log = tmp_path / "signals"
    orphan_ready, child_ready, main_ready = (tmp_path / n for n in ("orphan", "child", "main"))

    def recorder(name: str, ready: Path) -> str:
        return f"trap 'echo TERM {name} >> {log}' TERM; touch {ready}; while :; do sleep 0.05; done"

    main = (
        f'(sh -c "{recorder("orphan", orphan_ready)}" &); '
        f'sh -c "{recorder("child", child_ready)}" & '
        f"trap '' TERM; touch {main_ready}; while :; do sleep 0.05; done"
    )
    with Namespace(["-v", "--stop-timeout", "2", "--", "sh", "-c", main]) as ns:
        for path in (orphan_ready, child_ready, main_ready):
            wait_for(path.exists, what=path.name)
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGKILL, err
    # The orphan had its SIGTERM while the main still ran; the main's own child is the
    # main's to stop (it went with the main's group, by SIGKILL).
    assert log.read_text().splitlines() == ["TERM orphan"], err
    assert "leftover process(es) with SIGTERM" in err  # the orphan (and its sleep, if any)
