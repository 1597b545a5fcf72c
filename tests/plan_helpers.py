"""Planning in-process for tests: parse argv and build the plan, carrying nothing out."""

from __future__ import annotations

from sandbox import base_environment

from pyinit.cli import parse_options
from pyinit.plan import Plan, build_plan
from pyinit.plan.capabilities import CAPABILITY_NUMBERS

#: Every capability the kernel knows: a capability mask for root in a default container and more.
ALL_CAPS = (1 << (max(CAPABILITY_NUMBERS.values()) + 1)) - 1


def plan_for(
    argv: list[str],
    environ: dict[str, str] | None = None,
    *,
    euid: int = 0,
    pid: int = 4242,
    mask: int = ALL_CAPS,
) -> Plan:
    """Parse and plan ``argv`` as PID ``pid`` with the caller's ids and capabilities given.

    ``environ`` defaults to :func:`sandbox.base_environment`; pid 4242 is not
    PID 1, as in most tests that run pyinit.
    """
    env = base_environment() if environ is None else environ
    return build_plan(parse_options(argv, env), env, pid=pid, euid=euid, capability_mask=mask)
