"""The control server's backend with the event loop (:mod:`pyinit.run.loop`).

Every request runs in the loop's own thread, through its trio token:
state is read where it is written, no lock, nothing re-derived
(docs/design.md, "The control server").  Imported with the loop only: a
plain target's server has :class:`pyinit.run.control.PlainBackend`.
"""

from __future__ import annotations

import time

from pyinit.errors import ControlRefused, quoted
from pyinit.run import lifecycle
from pyinit.run.control import (
    STOPPING,
    Backend,
    hook_statuses,
    not_healthy,
    process_status,
    signal_group,
    user_name,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

    from pyinit.run.control import Process
    from pyinit.run.loop import Supervision
    from pyinit.run.services import ItemRun

ENDING = "the container is stopping: its processes are gone"


class LoopBackend(Backend):
    """The loop's: each request runs in the loop's thread, through its trio token."""

    def __init__(self) -> None:
        self._sup: Supervision | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def attach(self, sup: Supervision, token: trio.lowlevel.TrioToken) -> None:
        """Called by the loop once its state exists; requests before that are refused."""
        self._sup = sup
        self._token = token

    def _in_loop(self, fn: Callable[[Supervision], object]) -> object:
        import trio

        sup, token = self._sup, self._token
        if sup is None or token is None:
            raise ControlRefused("pyinit is starting up: try again")
        try:
            return trio.from_thread.run_sync(fn, sup, trio_token=token)
        except trio.RunFinishedError:  # the loop is over: pyinit is about to exit
            raise ControlRefused(ENDING) from None

    def stopping(self) -> bool:
        """True once the loop's shutdown began."""
        return bool(self._in_loop(lambda sup: sup.stopping))

    def processes(self) -> list[Process]:
        """The main's and every item's status object, in start order."""
        result = self._in_loop(_loop_processes)
        assert isinstance(result, list)
        return result

    def health(self) -> tuple[int, str]:
        """See :func:`loop_health`."""
        try:
            result = self._in_loop(loop_health)
        except ControlRefused as e:
            return 1, f"unhealthy: {e.message}"
        assert isinstance(result, tuple)
        return result

    def signal(self, name: str, signum: int) -> str:
        """The main's or an item's process group."""
        result = self._in_loop(lambda sup: _loop_signal(sup, name, signum))
        assert isinstance(result, str)
        return result

    def by_hand(self, action: str, name: str) -> str:
        """An item's own by-hand method (``ItemRun.stop_by_hand`` ...), awaited in the loop."""
        import trio

        from pyinit.run.services import ItemRun

        run = self._in_loop(lambda sup: _item(sup, name))
        assert isinstance(run, ItemRun) and self._token is not None
        method = {
            "stop": run.stop_by_hand,
            "start": run.start_by_hand,
            "restart": run.restart_by_hand,
        }[action]
        try:
            result = trio.from_thread.run(method, trio_token=self._token)
        except trio.RunFinishedError:
            raise ControlRefused(STOPPING) from None
        except trio.Cancelled:
            raise ControlRefused(
                f"{action} {name}: interrupted, the container is stopping"
            ) from None
        return str(result)


def _item(sup: Supervision, name: str) -> ItemRun:
    for run in sup.runs:
        if run.item.name == name:
            return run
    known = ", ".join(["main", *(run.item.name for run in sup.runs)])
    raise ControlRefused(f"no process named {quoted(name)} (known: {known})")


def _loop_processes(sup: Supervision) -> list[Process]:
    plan = sup.plan
    main = process_status(
        "main",
        "main",
        sup.main_life.life,
        user_name(plan.identity),
        plan.command,
        alive=sup.alive_state,
    )
    now = time.monotonic()
    result = [main]
    for run in sup.runs:
        item = run.item
        tracker = run.tracker
        total = tracker.total_restarts
        result.append(
            process_status(
                item.name,
                item.kind,
                run.life.life,
                user_name(item.identity),
                item.command,
                (tracker.restarts_within_window(now), total),
                run.alive_state,
            )
        )
    result.extend(hook_statuses(sup.hooks))  # during the stop: its post hooks so far
    return result


def loop_health(sup: Supervision) -> tuple[int, str]:
    """Healthy when the main runs and is ready, and every sidecar whose give-up stops the
    container is ready or in its first backoff (one stopped by hand is left out)."""
    if sup.stopping:
        return 1, "unhealthy: the container is stopping"
    problems: list[str] = []
    main = sup.main_life.state
    if main != lifecycle.RUNNING:
        problems.append(f"main {not_healthy(main)}")
    if sup.alive_state == "dead":
        problems.append("main failed its liveness checks")
    now = time.monotonic()
    for run in sup.runs:
        item = run.item
        if item.kind != "sidecar" or item.on_giveup != "stop":
            continue
        state = run.life.state
        if state == lifecycle.RUNNING and run.alive_state != "dead":
            continue
        if state == lifecycle.STOPPED:  # outside a shutdown only a stop by hand leaves it so
            continue
        if state == lifecycle.BACKOFF and run.tracker.restarts_within_window(now) == 0:
            continue  # its first backoff
        problems.append(f"sidecar {item.name} {not_healthy(state)}")
    if problems:
        return 1, "unhealthy: " + "; ".join(problems)
    return 0, "healthy"


def _loop_signal(sup: Supervision, name: str, signum: int) -> str:
    if name == "main":
        main = sup.main
        pid = None if main is None or main.exited else main.pid
        return signal_group(pid, "main", signum)
    run = _item(sup, name)
    return signal_group(run.pid, f"{run.item.kind} {name}", signum)
