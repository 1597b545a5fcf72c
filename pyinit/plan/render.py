"""``--dry-run``: the plan as text a person reads, or as JSON."""

from __future__ import annotations

import signal

from pyinit.errors import SIGNAL_EXIT_BASE
from pyinit.plan.build import (
    SESSION_DETACHED,
    SESSION_GROUP,
    SESSION_KEEP,
    SESSION_OWN,
    SESSION_SETSID,
    format_limit,
)
from pyinit.plan.signals import signal_name
from pyinit.plan.stop import stop_budget

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyinit.plan import Plan
    from pyinit.plan.build import Launch
    from pyinit.plan.userspec import Identity


NOTIFY_KEPT = "NOTIFY_SOCKET: kept for pyinit (READY=1/STOPPING=1), not passed to children"
NOTIFY_PASSED = "NOTIFY_SOCKET: left to the target (exec mode: the target is pyinit's own process)"


def render_plan(plan: Plan, environ: Mapping[str, str], as_json: bool = False) -> str:
    """The plan, step by step in the order pyinit would carry it out.

    ``environ`` is the environment pyinit was started with: only the changes
    pyinit makes to it are shown, never the inherited values (a password
    passed as a plain variable must not end up in a CI log).
    """
    if as_json:
        import json

        data = plan.as_dict()
        del data["env"]
        del data["host"]
        data["launch"] = launch_summary(plan.launch, environ)
        data["secrets"] = secret_receivers(plan)  # names only: the values never leave the plan
        data["env_changes"] = env_changes(plan, environ)
        if plan.notify_socket is not None:
            data["notify_socket"] = "<from NOTIFY_SOCKET>"  # an inherited value: not shown
        _annotate_items(plan, data)
        if plan.mode == "supervise":
            data["stop_budget"] = stop_budget(plan).as_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    return "\n".join(_lines(plan)) + "\n"


def env_changes(plan: Plan, environ: Mapping[str, str]) -> dict[str, object]:
    """What pyinit sets and removes in the target's environment; secrets shown by source."""
    changed = {
        name: (f"<from {name}_FILE>" if name in plan.file_env else value)
        for name, value in plan.env.items()
        if environ.get(name) != value
    }
    removed = sorted(name for name in environ if name not in plan.env)
    return {"set": changed, "unset": removed}


def secret_receivers(plan: Plan) -> dict[str, list[str]]:
    """Which process receives which secret names (read from NAME_FILE), never the values.

    Keys are ``main`` and ``sidecar NAME`` / ``task NAME``; a name asked for
    whose NAME_FILE is not set is left out (nothing is read, nothing given).
    """
    receivers = {"main": [name for name in plan.file_env if name in plan.secrets]}
    for item in plan.items:
        receivers[f"{item.kind} {item.name}"] = [n for n in item.file_env if n in plan.secrets]
    return receivers


def _secret_lines(plan: Plan) -> list[str]:
    """The --dry-run block saying which process receives which secret names."""
    if not plan.file_env and not any(item.file_env for item in plan.items):
        return []
    lines = ["secrets read from NAME_FILE (names only; each process gets only its own):"]
    for who, names in secret_receivers(plan).items():
        lines.append(f"  {who}: {', '.join(names) if names else 'none'}")
    return lines


def _lines(plan: Plan) -> list[str]:
    lines = [
        f"mode: {plan.mode} ({plan.mode_reason}; pid {plan.host.pid}"
        f"{', PID 1' if plan.is_pid1 else ''})"
    ]
    if plan.config_files:
        lines.append(f"config files (merged in this order): {', '.join(plan.config_files)}")
    lines.extend(f"notice: {n}" for n in plan.notices)
    if plan.only_for is not None:
        lines.append(f"only-for: {plan.only_for.note}")
    lines.append("root setup:" if plan.root_setup else "root setup: none")
    step = 0

    def add(text: str) -> None:
        nonlocal step
        step += 1
        lines.append(f"  {step}. {text}")

    for m in plan.mkdirs:
        mode = f"mode {m.mode:04o}" if m.mode is not None else "mode 0755 if created"
        owner = _owner(plan, m.owner)
        add(f"mkdir {m.path} ({mode}), owned by {owner}; missing parents root-owned 0755")
    for c in plan.chowns:
        mounts = ", crossing mounts" if c.cross_mounts else ", staying on one file system"
        owner = _owner(plan, c.owner)
        add(f"chown -R (no symlinks) {c.path} to {owner}, policy {c.policy}{mounts}")
    for r in plan.rlimits:
        add(f"rlimit {r.name} soft={format_limit(r.soft)} hard={format_limit(r.hard)}")
    for h in plan.pre_hooks:
        add(f"pre hook {h.label}")
    lines.append("step-down:")
    if plan.identity is None:
        lines.append("  none (runs as the current user)")
    else:
        action = "switch to" if plan.switch_identity else "already running as"
        lines.append(f"  {action} {plan.identity.describe()}")
        if plan.extra_groups:
            lines.append(f"  extra groups {list(plan.extra_groups)}")
    if plan.umask is not None:
        lines.append(f"  umask {plan.umask:03o}")
    if plan.keep_caps:
        lines.append(f"  ambient capabilities {', '.join(plan.keep_caps)}")
    if plan.no_new_privs:
        lines.append("  no_new_privs")
    if plan.workdir is not None:
        lines.append(f"  workdir {plan.workdir}")
    for name in plan.file_env:
        lines.append(f"  env {name} from file" if name in plan.env else f"  env {name}: not set")
    if plan.items or plan.ready is not None:
        from pyinit.plan.items import describe_items

        lines.extend(describe_items(plan.items, plan.ready, plan.env, plan.host.euid))
    lines.extend(_secret_lines(plan))
    lines.append(f"command: {' '.join(plan.command)}")
    lines.append(f"logs: {describe_logs(plan)}")
    if plan.mode == "supervise":
        lines.append(
            f"supervise: stop timeout {plan.stop_timeout:g}s, signals to "
            f"{'process group' if plan.forward_to_group else 'target'}"
        )
        for src, dst in plan.rewrites:
            lines.append(
                f"  rewrite {signal_name(src)} -> {signal_name(dst) if dst else 'dropped'}"
            )
        if plan.success_exits:
            codes = _success_codes(plan.success_exits)
            lines.append(f"  success: the main's {codes} -> pyinit exits 0 (--success-exit)")
        for h in plan.post_hooks:
            lines.append(f"  post hook {h.label}")
        lines.extend(_budget_lines(plan))
        lines.append(f"  control socket: {plan.control or 'none (--control none)'}")
        if plan.notify_socket is not None:
            lines.append(f"  {NOTIFY_KEPT}")
    elif "NOTIFY_SOCKET" in plan.env:
        lines.append(NOTIFY_PASSED)
    return lines


def describe_logs(plan: Plan) -> str:
    """How pyinit's own and the relayed lines look (--log-format, --log-time); the main's never."""
    if plan.log_format == "json":
        what = "json, one object per line (time in RFC 3339 UTC, name, stream, line)"
    elif plan.log_time:
        what = "text with RFC 3339 UTC times ('TIME pyinit: ...', 'TIME NAME | line')"
    else:
        what = "text ('pyinit: ...', 'NAME | line')"
    return f"{what}; the main's output untouched"


def _budget_lines(plan: Plan) -> list[str]:
    """The stop timeline: who gets its stop signal by when, SIGKILL, each post hook's cut-off."""
    budget = stop_budget(plan)
    signals = {f"{i.kind} {i.name}": i.stop_signal for i in plan.items if i.kind == "sidecar"}
    lines = [
        f"  stop budget: {_secs(budget.timeout)} in turns of {_secs(budget.share)} "
        "(seconds after the stop; a turn ends early once its process is gone)"
    ]
    for turn in budget.turns:
        if turn.who == "main":
            what = "main: the forwarded stop signal (after a give-up: SIGTERM)"
        else:
            what = f"{turn.who}: {signal_name(signals.get(turn.who, signal.SIGTERM))}"
        when = "at" if turn.signal_by == 0 else "by"
        lines.append(f"    {when} {_secs(turn.signal_by):<7} {what}")
    lines.append(f"    at {_secs(budget.kill_by):<7} SIGKILL to every process still running")
    for hook in budget.hooks:
        lines.append(
            f"    by {_secs(hook.kill_by):<7} post hook {hook.label} cut off "
            "(SIGTERM up to 1s before, then SIGKILL)"
        )
    lines.append(f"    at {_secs(budget.timeout):<7} pyinit exits")
    return lines


def _success_codes(codes: tuple[int, ...]) -> str:
    """``exit 3 or 143 (128+SIGTERM)``: the --success-exit codes, a signal's named."""
    named = []
    for code in codes:
        name = signal_name(code - SIGNAL_EXIT_BASE) if code > SIGNAL_EXIT_BASE else ""
        named.append(f"{code} (128+{name})" if name.startswith("SIG") else str(code))
    return "exit " + " or ".join(named)


def _secs(seconds: float) -> str:
    """``1.875s``: a budget's time, to the millisecond."""
    return f"{round(seconds, 3):g}s"


def _annotate_items(plan: Plan, data: dict[str, object]) -> None:
    """Add what a reader wants besides the raw fields: the user and signal as text."""
    items = data.get("items")
    if not isinstance(items, list):
        return
    for item, record in zip(items, plan.items, strict=True):
        item["user"] = record.identity.describe() if record.identity is not None else None
        item["stop_signal_name"] = signal_name(record.stop_signal)
        if record.launch is not None:
            # The values of its environment stay out: they hold its secrets.
            item["launch"] = launch_summary(record.launch, plan.env)


#: What each Launch.session means, in --dry-run --json.
SESSION_TEXT = {
    SESSION_KEEP: "pyinit's own session and process group",
    SESSION_SETSID: "a new session without a terminal (setsid in place)",
    SESSION_GROUP: "a process group of its own, in the foreground of pyinit's terminal",
    SESSION_OWN: "a session of its own, taking pyinit's terminal",
    SESSION_DETACHED: "a session of its own, without a terminal",
}


def launch_summary(launch: Launch, base_env: Mapping[str, str]) -> dict[str, object]:
    """One process's launch record for ``--json``: its environment as names changed, no values.

    ``base_env`` is what its environment is compared with: the environment
    pyinit was started with for the main, the main's for an item.
    """
    identity = launch.identity
    changed, removed = env_names_changed(base_env, launch.env)
    return {
        "command": list(launch.command),
        "user": identity.describe() if identity is not None else None,
        "switch_identity": launch.switch_identity,
        "extra_groups": list(launch.extra_groups),
        "home": launch.env.get("HOME"),
        "workdir": launch.workdir,
        "env_set": changed,
        "env_unset": removed,
        "umask": launch.umask,
        "rlimits": [r.as_dict() for r in launch.rlimits],
        "keep_caps": list(launch.keep_caps),
        "no_new_privs": launch.no_new_privs,
        "keep_fds": list(launch.keep_fds),
        "session": launch.session,
        "session_text": SESSION_TEXT[launch.session],
    }


def env_names_changed(
    base: Mapping[str, str], env: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """The names ``env`` sets (new, or another value) and removes, compared with ``base``."""
    changed = sorted(name for name, value in env.items() if base.get(name) != value)
    removed = sorted(name for name in base if name not in env)
    return changed, removed


def _owner(plan: Plan, owner: Identity | None) -> str:
    """``redis (999:999)``: who one --mkdir/--chown path goes to (its =OWNER, else the target)."""
    if owner is not None:
        who = owner.name or f"uid {owner.uid}"
        return f"{who} ({owner.uid}:{owner.gid}, named by the path)"
    if plan.identity is None:
        return f"the current user ({plan.host.euid}:{plan.host.egid})"
    who = plan.identity.name or f"uid {plan.identity.uid}"
    return f"{who} ({plan.identity.uid}:{plan.identity.gid})"
