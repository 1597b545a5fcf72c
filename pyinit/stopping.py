"""One stop for every process pyinit stops: its stop signal, SIGKILL at a deadline, its end.

:func:`stop` (for the event loop) and :func:`stop_now` (its synchronous
twin, for the signal intake's emergency path and the pre-hook relay) take
the same steps in the same order, for the main, a sidecar or task, the
leftovers, a pre or post hook:

1. wait for its end until ``term_at``; then ``first_signal`` (none when it
   was sent already, as the main's forwarded stop signal);
2. wait until ``kill_at``; then SIGKILL;
3. wait until ``reap_by`` for the kernel to tear it down.

When those instants fall is the plan's decision (:mod:`pyinit.plan.stop`);
how a process is signalled (its process group, a list of leftovers) and
how its end is awaited (trio, ``sigtimedwait``, ``waitpid``) is the
caller's, through :class:`Stoppable`.  Nothing here imports trio, so the
synchronous paths stay without it; every layer may use it.
"""

from __future__ import annotations

import os
import signal

from pyinit import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    #: Sends a signal to the process(es) being stopped, and says so in the log.
    Send = Callable[[int], object]


def kill_group(pgid: int, sig: int, *, reaped: bool = False) -> None:
    """Signal process group ``pgid`` (or just the process, if it leads no group); never raises.

    ``reaped``: its leader was reaped already, so only the group is signalled
    (what the leader left in it).  A pid is not reused while a group of that
    id has members, but once reaped it may be another process's at any time.
    """
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        if reaped:
            return
        try:  # noqa: SIM105  (no contextlib on a plain target's path: docs/design.md)
            os.kill(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    except PermissionError:
        pass


def escalation_notice(label: str, sig: int) -> None:
    """Tell the user a process outlived its time and what it is being sent."""
    log.warning(f"{label} still running: sending {signal.Signals(sig).name}")


def steps(first_signal: int | None, term_at: float, kill_at: float) -> list[tuple[float, int]]:
    """(when, signal): ``first_signal`` at ``term_at`` (unless sent), SIGKILL at ``kill_at``."""
    if first_signal:
        return [(term_at, first_signal), (max(term_at, kill_at), signal.SIGKILL)]
    return [(kill_at, signal.SIGKILL)]


async def stop(
    send: Send,
    ended_by: Callable[[float], Awaitable[bool]],
    first_signal: int | None,
    term_at: float,
    kill_at: float,
    reap_by: float,
) -> bool:
    """Stop one process (or set of processes); True once it ended, False if not by ``reap_by``.

    ``ended_by(when)`` waits for the end until monotonic instant ``when``
    and says whether it came; ``send(sig)`` signals (and logs).
    """
    for when, sig in steps(first_signal, term_at, kill_at):
        if await ended_by(when):
            return True
        send(sig)
    return await ended_by(reap_by)


def stop_now(
    send: Send,
    ended_by: Callable[[float], bool],
    first_signal: int | None,
    term_at: float,
    kill_at: float,
    reap_by: float,
) -> bool:
    """:func:`stop`'s synchronous twin: the same steps, ``ended_by`` blocks."""
    for when, sig in steps(first_signal, term_at, kill_at):
        if ended_by(when):
            return True
        send(sig)
    return ended_by(reap_by)
