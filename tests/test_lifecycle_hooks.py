"""A post hook's life: its table of state x event, then whole turns with a fake clock.

A post hook runs from its start (``posix_spawn`` returns once it exec'd)
until it ends, or until its turn in the stop budget ends: then the same
:func:`pyinit.run.lifecycle.transition` as every process's decides its stop
(a ``Stop`` with SIGTERM, SIGKILL at its turn's ``kill_at``), carried out by
the one stop primitive.  The table is checked with no process and no sleep;
then the synchronous driver (:func:`pyinit.run.posthooks.run_post_hooks_now`)
runs whole turns against fake hooks and a fake clock: the signals each hook
gets and when, its states, and the lines a user reads.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

import pytest
from plan_helpers import plan_for

import pyinit.root.hooks
from pyinit import log
from pyinit.plan import Hook
from pyinit.plan.stop import StopDeadline, stop_budget
from pyinit.run import lifecycle as lc
from pyinit.run import posthooks
from pyinit.run.reaper import Watched

NOW = 10.0
PID = 42
#: A hook's cut-off at the end of its turn: SIGTERM at 9.5, SIGKILL at 10.5.
CUT_OFF = lc.Stop(first_signal=signal.SIGTERM, term_at=9.5, kill_at=10.5, reap_by=11.0)
RUN_CUT_OFF = lc.RunStop(first_signal=signal.SIGTERM, term_at=9.5, kill_at=10.5, reap_by=11.0)

EVENTS: dict[str, lc.Event] = {
    "spawned": lc.Spawned(pid=PID),
    "ready": lc.Ready(),
    "ended": lc.exited(0),
    "cut off": CUT_OFF,
    "sent TERM": lc.Signalled(signum=signal.SIGTERM),
    "sent KILL": lc.Signalled(signum=signal.SIGKILL),
}

#: The states a hook's life takes (no restart policy: never backoff or gave-up).
HOOK_STATES = (lc.RUNNING, lc.STOPPING, lc.KILLING, lc.STOPPED, lc.EXITED)

#: state -> event -> (next state, actions); "=" means unchanged, no action.
SAME = ("=", ())
TABLE: dict[str, dict[str, tuple[str, tuple[lc.Action, ...]]]] = {
    lc.RUNNING: {
        **dict.fromkeys(EVENTS, SAME),
        "ended": (lc.EXITED, ()),  # ended in its turn
        "cut off": (lc.STOPPING, (RUN_CUT_OFF,)),
    },
    lc.STOPPING: {
        **dict.fromkeys(EVENTS, SAME),
        "ended": (lc.STOPPED, ()),  # its SIGTERM ended it
        "sent KILL": (lc.KILLING, ()),
    },
    lc.KILLING: {**dict.fromkeys(EVENTS, SAME), "ended": (lc.STOPPED, ())},
    lc.STOPPED: dict.fromkeys(EVENTS, SAME),
    lc.EXITED: dict.fromkeys(EVENTS, SAME),
}


def hook_life(state: str) -> lc.Life:
    """A hook's life that reached ``state`` at 1.0, with its pid while it may run."""
    return lc.Life(
        name="post hook --post 'x'",
        state=state,
        since=1.0,
        pid=PID if state in lc.ALIVE else None,
        last_status=None if state in lc.ALIVE else 0,
        starts=1,
        by_hand=None,
    )


def test_the_table_covers_every_state_of_a_hook_and_every_event() -> None:
    assert set(TABLE) == set(HOOK_STATES)
    for row in TABLE.values():
        assert set(row) == set(EVENTS)


@pytest.mark.parametrize(
    ("state", "event"), [(s, e) for s in HOOK_STATES for e in EVENTS], ids=lambda x: str(x)
)
def test_hook_transition_table(state: str, event: str) -> None:
    before = hook_life(state)
    after, actions = lc.transition(before, EVENTS[event], NOW)
    expected_state, expected_actions = TABLE[state][event]
    if expected_state == "=":
        assert (after, actions) == (before, ())
        return
    assert (after.state, actions) == (expected_state, expected_actions)
    assert after.since == NOW
    if event == "ended":
        assert (after.pid, after.last_status) == (None, 0)


def test_a_hook_is_running_from_its_start() -> None:
    tracked = lc.Tracked("post hook --post 'x'", 0.0)
    assert tracked.feed(lc.Spawned(pid=PID), 0.0) == ()
    assert tracked.feed(lc.Ready(), 0.0) == ()
    assert (tracked.state, tracked.life.pid, tracked.life.starts) == (lc.RUNNING, PID, 1)


# --- whole turns: the synchronous driver, fake hooks, a fake clock --------------------------


class FakeHook:
    """A hook process: it ends on its own ``runs_for`` after its start, or on a signal."""

    def __init__(self, label: str, started: float, runs_for: float, obeys_term: bool) -> None:
        self.label = label
        self.ends_at = started + runs_for
        self.end_status = 0
        self.obeys_term = obeys_term
        self.watched: Watched | None = None


class FakeRun:
    """A fake clock, the fake hooks' processes, a reaper and a ``wait_until`` like the intake's.

    ``behaviours`` is each hook's command -> (seconds it runs, whether SIGTERM
    ends it).  Nothing here starts or signals a process.
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, behaviours: dict[str, tuple[float, bool]]
    ) -> None:
        self.now = 0.0
        self.behaviours = behaviours
        self.hooks: dict[int, FakeHook] = {}
        #: (when, command, signal) of every signal a running hook got.
        self.sent: list[tuple[float, str, int]] = []
        #: (when, command, PYINIT_EXIT_CODE) of every start.
        self.starts: list[tuple[float, str, str]] = []
        monkeypatch.setattr(posthooks, "time", self)
        monkeypatch.setattr(posthooks, "kill_group", self.kill_group)
        monkeypatch.setattr(pyinit.root.hooks, "spawn_hook", self.spawn_hook)

    def monotonic(self) -> float:
        """The fake clock (posthooks reads ``time.monotonic()``)."""
        return self.now

    def spawn_hook(self, hook: Hook, env: dict[str, str], *, own_group: bool = False) -> int:
        assert own_group
        command = hook.argv[-1]
        pid = 100 + len(self.hooks)
        self.hooks[pid] = FakeHook(command, self.now, *self.behaviours[command])
        self.starts.append((self.now, command, env["PYINIT_EXIT_CODE"]))
        return pid

    @contextlib.contextmanager
    def spawning(self) -> Iterator[Callable[[int], Watched]]:
        def watch(pid: int) -> Watched:
            watched = Watched(pid)
            self.hooks[pid].watched = watched
            return watched

        yield watch

    def kill_group(self, pid: int, sig: int, *, reaped: bool = False) -> None:
        hook = self.hooks[pid]
        if hook.watched is not None and hook.watched.exited:
            assert reaped, "a reaped hook's pid must not be signalled on its own"
            return  # reaped; nothing left in its group
        self.sent.append((self.now, hook.label, sig))
        if sig == signal.SIGKILL or hook.obeys_term:
            hook.ends_at, hook.end_status = self.now, sig

    def _reap(self) -> None:
        for hook in self.hooks.values():
            if hook.watched is not None and not hook.watched.exited and hook.ends_at <= self.now:
                hook.watched.status = hook.end_status

    def wait_until(self, when: float, done: Callable[[], bool]) -> bool:
        """Reap until ``done()`` (True) or ``when`` (False), moving the clock to each end."""
        while True:
            self._reap()
            if done():
                return True
            if self.now >= when:
                return False
            running = [h.ends_at for h in self.hooks.values() if h.ends_at > self.now]
            self.now = min([when, *running])

    def run(self, timeout: str, *commands: str, start: float = 0.0) -> list[posthooks.HookRun]:
        """The post hooks ``commands`` of a plain target, from ``start`` after the stop began."""
        argv = ["--stop-timeout", timeout]
        for command in commands:
            argv += ["--post", command]
        plan = plan_for([*argv, "--", "true"])
        deadline = StopDeadline(start=0.0, timeout=float(timeout))
        self.now = start
        ran: list[posthooks.HookRun] = []
        reaper = self  # spawning() is all the driver asks of it
        posthooks.run_post_hooks_now(
            plan, stop_budget(plan), deadline, 3, reaper, self.wait_until, ran
        )
        return ran


def states(run: posthooks.HookRun) -> tuple[str, float, int | None]:
    life = run.life.life
    return life.state, life.since, life.last_status


@pytest.fixture(autouse=True)
def verbose() -> Iterator[None]:
    """The hooks' outcome lines are info: shown as with --verbose."""
    before = log.level()
    log.set_level(log.VERBOSE)
    yield
    log.set_level(before)


def test_a_hung_hook_is_cut_off_in_its_turn_and_the_next_one_gets_its_own(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The reproduced case: --stop-timeout 4, a first hook that ignores SIGTERM,
    # a second that must still run (turns of 0.875 s: kill_by 2.625 and 3.5).
    fake = FakeRun(monkeypatch, {"hang": (100.0, False), "second": (0.1, True)})
    first, second = fake.run("4", "hang", "second", start=0.25)
    assert fake.sent == [
        (1.625, "hang", signal.SIGTERM),  # 1 s before its kill_at
        (2.625, "hang", signal.SIGKILL),
    ]
    assert fake.starts == [(0.25, "hang", "3"), (2.625, "second", "3")]
    assert (first.name, states(first)) == ("post-1", (lc.STOPPED, 2.625, signal.SIGKILL))
    assert (second.name, states(second)) == ("post-2", (lc.EXITED, 2.725, 0))
    err = capfd.readouterr().err
    assert "pyinit: warning: --post 'hang' still running: sending SIGTERM\n" in err
    assert "pyinit: warning: post hook --post 'hang' failed: killed by SIGKILL\n" in err
    assert "pyinit: post hook --post 'second': exit 0\n" in err


def test_a_hook_ending_on_its_sigterm_is_stopped_without_sigkill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeRun(monkeypatch, {"slow": (100.0, True)})
    (run,) = fake.run("8", "slow", start=0.5)
    # Default-like budget, one hook: turns of 2.5 s, its kill_at 7.5, SIGTERM at 6.5.
    assert fake.sent == [(6.5, "slow", signal.SIGTERM)]
    assert states(run) == (lc.STOPPED, 6.5, signal.SIGTERM)


def test_the_life_follows_the_cut_off_as_it_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun(monkeypatch, {"hang": (100.0, False)})
    seen: list[tuple[float, str]] = []
    send = posthooks.HookRun.send

    def watching_send(self: posthooks.HookRun, sig: int) -> None:
        seen.append((fake.now, self.life.state))
        send(self, sig)
        seen.append((fake.now, self.life.state))

    monkeypatch.setattr(posthooks.HookRun, "send", watching_send)
    fake.run("8", "hang")
    # Cut off at 6.5: stopping from its turn's end, killing once SIGKILL is out.
    assert seen == [
        (6.5, lc.STOPPING),
        (6.5, lc.STOPPING),
        (7.5, lc.STOPPING),
        (7.5, lc.KILLING),
    ]


def test_a_hook_whose_turn_passed_gets_no_run_and_no_life(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRun(monkeypatch, {"late": (0.1, True), "second": (0.1, True)})
    (run,) = fake.run("4", "late", "second", start=3.0)  # past the first's kill_at (2.625)
    assert (run.name, states(run)) == ("post-2", (lc.EXITED, 3.1, 0))
    assert fake.sent == []
    err = capfd.readouterr().err
    assert (
        "pyinit: warning: post hook --post 'late' not run: the --stop-timeout deadline passed\n"
        in err
    )
