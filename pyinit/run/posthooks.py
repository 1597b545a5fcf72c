"""The ``--post`` hooks' turns, shared by the event loop and the plain target's driver.

After every process is stopped, each post hook runs as root in its own
process group when the one before it ended, cut off by its own turn's
``kill_by`` in the stop budget (:class:`pyinit.plan.stop.StopBudget`):
SIGTERM to its group in good time, SIGKILL at ``kill_at``, then whatever it
left in its group.  A hook whose turn has passed is not run.  Each run
has a :class:`pyinit.run.lifecycle.Life` (:class:`HookRun`): its cut-off is
a ``Stop`` fed to the same transition as every process's, carried out by
the one stop primitive.  The waiting is the driver's (trio, or
``sigtimedwait`` in the intake); what is run, when, and what is said, is
here.  No trio here.
"""

from __future__ import annotations

import signal
import time

from pyinit import log
from pyinit.errors import PyinitError
from pyinit.plan.stop import stop_schedule
from pyinit.run import lifecycle
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
) -> Iterator[tuple[str, Hook, float]]:
    """Each post hook with its name and its turn's ``kill_at``; one whose turn passed is skipped.

    The name is ``post-N`` (the Nth ``--post``, from 1), as ``pyinitctl
    status`` shows it; a skipped hook gets a line, and no run.
    """
    turns = zip(plan.post_hooks, budget.hooks, strict=True)
    for number, (hook, turn) in enumerate(turns, start=1):
        kill_at = deadline.start + turn.kill_by
        if time.monotonic() >= kill_at:
            log.warning(f"post hook {hook.label} not run: the --stop-timeout deadline passed")
            continue
        yield f"post-{number}", hook, kill_at


def hook_env(plan: Plan, code: int) -> dict[str, str]:
    """The post hooks' environment: the plan's, with ``PYINIT_EXIT_CODE``."""
    env = dict(plan.env)
    env["PYINIT_EXIT_CODE"] = str(code)
    return env


class HookRun:
    """One post hook's run: its process, its :class:`~pyinit.run.lifecycle.Life`, its cut-off.

    The life is what ``pyinitctl status`` shows (kind ``hook``): ``running``
    from its start, ``stopping`` once its turn ended and it got SIGTERM,
    ``killing`` after SIGKILL, then ``exited`` (it ended in its turn) or
    ``stopped`` (it was cut off).  Its stop is the lifecycle's decision on a
    :class:`~pyinit.run.lifecycle.Stop` at its cut-off, carried out by the
    one stop primitive; the drivers (the loop, the plain target's) only wait.
    """

    def __init__(self, name: str, hook: Hook, run: Watched, kill_at: float, reap_by: float) -> None:
        now = time.monotonic()
        #: ``post-N``: its name in ``pyinitctl status``.
        self.name = name
        self.hook = hook
        self.run = run
        (self.term_at, _), (self.kill_at, _) = stop_schedule(now, kill_at)
        self.reap_by = reap_by
        self.life = lifecycle.Tracked(f"post hook {hook.label}", now)
        self.life.feed(lifecycle.Spawned(pid=run.pid), now)
        # posix_spawn returns once the hook exec'd: a hook is running from its start.
        self.life.feed(lifecycle.Ready(), now)

    def cut_off(self) -> tuple[lifecycle.RunStop, ...]:
        """Its turn ended while it runs: the stop to carry out (SIGTERM now, SIGKILL at kill_at)."""
        turn = lifecycle.Stop(
            first_signal=signal.SIGTERM,
            term_at=self.term_at,
            kill_at=self.kill_at,
            reap_by=self.reap_by,
        )
        actions = self.life.feed(turn, time.monotonic())
        return tuple(a for a in actions if isinstance(a, lifecycle.RunStop))

    def send(self, sig: int) -> None:
        """The stop primitive's ``send``: say so, signal its group, tell its life."""
        escalation_notice(self.hook.label, sig)
        kill_group(self.run.pid, sig)
        self.life.feed(lifecycle.Signalled(signum=sig), time.monotonic())

    def finish(self) -> None:
        """After its end (or its stop): SIGKILL what it left in its group, its end, its line."""
        kill_group(self.run.pid, signal.SIGKILL, reaped=self.run.exited)
        status = self.run.status
        if status is None:  # not reaped by reap_by (cannot outlive SIGKILL): as killed
            status = int(signal.SIGKILL)
        self.life.feed(lifecycle.exited(status), time.monotonic())
        report(self.hook, status)


def start_hook(
    reaper: Reaper, name: str, hook: Hook, env: dict[str, str], kill_at: float, reap_by: float
) -> HookRun | None:
    """Start a hook in its own group, watched before the reaper can see it exit.

    None, with the error's line, if it could not be started.
    """
    from pyinit.root.hooks import spawn_hook  # only when there is a hook (and contextlib with it)

    try:
        with reaper.spawning() as watch:
            run = watch(spawn_hook(hook, env, own_group=True))
    except PyinitError as e:
        log.error(e.message)
        return None
    return HookRun(name, hook, run, kill_at, reap_by)


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
    ran: list[HookRun],
) -> None:
    """The post hooks in their turns, synchronously; each run is appended to ``ran``.

    ``wait_until(when, done)`` forwards and reaps until ``done()`` or ``when``.
    """
    from pyinit.stopping import stop_now

    env = hook_env(plan, code)
    for name, hook, kill_at in hook_turns(plan, budget, deadline):
        hook_run = start_hook(reaper, name, hook, env, kill_at, deadline.exit_at)
        if hook_run is None:
            continue
        ran.append(hook_run)

        def ended_by(when: float, run: Watched = hook_run.run) -> bool:
            return wait_until(when, lambda: run.exited)

        if not ended_by(hook_run.term_at):
            for stop in hook_run.cut_off():
                stop_now(
                    hook_run.send,
                    ended_by,
                    stop.first_signal,
                    stop.term_at,
                    stop.kill_at,
                    stop.reap_by,
                )
        hook_run.finish()
