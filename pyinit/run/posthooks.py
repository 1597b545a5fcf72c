"""The ``--post`` hooks' turns, shared by the event loop and the plain target's driver.

After every process is stopped, each post hook runs as root in its own
process group when the one before it ended, cut off by its own turn's
``kill_by`` in the stop budget (:class:`pyinit.plan.stop.StopBudget`):
SIGTERM to its group in good time, SIGKILL at ``kill_at``, then whatever it
left in its group.  A hook whose turn has passed is not run.  The waiting
is the driver's (trio, or ``sigtimedwait`` in the intake); what is run,
when, and what is said, is here.  No trio here.
"""

from __future__ import annotations

import signal
import time

from pyinit import log
from pyinit.errors import PyinitError
from pyinit.plan.stop import stop_schedule
from pyinit.run.reaper import describe_status
from pyinit.stopping import escalation_notice, kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pyinit.plan import Hook, Plan
    from pyinit.plan.stop import StopBudget, StopDeadline
    from pyinit.run.reaper import Reaper, Watched


def hook_turns(
    plan: Plan, budget: StopBudget, deadline: StopDeadline
) -> Iterator[tuple[Hook, float]]:
    """Each post hook with its turn's ``kill_at``; one whose turn passed is skipped, with a line."""
    for hook, turn in zip(plan.post_hooks, budget.hooks, strict=True):
        kill_at = deadline.start + turn.kill_by
        if time.monotonic() >= kill_at:
            log.warning(f"post hook {hook.label} not run: the --stop-timeout deadline passed")
            continue
        yield hook, kill_at


def hook_env(plan: Plan, code: int) -> dict[str, str]:
    """The post hooks' environment: the plan's, with ``PYINIT_EXIT_CODE``."""
    env = dict(plan.env)
    env["PYINIT_EXIT_CODE"] = str(code)
    return env


def start_hook(reaper: Reaper, hook: Hook, env: dict[str, str]) -> Watched:
    """Start a hook in its own group, watched before the reaper can see it exit."""
    from pyinit.root.hooks import spawn_hook  # only when there is a hook (and contextlib with it)

    with reaper.spawning() as watch:
        return watch(spawn_hook(hook, env, own_group=True))


def hook_sender(hook: Hook, pid: int) -> Callable[[int], None]:
    """The stop primitive's ``send`` for a hook: say so, signal its group."""

    def send(sig: int) -> None:
        escalation_notice(hook.label, sig)
        kill_group(pid, sig)

    return send


def term_at(kill_at: float) -> float:
    """When a hook started now gets SIGTERM, if it still runs, before SIGKILL at ``kill_at``."""
    (when, _), _ = stop_schedule(time.monotonic(), kill_at)
    return when


def finish_hook(hook: Hook, run: Watched) -> int:
    """After a hook's stop: SIGKILL what it left in its group; its wait status (SIGKILL if none)."""
    kill_group(run.pid, signal.SIGKILL)
    return run.status if run.status is not None else int(signal.SIGKILL)


def report(hook: Hook, status: int) -> None:
    """The hook's outcome line (and a warning if it failed)."""
    log.info(f"post hook {hook.label}: {describe_status(status)}")
    if status != 0:
        log.warning(f"post hook {hook.label} failed: {describe_status(status)}")


def run_post_hooks_now(
    plan: Plan,
    budget: StopBudget,
    deadline: StopDeadline,
    code: int,
    reaper: Reaper,
    wait_until: Callable[[float, Callable[[], bool]], bool],
) -> None:
    """The post hooks in their turns, synchronously.

    ``wait_until(when, done)`` forwards and reaps until ``done()`` or ``when``.
    """
    from pyinit.stopping import stop_now

    env = hook_env(plan, code)
    for hook, kill_at in hook_turns(plan, budget, deadline):
        try:
            run = start_hook(reaper, hook, env)
        except PyinitError as e:
            log.error(e.message)
            continue

        def ended_by(when: float, run: Watched = run) -> bool:
            return wait_until(when, lambda: run.exited)

        send = hook_sender(hook, run.pid)
        stop_now(send, ended_by, signal.SIGTERM, term_at(kill_at), kill_at, deadline.exit_at)
        report(hook, finish_hook(hook, run))
