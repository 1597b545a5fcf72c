"""Root setup: what the official images' docker-entrypoint.sh do as root, from flags.

:func:`apply_root_setup` carries out a finished plan's setup steps, as root,
before the step-down, in this order:

1. ``--mkdir``: create each directory (and missing parents), owned by the
   owner its path names (``=OWNER``) or else the target, with the exact mode asked;
2. ``--chown``: give each tree to its owner, or else the target (see :mod:`pyinit.root.chown`);
3. ``--pre`` then ``--pre-dir`` hooks, in order, as root, with the plan's
   environment; the first failure stops start-up (exit 125).

``--rlimit`` is not part of it: :func:`apply_rlimits` is called for the
target only (in the forked child in supervise mode, just before the
step-down in exec mode), so ``nofile=8`` cannot starve pyinit as PID 1.

``--mkdir`` is :mod:`pyinit.root.mkdir`, ``--chown`` :mod:`pyinit.root.chown`,
the hooks :mod:`pyinit.root.hooks`: each is imported only when the plan has
such a step, so a plan without root setup (the exec path, a plain target)
loads none of them.
"""

from __future__ import annotations

import os

from pyinit import log
from pyinit.errors import SIGNAL_EXIT_BASE, PyinitError
from pyinit.plan import format_limit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from pyinit.plan import Plan, RlimitStep
    from pyinit.plan.userspec import Identity


def target_ids(plan: Plan) -> tuple[int, int]:
    """The uid and gid setup gives things to: the target's, or the current user's."""
    if plan.identity is not None:
        return plan.identity.uid, plan.identity.gid
    return os.geteuid(), os.getegid()


def owner_ids(plan: Plan, owner: Identity | None) -> tuple[int, int]:
    """The uid and gid one ``--mkdir``/``--chown`` path goes to: its ``=OWNER``, else the target."""
    if owner is not None:
        return owner.uid, owner.gid
    return target_ids(plan)


def apply_root_setup(plan: Plan) -> None:
    """Carry out the plan's root-setup steps in order: mkdir, chown, pre hooks.

    Raises PyinitError (exit 125) naming the flag and path on the first
    failure; nothing after the failing step runs.
    """
    if not plan.root_setup:
        return
    if plan.mkdirs:
        from pyinit.root.mkdir import make_directory

        for step in plan.mkdirs:
            make_directory(step, *owner_ids(plan, step.owner))
    if plan.chowns:
        from pyinit.root.chown import chown_tree

        for c in plan.chowns:
            uid, gid = owner_ids(plan, c.owner)
            chown_tree(
                c.path,
                uid,
                gid,
                policy=c.policy,
                cross_mounts=c.cross_mounts,
                named_owner=c.owner is not None,
            )
    if plan.pre_hooks:
        run_pre_hooks(plan)


# --- --rlimit --------------------------------------------------------------------------


def apply_rlimits(limits: Iterable[RlimitStep]) -> None:
    """Set ``--rlimit`` ``limits`` on this process, which is about to become the target."""
    for limit in limits:
        set_rlimit(limit)


def set_rlimit(step: RlimitStep) -> None:
    """setrlimit for one ``--rlimit``; PyinitError naming the limit on failure."""
    import resource

    soft, hard = format_limit(step.soft), format_limit(step.hard)
    try:
        resource.setrlimit(step.resource, (step.soft, step.hard))
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        hint = ""
        if step.name == "nofile":
            hint = f" (the kernel caps nofile at /proc/sys/fs/nr_open = {_nr_open()})"
        raise PyinitError(f"--rlimit {step.name}={soft}:{hard}: {reason}{hint}") from None
    log.info(f"--rlimit {step.name}: soft {soft}, hard {hard}")


def _nr_open() -> str:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


# --- --pre / --pre-dir -----------------------------------------------------------------


def run_pre_hooks(plan: Plan) -> None:
    """Run the pre hooks in order as root; stop at the first failure (exit 125).

    Signals pyinit receives meanwhile (it may be PID 1) are relayed to the
    running hook; after a stop signal (TERM, INT, QUIT) the target is not
    started and pyinit exits with 128+N, as if the target had been stopped.
    """
    import signal

    from pyinit.plan.signals import STOP_SIGNALS
    from pyinit.root.hooks import SignalRelay, describe_returncode, run_hook

    with SignalRelay(sorted(STOP_SIGNALS | {signal.SIGHUP}), plan.stop_timeout) as relay:
        for hook in plan.pre_hooks:
            _stop_if_asked(relay.received, f"before pre hook {hook.label}")
            log.info(f"running pre hook {hook.label}")
            code = run_hook(hook, plan.env, relay=relay)
            _stop_if_asked(relay.received, f"during pre hook {hook.label}")
            if code != 0:
                raise PyinitError(f"pre hook {hook.label} {describe_returncode(code)}")


def _stop_if_asked(received: list[int], when: str) -> None:
    """Raise (exit 128+N) if a stop signal N arrived: a stopped container must not start."""
    from pyinit.plan.signals import STOP_SIGNALS, signal_name

    stops = [s for s in received if s in STOP_SIGNALS]
    if stops:
        raise PyinitError(
            f"received {signal_name(stops[0])} {when}: not starting the target",
            SIGNAL_EXIT_BASE + stops[0],
        )
