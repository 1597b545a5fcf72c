"""Pure planning: parse, resolve and decide, with no side effects.

Everything pyinit will do is decided here and held in one immutable
:class:`Plan`; the layers below (:mod:`pyinit.root`, :mod:`pyinit.run`)
only carry it out, and ``--dry-run`` prints it.
"""

from pyinit.plan.build import (
    CHOWN_POLICIES,
    DEFAULT_STOP_TIMEOUT,
    LOG_FORMATS,
    MODES,
    NON_ROOT_POLICIES,
    UNHEALTHY_POLICIES,
    ChownStep,
    Hook,
    MkdirStep,
    Plan,
    RlimitStep,
    build_plan,
    format_limit,
    frozen_env,
    required_capabilities,
)

__all__ = [
    "CHOWN_POLICIES",
    "DEFAULT_STOP_TIMEOUT",
    "LOG_FORMATS",
    "MODES",
    "NON_ROOT_POLICIES",
    "UNHEALTHY_POLICIES",
    "ChownStep",
    "Hook",
    "MkdirStep",
    "Plan",
    "RlimitStep",
    "build_plan",
    "format_limit",
    "frozen_env",
    "required_capabilities",
]
