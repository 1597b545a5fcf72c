"""Supervise mode's launcher: start-up, the signal intake, the plain target; no trio here.

pyinit stays PID 1 and root and runs the target as a child:

1. root setup (mkdir, chown, pre hooks), every signal still blocked since
   pyinit's first statement (``--rlimit`` is set in the forked target only);
2. with an ``exec:`` probe in the plan, fork the probe runner, which forks
   those probes from then on (:mod:`pyinit.run.proberunner`), while pyinit
   is still small;
   fork the target (:func:`pyinit.run.spawn.start_target`), after the
   leading sidecars that need no readiness probe (the loop adopts them);
   with a task, a probe or ``--ready`` first, the loop starts the rest;
3. a plain target (no items, ``--ready`` or upward ``NOTIFY_SOCKET``) is
   then supervised in this thread for its whole life, without trio
   (:mod:`pyinit.run.plain`); otherwise
   import trio in this thread while signal handlers forward and reap
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
import sys
import time
from types import MappingProxyType

from pyinit import log
from pyinit.errors import EXIT_SETUP_FAILED
from pyinit.record import Record
from pyinit.root.setup import apply_root_setup
from pyinit.run import lifecycle
from pyinit.run.intake import Intake
from pyinit.run.plain import is_plain, supervise_plain
from pyinit.run.reaper import Reaper
from pyinit.run.spawn import Started, fork_failure, fork_item, start_target, started_line
from pyinit.run.target import leave_start_directory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import ModuleType

    from pyinit.plan import Plan
    from pyinit.run.control import Backend, Server
    from pyinit.run.loopcontrol import LoopBackend
    from pyinit.run.posthooks import HookRun
    from pyinit.run.proberunner import RunnerClient
    from pyinit.run.reaper import Watched
    from pyinit.run.spawn import Child


#: The GIL switch interval once the loop thread runs (seconds).
LOOP_SWITCH_INTERVAL = 0.0001


class Handoff(Record):
    """What the launcher hands the driver that supervises from here (the loop, or plain).

    The signal intake only forwards and reaps: what the launcher started
    and decided goes to the driver here, not through the intake.
    """

    __slots__ = ("main_life", "original_mask", "probe_runner", "started")
    #: The signal mask pyinit was started with: every child restores it before exec.
    original_mask: tuple[int, ...]
    #: Items the launcher forked before the loop existed, by name, for the loop to adopt.
    started: Mapping[str, Started]
    #: The main's state (:mod:`pyinit.run.lifecycle`): the launcher's, when it forked it.
    main_life: lifecycle.Tracked
    #: The probe runner that forks the ``exec:`` probes (None: no such probe, or no runner).
    probe_runner: RunnerClient | None


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
    mask = tuple(original_mask)
    runner = _fork_probe_runner(plan, reaper, mask)
    intake = Intake(plan, reaper, exit_early=not is_plain(plan))
    started = _start_items_early(plan, reaper, mask)
    handoff = Handoff(
        original_mask=mask,
        started=MappingProxyType(started),
        main_life=lifecycle.Tracked("main", time.monotonic()),
        probe_runner=runner,
    )
    if not _main_starts_early(plan, started):
        # The rest starts from the loop, in order (docs/services.md), and it
        # reports the main's readiness.
        return _run_loop(plan, intake, handoff)
    try:
        child = start_target(plan, mask)
    except OSError as e:  # fork refused (the pids cgroup is full, no memory): say so
        log.error(f"cannot start the target: {fork_failure(e)}")
        if not started:
            return EXIT_SETUP_FAILED  # nothing runs: nothing to stop
        # The loop stops the early sidecars in order; it tries the main once more first.
        return _run_loop(plan, intake, handoff)
    main = reaper.watch(child.pid)
    intake.main_started(main)
    handoff.main_life.feed(lifecycle.Spawned(pid=child.pid), time.monotonic())
    error = child.exec_error()
    if error is None:
        # No --ready: exec'd is ready.
        handoff.main_life.feed(lifecycle.Ready(), time.monotonic())
    if error is not None:
        log.error(error.message)
        if not plan.items:
            os.waitpid(child.pid, 0)  # the intake is not running yet: nobody else reaps
            return error.exit_code
        # It exits with the error's code: the loop stops the sidecars after it.
    else:
        log.info(started_line(plan, child.pid))
    if plan.is_pid1:
        # Do not pin the directory pyinit was started in (a volume) for the
        # container's whole life, as catatonit does not.
        leave_start_directory()
    if error is None and is_plain(plan):
        return _run_plain(plan, intake, handoff, main)
    return _run_loop(plan, intake, handoff)


def _run_plain(plan: Plan, intake: Intake, handoff: Handoff, main: Watched) -> int:
    """A plain target's whole life in this thread, its control server beside it."""
    server = None
    hooks: list[HookRun] = []  # the post hooks' runs, once the stop reaches them
    if plan.control is not None:
        from pyinit.run.control import PlainBackend

        def stopping() -> bool:
            return intake.stopping

        backend = PlainBackend(plan, handoff.main_life, main, stopping, hooks)
        server = _serve_control(plan.control, backend, intake.reaper)
    try:
        return supervise_plain(plan, intake, handoff, main, hooks)
    finally:
        if server is not None:
            server.close()


def _fork_probe_runner(plan: Plan, reaper: Reaper, mask: tuple[int, ...]) -> RunnerClient | None:
    """The probe runner, forked now while pyinit is small, if the plan has an ``exec:`` probe.

    A plain target has no probe: nothing is imported for it.
    """
    if is_plain(plan):
        return None
    from pyinit.run.proberunner import fork_runner

    return fork_runner(plan, reaper, mask)


def _start_items_early(plan: Plan, reaper: Reaper, mask: tuple[int, ...]) -> dict[str, Started]:
    """Fork the leading sidecars that need no readiness probe, before trio loads.

    Such a sidecar is ready once it has exec'd, which the launcher can wait
    for without the loop; the loop adopts each (its log pipes, its
    restarts).  They are forked back to back and their exec results read
    after, in order: each child steps down and execs while the next is
    forked, instead of the launcher waiting for each exec in turn.  Stops at
    a task, a probe, or a refused fork.
    """
    started: dict[str, Started] = {}
    if not plan.items:
        return started  # a plain target: not even the services model is imported
    from pyinit.plan.services import SIDECAR

    forked: list[tuple[str, Child, Watched, dict[int, int], float]] = []
    for item in plan.items:
        if item.kind != SIDECAR or item.ready is not None:
            break
        try:
            child, read_ends = fork_item(item, mask, {}, {})
        except OSError:
            break  # fork refused: the loop starts it, with its restart policy
        forked.append((item.name, child, reaper.watch(child.pid), read_ends, time.monotonic()))
    for name, child, watched, read_ends, at in forked:
        started[name] = Started(watched, child.exec_error(), read_ends, at)
    return started


def _main_starts_early(plan: Plan, started: dict[str, Started]) -> bool:
    """Whether every item is running and the main needs nothing of the loop to start."""
    if plan.notify_socket is not None or plan.ready is not None:
        return False
    return len(started) == len(plan.items) and all(s.error is None for s in started.values())


def _run_loop(plan: Plan, intake: Intake, handoff: Handoff) -> int:
    """Import the loop (signals handled meanwhile), run it in a thread, take signals here."""
    try:
        loop = intake.import_loop()
    except Exception as e:  # trio missing or broken: the target must still be stopped
        log.error(f"supervisor failed: {_describe(e)}; stopping the target")
        intake.finish(None)
        return intake.run(handoff.main_life)

    control = server = None
    if plan.control is not None:
        from pyinit.run.loopcontrol import LoopBackend

        control = LoopBackend()
        server = _serve_control(plan.control, control, intake.reaper)
    try:
        return _loop_thread_and_intake(plan, intake, handoff, loop, control)
    finally:
        if server is not None:
            server.close()


def _loop_thread_and_intake(
    plan: Plan, intake: Intake, handoff: Handoff, loop: ModuleType, control: LoopBackend | None
) -> int:
    """Run the loop in a second thread; this one takes signals until the loop is done."""

    def loop_thread() -> None:
        code: int | None = None
        try:
            code = loop.run(plan, intake, handoff, control)
            if code is None:
                return  # pyinit finished before the loop was needed
        except BaseException as e:  # pyinit's own bug: the intake still stops the target
            log.error(f"supervisor failed: {_describe(e)}; stopping the target")
            code = None
        intake.finish(code)

    # A signal taken by the intake waits for the GIL while the loop thread
    # runs Python (relaying a flood of sidecar lines, say): at most this
    # long, not Python's 5 ms, once the intake asks for it.
    sys.setswitchinterval(LOOP_SWITCH_INTERVAL)
    try:
        import threading

        threading.Thread(target=loop_thread, name="pyinit-loop", daemon=True).start()
    except RuntimeError as e:  # no thread to be had: the pids cgroup is full
        log.error(f"supervisor failed: {_describe(e)}; stopping the target")
        intake.finish(None)
    return intake.run(handoff.main_life)


def _serve_control(path: str, backend: Backend, reaper: Reaper) -> Server | None:
    """The control socket at ``path`` (docs/operate.md), served from now on; None without one.

    ``reaper`` collects the child a ``status`` forks for its CPU and RSS figures.
    """
    from pyinit.root.control import open_control
    from pyinit.run.control import serve

    listener = open_control(path)
    return None if listener is None else serve(listener, backend, reaper)


def _describe(error: BaseException) -> str:
    """``RuntimeError: boom``, looking inside trio's exception groups for the real error."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
