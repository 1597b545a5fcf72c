"""Root setup: what the official images' docker-entrypoint.sh do as root, from flags.

(Placeholder while the full implementation lands.)
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Plan


def apply_root_setup(plan: Plan) -> None:
    """Carry out the plan's root-setup steps in order: mkdir, chown, rlimits, pre hooks."""
    if plan.has_setup_steps:
        from pyinit.errors import UsageError

        raise UsageError("root setup is not implemented yet")
