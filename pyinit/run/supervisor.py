"""Supervise mode's launcher: start-up, the signal intake, the early exit; no trio.

pyinit stays PID 1 and root and runs the target as a child:

1. root setup (mkdir, chown, rlimits, pre hooks), every signal still
   blocked since pyinit's first statement;
2. fork the target (:func:`pyinit.run.spawn.start_target`);
3. start a thread that imports trio and runs the event loop
   (:mod:`pyinit.run.loop`: shutdown sequence, leftovers, post hooks);
4. meanwhile the main thread takes every signal with ``sigwaitinfo``
   (:mod:`pyinit.run.intake`): forwarding and reaping run from the instant
   the target exists, not once trio (~0.1 s) has loaded.  A target that
   exits before trio is loaded, with nothing left for the loop to do (no
   leftovers, no post hooks), ends pyinit at once.

Why a ``sigwaitinfo`` intake rather than Python handlers installed before
the fork: handlers forward a little faster while trio is being imported
(~0.1 ms vs ~0.3-1 ms, the importing thread holds the GIL until the switch
interval, lowered to 0.2 ms during the import), but they see one pending
signal where fifty real-time signals were queued, and no ``si_pid``, so a
SIGPIPE raised by pyinit's own write to a dead stderr cannot be told from
``docker kill -s PIPE``.  The intake serves the whole life, so there is one
signal path, not one for start-up and one for the loop.  Measured numbers
are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
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

#: GIL switch interval while trio is imported: how long a signal may wait for
#: the importing thread to let the intake run (Python's default is 5 ms).
IMPORT_SWITCH_INTERVAL = 0.0002


def supervise(plan: Plan, original_mask: Iterable[int]) -> int:
    """Run the plan in supervise mode; returns the exit code pyinit should exit with.

    Expects every signal in :func:`pyinit.plan.signals.blockable_signals` to
    be blocked already (and leaves them blocked: only the intake takes them).
    Exit with ``os._exit``: the loop thread may still be importing trio.
    """
    if not plan.is_pid1:
        from pyinit.root.prctl import set_child_subreaper

        set_child_subreaper()
    apply_root_setup(plan)
    reaper = Reaper()
    if plan.items or plan.notify_socket is not None or plan.ready is not None:
        # Sidecars and tasks start before the main, from the loop (GUIDE section 8).
        intake = Intake(plan, reaper, None)
        intake.original_mask = tuple(original_mask)
        _start_loop_thread(plan, intake)
        return intake.run()
    child = start_target(plan, tuple(original_mask))
    reaper.watch(child.pid)
    intake = Intake(plan, reaper, child.pid)
    _start_loop_thread(plan, intake)
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
    return intake.run()


def _who(plan: Plan) -> str:
    return plan.identity.describe() if plan.identity is not None else f"uid {os.getuid()}"


def _start_loop_thread(plan: Plan, intake: Intake) -> None:
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(IMPORT_SWITCH_INTERVAL)

    def loop_thread() -> None:
        code: int | None = None
        try:
            with _no_ldconfig():
                from pyinit.run import loop  # imports trio: ~0.1 s
            sys.setswitchinterval(switch_interval)
            code = loop.run(plan, intake)
            if code is None:
                return  # pyinit finished before the loop was needed
        except BaseException as e:  # pyinit's own bug: the intake still stops the target
            log.error(f"supervisor failed: {_describe(e)}; stopping the target")
            code = None
        intake.finish(code)

    threading.Thread(target=loop_thread, name="pyinit-loop", daemon=True).start()


class _no_ldconfig:
    """Keep trio's import from forking ``/sbin/ldconfig -p`` from PID 1.

    trio's thread cache asks ``ctypes.util.find_library("pthread")`` to name
    its threads, and glibc's answer comes from running ldconfig: a fork from
    PID 1 whose child our ``waitpid(-1)`` would race.  Without an answer trio
    just does not name its threads.
    """

    def __enter__(self) -> None:
        import ctypes.util

        self._real = ctypes.util.find_library
        ctypes.util.find_library = lambda name: None

    def __exit__(self, *exc: object) -> None:
        import ctypes.util

        ctypes.util.find_library = self._real


def _describe(error: BaseException) -> str:
    """``RuntimeError: boom``, looking inside trio's exception groups for the real error."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
