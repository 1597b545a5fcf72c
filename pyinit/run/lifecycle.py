"""One supervised process's life as a state machine: named states, events, actions.

Every process pyinit supervises (the main, a sidecar, a task, a post
hook's run) has one :class:`Life`, held by whoever drives it (the
synchronous plain-target driver, :mod:`pyinit.run.plain`; the event loop's
:class:`Supervision` for the main, :class:`pyinit.run.services.ItemRun`
for an item, :class:`pyinit.run.posthooks.HookRun` for a post hook, whose
turn's end comes as a :class:`Stop`).  That
record is the supervisor's own truth about the process: what ``pyinitctl
status`` will show, never re-derived from pids and flags.

:func:`transition` is pure: ``(life, event, now) -> (life, actions)``.  No
clock is read, no process is touched; the drivers feed it what happened
(a fork, an exec, a readiness, a reap, the stop's turn, the SIGKILL sent,
a backoff's end) and carry out the actions it returns.  The restart policy
(:mod:`pyinit.run.restart`) answers an exit with a decision, which comes in
with the :class:`Exited` event.  The diagram is in docs/design.md::

    starting --Ready--> running --Exited--> exited | backoff | gave-up
    starting/running --Stop | StopByHand | RestartByHand--> stopping --Signalled(KILL)--> killing
    stopping/killing --Exited--> stopped (by hand to restart: starting)
    backoff --BackoffOver--> starting       backoff --Stop | StopByHand--> stopped
    stopped/exited/gave-up/backoff --StartByHand | RestartByHand--> starting

The ``...ByHand`` events are ``pyinitctl stop``, ``start`` and ``restart``
(docs/services.md, "By hand"): a sidecar stopped by hand stays down until a
start; a start by hand of one that was down gives it a fresh restart budget.

How a stop is timed (its stop signal, SIGKILL, the reap) stays with the one
stop primitive (:mod:`pyinit.stopping`): :class:`Stop` hands it the instants.
Nothing here imports trio or typing: the plain target's path uses it.
"""

from __future__ import annotations

import signal

from pyinit.record import Record

#: Forked; not yet exec'd, or not yet passed its readiness probe.
STARTING = "starting"
#: Exec'd and ready (no probe: ready once exec'd).
RUNNING = "running"
#: Exited; the restart policy restarts it after a delay.
BACKOFF = "backoff"
#: Its stop signal was sent (or forwarded, for the main); awaiting its end.
STOPPING = "stopping"
#: SIGKILL sent; awaiting the reap.
KILLING = "killing"
#: Ended after pyinit stopped it (or stopped while it waited to restart).
STOPPED = "stopped"
#: Ended on its own and stays down: the main's exit, a task done, ``restart=`` says no.
EXITED = "exited"
#: The restart policy gave up on it (or its start failed for good).
GAVE_UP = "gave-up"

#: Every state, in the order of a life.
STATES = (STARTING, RUNNING, BACKOFF, STOPPING, KILLING, STOPPED, EXITED, GAVE_UP)
#: States with no process and nothing more to come (a ``start`` by hand aside).
FINAL = frozenset((STOPPED, EXITED, GAVE_UP))
#: States in which a process of it may run (starting: once forked).
ALIVE = frozenset((STARTING, RUNNING, STOPPING, KILLING))

#: The restart policy's decisions (:class:`pyinit.run.restart.Decision`'s ``action``).
RESTART = "restart"
DONE = "done"
GIVE_UP = "give-up"


#: What a stop that is not the container's (:attr:`Life.by_hand`) leads to once the run is
#: gone: down until a start (by hand), started again at once (by hand), or the restart
#: policy's decision on a failed run (its liveness checks failed, :class:`Dead`).
HAND_STOP = "stop"
HAND_RESTART = "restart"
DEAD_RESTART = "policy"


class Life(Record):
    """Where one process stands: its state since when, its pid, its last wait status."""

    __slots__ = ("by_hand", "last_status", "name", "pid", "since", "starts", "state")
    #: ``main``, ``sidecar NAME``, ``task NAME`` or ``post hook LABEL``.
    name: str
    state: str
    #: When it entered ``state`` (monotonic seconds).
    since: float
    #: The running process's pid, None when none runs.
    pid: int | None
    #: The wait status of its last run, None before the first ended.
    last_status: int | None
    #: How many times it was started (restarts are ``starts - 1``).
    starts: int
    #: While it is being stopped by hand: :data:`HAND_STOP` (then stays down) or
    #: :data:`HAND_RESTART` (then starts again); because it was dead:
    #: :data:`DEAD_RESTART` (then the restart policy decides); else None.
    by_hand: str | None

    @classmethod
    def new(cls, name: str, now: float) -> Life:
        """A process about to be started for the first time."""
        return cls(
            name=name, state=STARTING, since=now, pid=None, last_status=None, starts=0, by_hand=None
        )

    @property
    def alive(self) -> bool:
        """True while a process of it runs (from its fork to its reap)."""
        return self.pid is not None


class StopInstants(Record):
    """A stop's instants: its first signal, SIGKILL, the reap's bound (monotonic seconds).

    ``first_signal`` (None: sent already) at ``term_at``, SIGKILL at
    ``kill_at``, the reap awaited until ``reap_by``.  The stop events and
    :class:`RunStop` are these instants under other names: what an event
    asks for is what the one stop primitive is handed.
    """

    __slots__ = ("first_signal", "kill_at", "reap_by", "term_at")
    first_signal: int | None
    term_at: float
    kill_at: float
    reap_by: float


# --- events --------------------------------------------------------------------------


class Spawned(Record):
    """A run was forked (``pid``); its exec and readiness are to come."""

    __slots__ = ("pid",)
    pid: int


class Ready(Record):
    """The run exec'd and passed its readiness probe (none: exec'd is ready)."""

    __slots__ = ()


class Exited(Record):
    """The run was reaped with ``status``; ``decision`` is the restart policy's answer.

    ``decision`` is :data:`DONE` where no policy applies (the main, a task).
    ``delay`` is the backoff of a :data:`RESTART`; ``exit_code`` the
    container's code after a :data:`GIVE_UP` that stops it (None: the
    container runs on, ``on-giveup=ignore``).  A refused fork comes as an
    exit with the failed start's status.
    """

    __slots__ = ("decision", "delay", "exit_code", "status")
    status: int
    decision: str
    delay: float
    exit_code: int | None


class Stop(StopInstants):
    """Its turn to be stopped came: ``first_signal`` (None: sent already) at ``term_at`` ..."""

    __slots__ = ()


class Signalled(Record):
    """The stop primitive sent ``signum`` to it."""

    __slots__ = ("signum",)
    signum: int


class BackoffOver(Record):
    """Its restart delay ended."""

    __slots__ = ()


class StopByHand(StopInstants):
    """``pyinitctl stop``: its stop-signal at ``term_at``, SIGKILL at ``kill_at``; then down.

    A sidecar waiting to restart simply stays down.
    """

    __slots__ = ()


class Dead(StopInstants):
    """Its liveness checks failed: stopped as by hand, then its exit goes to the restart policy.

    Its end comes as an :class:`Exited` with the policy's decision (a failed
    run), so it restarts, or gives up, as a crashed run does.
    """

    __slots__ = ()


class StartByHand(Record):
    """``pyinitctl start``: start it now (one down: with a fresh restart budget).

    The ``...ByHand`` events are for sidecars: the drivers refuse them for
    the main and tasks, and once the container's stop began.
    """

    __slots__ = ()


class RestartByHand(StopInstants):
    """``pyinitctl restart``: stopped as by :class:`StopByHand`, then started again at once.

    One waiting to restart starts now; one that is down starts as by
    :class:`StartByHand`.
    """

    __slots__ = ()


# --- actions -------------------------------------------------------------------------


class StartRun(Record):
    """Fork a new run; ``by_hand``: asked for by hand, not a restart of the policy's."""

    __slots__ = ("by_hand",)
    by_hand: bool


class FreshBudget(Record):
    """Forget its earlier restarts and backoff (a start by hand of one that was down)."""

    __slots__ = ()


class RunStop(StopInstants):
    """Run the stop primitive (:func:`pyinit.stopping.stop`) with these instants."""

    __slots__ = ()


class WaitBackoff(Record):
    """Wait until ``until`` (monotonic), then feed :class:`BackoffOver`."""

    __slots__ = ("until",)
    until: float


class CancelBackoff(Record):
    """Stop waiting for the restart delay: no restart comes."""

    __slots__ = ()


class BeginStop(Record):
    """The container's stop begins (the main ended, or a sidecar gave up under on-giveup=stop)."""

    __slots__ = ("exit_code",)
    exit_code: int


Event = (
    Spawned
    | Ready
    | Exited
    | Stop
    | Signalled
    | BackoffOver
    | StopByHand
    | StartByHand
    | RestartByHand
    | Dead
)
Action = StartRun | RunStop | WaitBackoff | CancelBackoff | BeginStop | FreshBudget


def _to(life: Life, state: str, now: float, **changes: object) -> Life:
    """``life`` in ``state`` from ``now`` (``since`` kept when the state does not change)."""
    since = life.since if life.state == state else now
    result: Life = life.replace(state=state, since=since, **changes)
    return result


def transition(life: Life, event: Event, now: float) -> tuple[Life, tuple[Action, ...]]:
    """The pure step: where ``life`` goes on ``event`` at ``now``, and what the driver does.

    An event that does not apply in a state (a late readiness of a process
    being stopped, a second stop) leaves the life as it is, with no action.
    """
    state = life.state
    if isinstance(event, Spawned):
        if state in (STARTING, BACKOFF):
            return _to(life, STARTING, now, pid=event.pid, starts=life.starts + 1), ()
    elif isinstance(event, Ready):
        if state == STARTING and life.pid is not None:
            return _to(life, RUNNING, now), ()
    elif isinstance(event, Exited):
        return _exited(life, event, now)
    elif isinstance(event, Stop):
        if state in (STOPPING, KILLING) and life.by_hand is not None:
            # Being stopped by hand when the container's stop begins: stopped in
            # its turn (SIGKILL by the turn's kill_at), never started again.
            return _to(life, state, now, by_hand=None), (_run_stop(event, None),)
        return _stop(life, event, now, None)
    elif isinstance(event, StopByHand):
        return _stop(life, event, now, HAND_STOP)
    elif isinstance(event, RestartByHand):
        if state in (STARTING, RUNNING) and life.pid is not None:
            return _stop(life, event, now, HAND_RESTART)
        return _start_by_hand(life, now)
    elif isinstance(event, StartByHand):
        return _start_by_hand(life, now)
    elif isinstance(event, Dead):
        if state in (STARTING, RUNNING) and life.pid is not None:
            return _stop(life, event, now, DEAD_RESTART)
    elif isinstance(event, Signalled):
        if state == STOPPING and event.signum == signal.SIGKILL:
            return _to(life, KILLING, now), ()
    elif isinstance(event, BackoffOver) and state == BACKOFF:
        return _to(life, STARTING, now), (StartRun(by_hand=False),)
    return life, ()


def _run_stop(event: StopInstants, first_signal: int | None) -> RunStop:
    """The stop primitive's run for ``event``'s instants."""
    return RunStop(
        first_signal=first_signal,
        term_at=event.term_at,
        kill_at=event.kill_at,
        reap_by=event.reap_by,
    )


def _stop(
    life: Life, event: StopInstants, now: float, by_hand: str | None
) -> tuple[Life, tuple[Action, ...]]:
    """A stop (the container's turn, by hand, a dead run's): its run signalled, or none to come."""
    state = life.state
    if state in (STARTING, RUNNING) and life.pid is not None:
        stop = _run_stop(event, event.first_signal)
        return _to(life, STOPPING, now, by_hand=by_hand), (stop,)
    if state in (STARTING, BACKOFF):  # nothing runs: nothing to signal, no restart
        return _to(life, STOPPED, now), ((CancelBackoff(),) if state == BACKOFF else ())
    return life, ()


def _start_by_hand(life: Life, now: float) -> tuple[Life, tuple[Action, ...]]:
    """A start by hand: one waiting to restart starts now, one that is down afresh."""
    start = StartRun(by_hand=True)
    if life.state == BACKOFF:
        return _to(life, STARTING, now), (CancelBackoff(), start)
    if life.state in FINAL:
        return _to(life, STARTING, now), (FreshBudget(), start)
    return life, ()


def _exited(life: Life, event: Exited, now: float) -> tuple[Life, tuple[Action, ...]]:
    """A run ended: stopped if pyinit was stopping it, else the policy's decision.

    A run stopped because it was dead (:class:`Dead`) ended as a failed run:
    the policy's decision too.
    """
    state = life.state
    if state in FINAL or state == BACKOFF:
        return life, ()
    ended = {"pid": None, "last_status": event.status, "by_hand": None}
    if state in (STOPPING, KILLING) and life.by_hand != DEAD_RESTART:
        if life.by_hand == HAND_RESTART:
            return _to(life, STARTING, now, **ended), (StartRun(by_hand=True),)
        return _to(life, STOPPED, now, **ended), ()
    if event.decision == RESTART:
        return _to(life, BACKOFF, now, **ended), (WaitBackoff(until=now + event.delay),)
    if event.decision == GIVE_UP:
        code = event.exit_code
        stop_all = () if code is None else (BeginStop(exit_code=code),)
        return _to(life, GAVE_UP, now, **ended), stop_all
    return _to(life, EXITED, now, **ended), ()


def exited(status: int) -> Exited:
    """The exit of a process no restart policy applies to (the main, a task)."""
    return Exited(status=status, decision=DONE, delay=0.0, exit_code=None)


class Tracked:
    """One process's :class:`Life`, advanced by :func:`transition` only: the driver's handle.

    Readable from any thread (``life`` is an immutable record, replaced whole).
    """

    __slots__ = ("life",)

    def __init__(self, name: str, now: float) -> None:
        self.life = Life.new(name, now)

    def feed(self, event: Event, now: float) -> tuple[Action, ...]:
        """Apply ``event`` at ``now``; the actions to carry out."""
        self.life, actions = transition(self.life, event, now)
        return actions

    @property
    def state(self) -> str:
        """The current state's name."""
        return self.life.state
