"""Exec mode: root setup, step-down, then replace pyinit with the target (the gosu way).

One process: the target keeps pyinit's PID (PID 1 in a container) and gets
signals straight from the kernel.  Nothing here imports trio.
"""

from __future__ import annotations

from pyinit import log
from pyinit.root.setup import apply_root_setup
from pyinit.run.target import inherited_fds_to_keep, turn_into_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import NoReturn

    from pyinit.plan import Plan


def run_exec_mode(plan: Plan, original_mask: Iterable[int]) -> NoReturn:
    """Set up, step down and exec the target; raises PyinitError (125/126/127) on failure.

    ``original_mask`` is the signal mask pyinit started with; the target gets it back.
    """
    apply_root_setup(plan)
    log.info(f"exec {plan.command[0]} as {_who(plan)}")
    # LISTEN_PID already names us, and so the target.
    launch = plan.launch
    turn_into_target(launch, original_mask, inherited_fds_to_keep(launch), launch.env)


def _who(plan: Plan) -> str:
    return plan.identity.describe() if plan.identity is not None else "the current user"
