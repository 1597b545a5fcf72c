"""The per-process state machine (pyinit.run.lifecycle): a table of state x event, a fake clock.

No process, no sleep: a :class:`Life` in each state meets each event, and
the resulting state and actions are checked against the table below (and
the one for a stop by hand under way); then a fake runtime drives whole
lives (a sidecar crashing into its restart budget, a main stopped and
killed, sidecars steered by hand) the way the drivers do.
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
HAND = {"first_signal": signal.SIGTERM, "term_at": 100.0, "kill_at": 108.0, "reap_by": 108.5}
STOP_BY_HAND = lc.StopByHand(**HAND)
RESTART_BY_HAND = lc.RestartByHand(**HAND)
DEAD = lc.Dead(**HAND)
RUN_STOP_BY_HAND = lc.RunStop(**HAND)
#: The container's stop turn for one already being stopped by hand: awaited, SIGKILL at 105.
RUN_STOP_IN_TURN = lc.RunStop(first_signal=None, term_at=100.0, kill_at=105.0, reap_by=108.0)
START_NOW = lc.StartRun(by_hand=True)
FRESH_START = (lc.FreshBudget(), START_NOW)

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
    "stop by hand": STOP_BY_HAND,
    "start by hand": lc.StartByHand(),
    "restart by hand": RESTART_BY_HAND,
    "dead": DEAD,
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
        "stop by hand": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
        "start by hand": SAME,
        "restart by hand": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
        "dead": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
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
        "stop by hand": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
        "start by hand": SAME,
        "restart by hand": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
        "dead": (lc.STOPPING, (RUN_STOP_BY_HAND,)),
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
        "backoff over": (lc.STARTING, (lc.StartRun(by_hand=False),)),
        "stop by hand": (lc.STOPPED, (lc.CancelBackoff(),)),
        "start by hand": (lc.STARTING, (lc.CancelBackoff(), START_NOW)),
        "restart by hand": (lc.STARTING, (lc.CancelBackoff(), START_NOW)),
        "dead": SAME,
    },
    lc.STOPPING: {
        "spawned": SAME,
        "ready": SAME,
        **{e: (lc.STOPPED, ()) for e in EVENTS if e.startswith("exit")},
        "stop": SAME,
        "sent TERM": SAME,
        "sent KILL": (lc.KILLING, ()),
        "backoff over": SAME,
        "stop by hand": SAME,
        "start by hand": SAME,
        "restart by hand": SAME,
        "dead": SAME,
    },
    lc.KILLING: {
        "spawned": SAME,
        "ready": SAME,
        **{e: (lc.STOPPED, ()) for e in EVENTS if e.startswith("exit")},
        "stop": SAME,
        "sent TERM": SAME,
        "sent KILL": SAME,
        "backoff over": SAME,
        "stop by hand": SAME,
        "start by hand": SAME,
        "restart by hand": SAME,
        "dead": SAME,
    },
    **{
        final: {
            **dict.fromkeys(EVENTS, SAME),
            "start by hand": (lc.STARTING, FRESH_START),
            "restart by hand": (lc.STARTING, FRESH_START),
        }
        for final in (lc.STOPPED, lc.EXITED, lc.GAVE_UP)
    },
}

#: (state, by_hand) of a stop by hand under way -> event -> (next state, actions).
BY_HAND_TABLE: dict[tuple[str, str], dict[str, tuple[str, tuple[lc.Action, ...]]]] = {
    (state, hand): {
        **dict.fromkeys(EVENTS, SAME),
        **{
            e: (lc.STARTING, (START_NOW,)) if hand == lc.HAND_RESTART else (lc.STOPPED, ())
            for e in EVENTS
            if e.startswith("exit")
        },
        "stop": (state, (RUN_STOP_IN_TURN,)),
        "sent KILL": (lc.KILLING, ()) if state == lc.STOPPING else SAME,
    }
    for state in (lc.STOPPING, lc.KILLING)
    for hand in (lc.HAND_STOP, lc.HAND_RESTART)
}
#: A dead run being stopped: its end gets the restart policy's decision, as a crash does.
BY_HAND_TABLE.update(
    {
        (state, lc.DEAD_RESTART): {
            **dict.fromkeys(EVENTS, SAME),
            **{e: TABLE[lc.RUNNING][e] for e in EVENTS if e.startswith("exit")},
            "stop": (state, (RUN_STOP_IN_TURN,)),
            "sent KILL": (lc.KILLING, ()) if state == lc.STOPPING else SAME,
        }
        for state in (lc.STOPPING, lc.KILLING)
    }
)


def life_in(state: str, by_hand: str | None = None) -> lc.Life:
    """A life that reached ``state`` earlier (since 1.0), with a running pid where one runs."""
    pid = PID if state in lc.ALIVE else None
    return lc.Life(
        name="sidecar db",
        state=state,
        since=1.0,
        pid=pid,
        last_status=None,
        starts=1,
        by_hand=by_hand,
    )


def test_the_tables_cover_every_state_and_event() -> None:
    assert set(TABLE) == set(lc.STATES)
    for row in [*TABLE.values(), *BY_HAND_TABLE.values()]:
        assert set(row) == set(EVENTS)


def check(before: lc.Life, event: str, expected: tuple[str, tuple[lc.Action, ...]]) -> lc.Life:
    """``event`` on ``before`` gives the expected state and actions; the life after."""
    after, actions = lc.transition(before, EVENTS[event], NOW)
    expected_state, expected_actions = expected
    if expected_state == "=":
        assert after == before
        assert actions == ()
        return after
    assert after.state == expected_state
    assert actions == expected_actions
    assert after.since == (NOW if expected_state != before.state else before.since)
    if event == "spawned":
        assert after.pid == PID
    elif event.startswith("exit"):
        assert (after.pid, after.last_status, after.by_hand) == (None, EXIT_3, None)
    else:
        assert after.pid == before.pid
    return after


@pytest.mark.parametrize(
    ("state", "event"), [(s, e) for s in lc.STATES for e in EVENTS], ids=lambda x: str(x)
)
def test_transition_table(state: str, event: str) -> None:
    after = check(life_in(state), event, TABLE[state][event])
    hand = {
        "stop by hand": lc.HAND_STOP,
        "restart by hand": lc.HAND_RESTART,
        "dead": lc.DEAD_RESTART,
    }.get(event)
    assert after.by_hand == (hand if after.state == lc.STOPPING != state else None)


@pytest.mark.parametrize(
    ("situation", "event"), [(s, e) for s in BY_HAND_TABLE for e in EVENTS], ids=lambda x: str(x)
)
def test_transition_table_while_stopped_by_hand(situation: tuple[str, str], event: str) -> None:
    before = life_in(*situation)
    after = check(before, event, BY_HAND_TABLE[situation][event])
    if event == "stop":  # the container's stop: it stays down whatever the hand asked for
        assert after.by_hand is None
    elif not event.startswith("exit"):
        assert after.by_hand == before.by_hand


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
        assert rt.feed(lc.BackoffOver()) == (lc.StartRun(by_hand=False),)
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


def crash(rt: FakeRuntime, policy: RestartTracker) -> tuple[lc.Action, ...]:
    """The run exits 3 and the policy's decision is fed, as ItemRun does."""
    decision = policy.exited(EXIT_3, rt.now)
    code = decision.exit_code if decision.action == lc.GIVE_UP else None
    event = lc.Exited(status=EXIT_3, decision=decision.action, delay=decision.delay, exit_code=code)
    return rt.feed(event)


def by_hand(event: type[lc.StopByHand | lc.RestartByHand], now: float) -> lc.Event:
    return event(first_signal=signal.SIGTERM, term_at=now, kill_at=now + 8.0, reap_by=now + 8.5)


def test_restarts_by_hand_spend_no_budget() -> None:
    rt = FakeRuntime("sidecar db")
    policy = RestartTracker("always", 1.0, 1.0, 1, 60.0, lambda: 0.5)
    rt.start()
    policy.started(rt.now)
    for _ in range(5):  # pyinitctl restart db, five times
        rt.now += 1.0
        (stop,) = rt.feed(by_hand(lc.RestartByHand, rt.now))
        assert stop.first_signal == signal.SIGTERM
        assert rt.feed(lc.exited(signal.SIGTERM)) == (lc.StartRun(by_hand=True),)
        rt.start()
        policy.started(rt.now, by_hand=True)
    assert (rt.tracked.state, rt.tracked.life.starts, policy.total_restarts) == (lc.RUNNING, 6, 0)
    rt.now += 1.0
    (wait,) = crash(rt, policy)  # its one restart of the budget is still there
    assert isinstance(wait, lc.WaitBackoff)


def test_a_sidecar_stopped_by_hand_in_its_backoff_stays_down_until_a_start() -> None:
    rt = FakeRuntime("sidecar db")
    policy = RestartTracker("always", 2.0, 2.0, 5, 60.0, lambda: 0.5)
    rt.start()
    policy.started(rt.now)
    rt.now = 1.0
    assert isinstance(crash(rt, policy)[0], lc.WaitBackoff)
    rt.now = 1.5
    assert rt.feed(by_hand(lc.StopByHand, 1.5)) == (lc.CancelBackoff(),)
    rt.now = 3.0  # when its backoff would have ended; then the container's stop
    assert rt.feed(lc.BackoffOver()) == ()
    assert rt.feed(STOP) == ()
    assert (rt.tracked.state, rt.tracked.life.since) == (lc.STOPPED, 1.5)


def test_a_given_up_sidecar_started_by_hand_gets_a_fresh_budget() -> None:
    rt = FakeRuntime("sidecar db")
    policy = RestartTracker("on-failure", 1.0, 1.0, 0, 60.0, lambda: 0.5)
    rt.start()
    policy.started(rt.now)
    assert crash(rt, policy) == (lc.BeginStop(exit_code=3),)
    rt.now = 5.0
    actions = rt.feed(lc.StartByHand())
    assert actions == FRESH_START
    policy.fresh_budget()
    rt.start()
    policy.started(rt.now, by_hand=True)
    assert (rt.tracked.state, rt.tracked.life.last_status) == (lc.RUNNING, EXIT_3)


def test_a_restart_by_hand_cut_short_by_the_containers_stop_stays_down() -> None:
    rt = FakeRuntime("sidecar db")
    rt.start()
    rt.feed(by_hand(lc.RestartByHand, 1.0))
    rt.now = 2.0
    (turn,) = rt.feed(lc.Stop(first_signal=signal.SIGTERM, term_at=2.0, kill_at=4.0, reap_by=5.0))
    assert turn == lc.RunStop(first_signal=None, term_at=2.0, kill_at=4.0, reap_by=5.0)
    rt.feed(lc.Signalled(signum=signal.SIGKILL))
    assert rt.feed(lc.exited(signal.SIGKILL)) == ()
    assert (rt.tracked.state, rt.tracked.life.by_hand) == (lc.STOPPED, None)
