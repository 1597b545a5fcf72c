"""Restart decisions (docs/services.md) against a fake clock."""

from __future__ import annotations

import signal

from hypothesis import given, settings
from hypothesis import strategies as st
from plan_helpers import plan_for

from pyinit.run.restart import (
    DONE,
    FAILED_START,
    GIVE_UP,
    RESTART,
    RestartTracker,
    giveup_exit_code,
    random_fraction,
)


def exit_status(code: int) -> int:
    """A wait status for a normal exit with ``code``."""
    return code << 8


def killed_status(signum: int) -> int:
    """A wait status for a death by ``signum``."""
    return signum


def tracker(
    restart: str = "always", backoff: str = "0.5:30", budget: str = "5/60"
) -> RestartTracker:
    """The tracker of a sidecar planned with these keys, without jitter."""
    keys = f"restart={restart} backoff={backoff} max-restarts={budget}"
    (item,) = plan_for(["--sidecar", f"s {keys} -- x", "--", "main"]).items
    t = RestartTracker.for_item(item)
    t.random = no_jitter
    return t


def no_jitter() -> float:
    """The random source that leaves every delay as it is."""
    return 0.5


def test_backoff_doubles_to_max_then_gives_up_with_last_status() -> None:
    t = tracker(backoff="0.5:4", budget="5/60")
    now = 0.0
    t.started(now)
    delays = []
    while True:
        now += 0.1  # crashes quickly
        decision = t.exited(exit_status(3), now)
        if decision.action != RESTART:
            break
        delays.append(decision.delay)
        now += decision.delay
        t.started(now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert decision.action == GIVE_UP
    assert decision.exit_code == 3


def test_long_run_resets_backoff() -> None:
    t = tracker(backoff="1:8", budget="100/60")
    t.started(0.0)
    assert t.exited(exit_status(1), 0.1).delay == 1
    t.started(1.1)
    assert t.exited(exit_status(1), 1.2).delay == 2
    t.started(3.2)
    assert t.exited(exit_status(1), 3.3).delay == 4
    t.started(7.3)
    assert t.exited(exit_status(1), 7.3 + 8).delay == 1  # ran for backoff_max seconds


def test_budget_is_per_window() -> None:
    t = tracker(backoff="1:1", budget="2/10")
    t.started(0.0)
    assert t.exited(exit_status(1), 0.0).action == RESTART  # restart at 1
    t.started(1.0)
    assert t.exited(exit_status(1), 1.0).action == RESTART  # restart at 2
    t.started(2.0)
    assert t.exited(exit_status(1), 2.0).action == GIVE_UP  # a third within 10 s
    # Had it waited, the window would have slid past the first restarts.
    t2 = tracker(backoff="1:1", budget="2/10")
    t2.started(0.0)
    t2.exited(exit_status(1), 0.0)
    t2.started(1.0)
    t2.exited(exit_status(1), 1.0)
    t2.started(2.0)
    assert t2.exited(exit_status(1), 11.5).action == RESTART


def test_on_failure_stays_down_after_clean_exit() -> None:
    t = tracker("on-failure")
    t.started(0.0)
    assert t.exited(exit_status(0), 1.0).action == DONE
    t = tracker("on-failure")
    t.started(0.0)
    assert t.exited(killed_status(signal.SIGKILL), 1.0).action == RESTART


def test_never_gives_up_on_failure_and_is_done_on_success() -> None:
    t = tracker("never")
    t.started(0.0)
    decision = t.exited(killed_status(signal.SIGSEGV), 1.0)
    assert decision.action == GIVE_UP
    assert decision.exit_code == 128 + signal.SIGSEGV
    t = tracker("never")
    t.started(0.0)
    assert t.exited(exit_status(0), 1.0).action == DONE


def test_always_counts_clean_exits_and_gives_up_with_1() -> None:
    t = tracker("always", budget="0/60")
    t.started(0.0)
    decision = t.exited(exit_status(0), 1.0)
    assert decision.action == GIVE_UP
    assert decision.exit_code == 1


def test_giveup_exit_code_rules() -> None:
    assert giveup_exit_code(exit_status(0)) == 1
    assert giveup_exit_code(exit_status(42)) == 42
    assert giveup_exit_code(killed_status(signal.SIGTERM)) == 128 + signal.SIGTERM


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.floats(min_value=0, max_value=50), min_size=1, max_size=40),
    codes=st.lists(st.integers(min_value=0, max_value=3), min_size=40, max_size=40),
    count=st.integers(min_value=0, max_value=6),
    window=st.floats(min_value=1, max_value=100),
    low=st.floats(min_value=0, max_value=2),
    high_extra=st.floats(min_value=0, max_value=30),
    policy=st.sampled_from(["always", "on-failure", "never"]),
)
def test_properties(
    runs: list[float],
    codes: list[int],
    count: int,
    window: float,
    low: float,
    high_extra: float,
    policy: str,
) -> None:
    """Never more than N restarts in any window; delays within bounds; the right actions."""
    high = low + high_extra
    t = RestartTracker(policy, low, high, count, window)
    now = 0.0
    starts = [now]
    t.started(now)
    for run, code in zip(runs, codes, strict=False):
        now += run
        decision = t.exited(exit_status(code), now)
        if decision.action == RESTART:
            assert low <= decision.delay <= high
            assert policy == "always" or code != 0
            assert policy != "never"
            now += decision.delay
            starts.append(now)
            t.started(now)
            continue
        if decision.action == DONE:
            assert code == 0 and policy != "always"
        else:
            assert decision.exit_code == (code or 1)
        break
    restarts = starts[1:]
    for i, first in enumerate(restarts):
        within = [r for r in restarts[i:] if r - first < window]
        assert len(within) <= count


def test_staying_down_before_the_first_readiness_is_a_give_up() -> None:
    for policy in ("on-failure", "never"):
        t = tracker(policy)
        t.started(0.0)
        decision = t.exited(exit_status(0), 1.0, ready=False)
        assert (decision.action, decision.exit_code) == (GIVE_UP, 1), policy
        assert decision.reason == f"restart={policy} after a clean exit"
    t = tracker("on-failure")
    t.started(0.0)
    assert t.exited(exit_status(3), 1.0, ready=False).action == RESTART
    t = tracker("never")
    t.started(0.0)
    assert t.exited(exit_status(7), 1.0, ready=False).exit_code == 7


# --- jitter, a bounded history, a refused fork -------------------------------------------


def test_jitter_moves_each_delay_by_up_to_a_fifth_within_the_bounds() -> None:
    def delays(fraction: float) -> list[float]:
        t = RestartTracker("always", 1.0, 8.0, 100, 60.0, lambda: fraction)
        now, got = 0.0, []
        t.started(now)
        for _ in range(5):
            decision = t.exited(exit_status(1), now)
            got.append(decision.delay)
            now += decision.delay
            t.started(now)
        return got

    # The doubling itself is not moved: 1, 2, 4, 8, 8 underneath.
    assert delays(0.0) == [1.0, 1.6, 3.2, 6.4, 6.4]  # -20%, never below MIN
    assert delays(0.5) == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert delays(0.999999) == [1.2, 2.4, 4.8, 8.0, 8.0]  # +20%, never above MAX


def test_ten_sidecars_failing_together_do_not_restart_in_lockstep() -> None:
    trackers = [RestartTracker("always", 0.5, 30.0, 5, 60.0) for _ in range(10)]
    for t in trackers:
        t.started(0.0)
    delays = [t.exited(exit_status(1), 1.0).delay for t in trackers]
    assert all(0.5 <= d <= 0.6 for d in delays), delays
    assert len(set(delays)) > 1, delays  # all equal: 1 chance in 101**9


def test_the_random_source_is_uniform_in_zero_to_one() -> None:
    values = [random_fraction() for _ in range(1000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert min(values) < 0.1 and max(values) > 0.9


def test_the_restart_history_keeps_only_the_window() -> None:
    t = tracker(backoff="1:1", budget="10/30")
    now = 0.0
    t.started(now)
    for _ in range(1000):  # a sidecar crashing every 5 s for over an hour
        now += 4.0
        decision = t.exited(exit_status(1), now)
        assert decision.action == RESTART
        now += decision.delay
        t.started(now)
    assert len(t.restart_times) <= 6
    assert t.restarts_within_window(now) == len(t.restart_times)


def test_a_refused_fork_is_a_failed_run_with_125() -> None:
    # on-failure restarts it, the budget counts it, a give-up exits 125.
    t = tracker("on-failure", backoff="0.1:0.1", budget="1/60")
    t.started(0.0)
    assert t.exited(FAILED_START, 0.0).action == RESTART
    t.started(0.1)
    decision = t.exited(FAILED_START, 0.1)
    assert (decision.action, decision.exit_code) == (GIVE_UP, 125)


def test_a_start_by_hand_is_no_restart_and_spends_no_budget() -> None:
    t = tracker(backoff="1:8", budget="2/60")
    t.started(0.0)
    assert t.exited(exit_status(1), 1.0).action == RESTART
    t.started(2.0)  # the policy's restart
    for now in (3.0, 4.0, 5.0, 6.0):  # pyinitctl restart, four times
        t.started(now, by_hand=True)
    assert (t.restarts_within_window(6.0), t.total_restarts, t.restart_times) == (1, 1, [2.0])
    decision = t.exited(exit_status(1), 7.0)  # the second restart is still in the budget
    assert (decision.action, decision.delay) == (RESTART, 2.0)
    t.started(9.0)
    assert t.total_restarts == 2
    assert t.exited(exit_status(1), 10.0).action == GIVE_UP


def test_a_fresh_budget_forgets_the_restarts_and_the_backoff_but_not_the_total() -> None:
    t = tracker(backoff="1:8", budget="1/60")
    t.started(0.0)
    assert t.exited(exit_status(1), 0.5).action == RESTART
    t.started(1.5)
    assert t.exited(exit_status(1), 2.0).action == GIVE_UP
    t.fresh_budget()  # pyinitctl start of the given-up sidecar
    t.started(3.0, by_hand=True)
    assert (t.restart_times, t.total_restarts) == ([], 1)
    decision = t.exited(exit_status(1), 3.5)
    assert (decision.action, decision.delay) == (RESTART, 1.0)  # backoff from MIN again
    t.started(4.5)
    assert (t.restarts_within_window(4.5), t.total_restarts) == (1, 2)
