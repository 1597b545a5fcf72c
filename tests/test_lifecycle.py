"""The per-process state machine (pyinit.run.lifecycle): a table of state x event, a fake clock.

No process, no sleep: a :class:`Life` in each state meets each event, and
the resulting state and actions are checked against the table below; then
a fake runtime drives whole lives (a sidecar crashing into its restart
budget, a main stopped and killed) the way the drivers do.
"""

from __future__ import annotations

import signal

import pytest

from pyinit.run import lifecycle as lc
from pyinit.run.restart import RestartTracker

NOW = 100.0
PID = 42
EXIT_3 = 3 << 8

STOP = lc.Stop(first_signal=signal.SIGTERM, term_at=100.0, kill_at=105.0, reap_by=108.0)
RUN_STOP = lc.RunStop(first_signal=signal.SIGTERM, term_at=100.0, kill_at=105.0, reap_by=108.0)
RESTART_EXIT = lc.Exited(status=EXIT_3, decision=lc.RESTART, delay=2.0, exit_code=None)
DONE_EXIT = lc.exited(EXIT_3)
GIVEUP_STOP = lc.Exited(status=EXIT_3, decision=lc.GIVE_UP, delay=0.0, exit_code=3)
GIVEUP_IGNORE = lc.Exited(status=EXIT_3, decision=lc.GIVE_UP, delay=0.0, exit_code=None)

EVENTS: dict[str, lc.Event] = {
    "spawned": lc.Spawned(pid=PID),
    "ready": lc.Ready(),
    "exit->restart": RESTART_EXIT,
    "exit->done": DONE_EXIT,
    "exit->giveup(stop)": GIVEUP_STOP,
    "exit->giveup(ignore)": GIVEUP_IGNORE,
    "stop": STOP,
    "sent TERM": lc.Signalled(signum=signal.SIGTERM),
    "sent KILL": lc.Signalled(signum=signal.SIGKILL),
    "backoff over": lc.BackoffOver(),
}

#: state -> event -> (next state, actions); "=" means unchanged, no action.
SAME = ("=", ())
TABLE: dict[str, dict[str, tuple[str, tuple[lc.Action, ...]]]] = {
    lc.STARTING: {
        "spawned": (lc.STARTING, ()),
        "ready": (lc.RUNNING, ()),
        "exit->restart": (lc.BACKOFF, (lc.WaitBackoff(until=NOW + 2.0),)),
        "exit->done": (lc.EXITED, ()),
        "exit->giveup(stop)": (lc.GAVE_UP, (lc.BeginStop(exit_code=3),)),
        "exit->giveup(ignore)": (lc.GAVE_UP, ()),
        "stop": (lc.STOPPING, (RUN_STOP,)),
        "sent TERM": SAME,
        "sent KILL": SAME,
        "backoff over": SAME,
    },
    lc.RUNNING: {
        "spawned": SAME,
        "ready": SAME,
        "exit->restart": (lc.BACKOFF, (lc.WaitBackoff(until=NOW + 2.0),)),
        "exit->done": (lc.EXITED, ()),
        "exit->giveup(stop)": (lc.GAVE_UP, (lc.BeginStop(exit_code=3),)),
        "exit->giveup(ignore)": (lc.GAVE_UP, ()),
        "stop": (lc.STOPPING, (RUN_STOP,)),
        "sent TERM": SAME,
        "sent KILL": SAME,
        "backoff over": SAME,
    },
    lc.BACKOFF: {
        "spawned": (lc.STARTING, ()),
        "ready": SAME,
        "exit->restart": SAME,
        "exit->done": SAME,
        "exit->giveup(stop)": SAME,
        "exit->giveup(ignore)": SAME,
        "stop": (lc.STOPPED, (lc.CancelBackoff(),)),
        "sent TERM": SAME,
        "sent KILL": SAME,
        "backoff over": (lc.STARTING, (lc.StartRun(),)),
    },
    lc.STOPPING: {
        "spawned": SAME,
        "ready": SAME,
        **{e: (lc.STOPPED, ()) for e in EVENTS if e.startswith("exit")},
        "stop": SAME,
        "sent TERM": SAME,
        "sent KILL": (lc.KILLING, ()),
        "backoff over": SAME,
    },
    lc.KILLING: {
        "spawned": SAME,
        "ready": SAME,
        **{e: (lc.STOPPED, ()) for e in EVENTS if e.startswith("exit")},
        "stop": SAME,
        "sent TERM": SAME,
        "sent KILL": SAME,
        "backoff over": SAME,
    },
    **{final: dict.fromkeys(EVENTS, SAME) for final in (lc.STOPPED, lc.EXITED, lc.GAVE_UP)},
}


def life_in(state: str) -> lc.Life:
    """A life that reached ``state`` earlier (since 1.0), with a running pid where one runs."""
    pid = PID if state in lc.ALIVE else None
    return lc.Life(name="sidecar db", state=state, since=1.0, pid=pid, last_status=None, starts=1)


def test_the_table_covers_every_state_and_event() -> None:
    assert set(TABLE) == set(lc.STATES)
    for row in TABLE.values():
        assert set(row) == set(EVENTS)


@pytest.mark.parametrize(
    ("state", "event"), [(s, e) for s in lc.STATES for e in EVENTS], ids=lambda x: str(x)
)
def test_transition_table(state: str, event: str) -> None:
    before = life_in(state)
    after, actions = lc.transition(before, EVENTS[event], NOW)
    expected_state, expected_actions = TABLE[state][event]
    if expected_state == "=":
        assert after == before
        assert actions == ()
        return
    assert after.state == expected_state
    assert actions == expected_actions
    assert after.since == (NOW if expected_state != state else before.since)
    if expected_state in lc.ALIVE and event != "backoff over":
        assert after.pid == PID
    else:
        assert after.pid is None
    if event.startswith("exit"):
        assert after.last_status == EXIT_3


def test_a_stop_before_the_first_fork_stops_nothing() -> None:
    life = lc.Life.new("sidecar db", 0.0)
    after, actions = lc.transition(life, STOP, NOW)
    assert (after.state, actions) == (lc.STOPPED, ())


def test_ready_counts_only_for_a_forked_run() -> None:
    life = lc.Life.new("main", 0.0)
    assert lc.transition(life, lc.Ready(), NOW) == (life, ())


class FakeRuntime:
    """What a driver does, recorded: the actions carried out against a fake clock."""

    def __init__(self, name: str) -> None:
        self.now = 0.0
        self.tracked = lc.Tracked(name, self.now)
        self.next_pid = 100
        self.done: list[lc.Action] = []

    def feed(self, event: lc.Event) -> tuple[lc.Action, ...]:
        actions = self.tracked.feed(event, self.now)
        self.done.extend(actions)
        return actions

    def start(self) -> None:
        self.next_pid += 1
        self.feed(lc.Spawned(pid=self.next_pid))
        self.feed(lc.Ready())


def test_a_crashing_sidecar_backs_off_restarts_and_gives_up_within_its_budget() -> None:
    rt = FakeRuntime("sidecar db")
    policy = RestartTracker("always", 0.5, 4.0, 3, 60.0, lambda: 0.5)
    rt.start()
    policy.started(rt.now)
    states = []
    while True:
        rt.now += 0.1
        decision = policy.exited(EXIT_3, rt.now)
        code = decision.exit_code if decision.action == lc.GIVE_UP else None
        actions = rt.feed(
            lc.Exited(status=EXIT_3, decision=decision.action, delay=decision.delay, exit_code=code)
        )
        states.append(rt.tracked.state)
        if rt.tracked.state != lc.BACKOFF:
            break
        (wait,) = actions
        assert isinstance(wait, lc.WaitBackoff)
        rt.now = wait.until
        assert rt.feed(lc.BackoffOver()) == (lc.StartRun(),)
        rt.start()
        policy.started(rt.now)
    assert states == [lc.BACKOFF, lc.BACKOFF, lc.BACKOFF, lc.GAVE_UP]
    assert rt.tracked.life.starts == 4
    assert rt.done[-1] == lc.BeginStop(exit_code=3)
    assert rt.tracked.life.since == rt.now


def test_a_main_that_ignores_its_stop_signal_is_killed_then_stopped() -> None:
    rt = FakeRuntime("main")
    rt.start()
    rt.now = 10.0
    (stop,) = rt.feed(lc.Stop(first_signal=None, term_at=10.0, kill_at=17.5, reap_by=18.0))
    assert stop == lc.RunStop(first_signal=None, term_at=10.0, kill_at=17.5, reap_by=18.0)
    assert rt.tracked.state == lc.STOPPING
    rt.now = 17.5
    rt.feed(lc.Signalled(signum=signal.SIGKILL))
    assert (rt.tracked.state, rt.tracked.life.since) == (lc.KILLING, 17.5)
    rt.now = 17.51
    rt.feed(lc.exited(signal.SIGKILL))
    life = rt.tracked.life
    assert (life.state, life.pid, life.last_status) == (lc.STOPPED, None, signal.SIGKILL)
