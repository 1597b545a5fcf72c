"""Supervise mode's launcher: start-up, the signal intake, the early exit; no trio here.

pyinit stays PID 1 and root and runs the target as a child:

1. root setup (mkdir, chown, rlimits, pre hooks), every signal still
   blocked since pyinit's first statement;
2. fork the target (:func:`pyinit.run.spawn.start_target`);
3. import trio in this thread while signal handlers forward and reap
   (:meth:`pyinit.run.intake.Intake.import_loop`): a target that exits in
   the meantime, with nothing left for the loop to do, ends pyinit at once;
4. run the event loop (:mod:`pyinit.run.loop`: services, the shutdown
   sequence, leftovers, post hooks) in a second thread, while this one
   takes every signal with ``sigwaitinfo`` for the rest of pyinit's life.

Why handlers during the import, and ``sigwaitinfo`` after, is in
:mod:`pyinit.run.intake` and docs/design.md; the numbers are in
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import threading

from pyinit import log
from pyinit.root.setup import apply_root_setup
from pyinit.run.intake import Intake
from pyinit.run.reaper import Reaper
from pyinit.run.spawn import start_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyinit.plan import Plan


def supervise(plan: Plan, original_mask: Iterable[int]) -> int:
    """Run the plan in supervise mode; returns the exit code pyinit should exit with.

    Expects every signal in :func:`pyinit.plan.signals.blockable_signals` to
    be blocked already (and leaves them blocked: only the intake takes them).
    Exit with ``os._exit``: the loop thread may still be running.
    """
    log.guard_stalls()
    if not plan.is_pid1:
        from pyinit.root.prctl import set_child_subreaper

        set_child_subreaper()
    apply_root_setup(plan)
    reaper = Reaper()
    if plan.items or plan.notify_socket is not None or plan.ready is not None:
        # Sidecars and tasks start before the main, from the loop (GUIDE section 8).
        intake = Intake(plan, reaper, None)
        intake.original_mask = tuple(original_mask)
        return _run_loop(plan, intake)
    child = start_target(plan, tuple(original_mask))
    reaper.watch(child.pid)
    intake = Intake(plan, reaper, child.pid)
    error = child.exec_error()
    if error is not None:
        os.waitpid(child.pid, 0)  # the intake is not running yet: nobody else reaps
        log.error(error.message)
        return error.exit_code
    if plan.is_pid1:
        # Do not pin the directory pyinit was started in (a volume) for the
        # container's whole life, as catatonit does not.
        os.chdir("/")
    log.info(f"started pid {child.pid} as {_who(plan)}: {' '.join(plan.command)}")
    return _run_loop(plan, intake)


def _who(plan: Plan) -> str:
    return plan.identity.describe() if plan.identity is not None else f"uid {os.getuid()}"


def _run_loop(plan: Plan, intake: Intake) -> int:
    """Import the loop (signals handled meanwhile), run it in a thread, take signals here."""
    loop = intake.import_loop()

    def loop_thread() -> None:
        code: int | None = None
        try:
            code = loop.run(plan, intake)
            if code is None:
                return  # pyinit finished before the loop was needed
        except BaseException as e:  # pyinit's own bug: the intake still stops the target
            log.error(f"supervisor failed: {_describe(e)}; stopping the target")
            code = None
        intake.finish(code)

    threading.Thread(target=loop_thread, name="pyinit-loop", daemon=True).start()
    return intake.run()


def _describe(error: BaseException) -> str:
    """``RuntimeError: boom``, looking inside trio's exception groups for the real error."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
