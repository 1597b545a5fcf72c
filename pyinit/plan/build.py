"""The plan: everything pyinit will do, parsed, resolved and checked, with no side effects.

``build_plan`` turns parsed options and the environment into one immutable
:class:`Plan`.  Every error a user can make (bad flag value, unknown user,
missing secret file, missing capability) surfaces here, before anything on
the system changes, so a bad start never leaves half-done setup behind.
The apply layer (:mod:`pyinit.root.setup`, :mod:`pyinit.run.target`,
:mod:`pyinit.run.supervisor`) only carries a finished plan out, and
``--dry-run`` prints it.
"""

from __future__ import annotations

import os
import resource
from types import MappingProxyType

from pyinit import DEFAULT_CONTROL
from pyinit.errors import UsageError, quoted
from pyinit.plan.capabilities import missing_capabilities, parse_capability
from pyinit.plan.host import Host, read_host
from pyinit.plan.signals import parse_rewrite, parse_success_exit
from pyinit.plan.sources import named_for_its_origin, supervise_only_given, typed
from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Mapping

    from pyinit.plan.onlyfor import OnlyFor
    from pyinit.plan.secrets import Target
    from pyinit.plan.services import Item, Liveness, Probe, Services
    from pyinit.plan.userspec import Identity

MODES = ("exec", "supervise", "auto")
CHOWN_POLICIES = ("always", "on-root-mismatch")
NON_ROOT_POLICIES = ("skip", "fail")
#: --log-format values (docs/services.md, "Logs").
LOG_FORMATS = ("text", "json")
#: --on-unhealthy values: what the main's failed liveness check does (docs/services.md).
UNHEALTHY_POLICIES = ("ignore", "stop")


class MkdirStep(Record):
    """Create ``path`` (and parents) owned by ``owner`` (None: the target), mode ``mode``."""

    __slots__ = ("mode", "owner", "path")
    path: str
    mode: int | None
    # The ``=OWNER`` the path names; None gives it to the target (see owner_ids).
    owner: Identity | None


class ChownStep(Record):
    """Give ``path`` and everything below to ``owner`` (None: the target), no symlinks followed."""

    __slots__ = ("cross_mounts", "owner", "path", "policy")
    path: str
    policy: str
    cross_mounts: bool
    owner: Identity | None


class RlimitStep(Record):
    """Set resource limit ``name`` to ``soft``/``hard`` (RLIM_INFINITY for unlimited)."""

    __slots__ = ("hard", "name", "resource", "soft")
    name: str
    resource: int
    soft: int
    hard: int


class Hook(Record):
    """A hook: a ``/bin/sh -c`` command, or an executable file from ``--pre-dir``."""

    __slots__ = ("argv", "label")
    label: str
    argv: tuple[str, ...]


#: How a process is placed in sessions and groups (:attr:`Launch.session`).
#: Exec mode: the target stays in pyinit's session and process group ...
SESSION_KEEP = "keep"
#: ... or, with --setsid, calls setsid() in place: a session without a terminal.
SESSION_SETSID = "setsid"
#: Supervised main: a process group of its own, in the foreground of pyinit's terminal.
SESSION_GROUP = "group"
#: Supervised main with --signal-group: a session of its own that takes pyinit's terminal.
SESSION_OWN = "session"
#: Supervised main with --setsid, and every sidecar and task: a session of its own,
#: never a terminal.
SESSION_DETACHED = "detached"


class Launch(Record):
    """How one process is started: everything its fork and exec need, decided in the plan.

    The main's is :attr:`Plan.launch` (derived from the plan's own fields);
    each sidecar's and task's is ``Item.launch``, made by :func:`build_plan`.
    The run layer applies it as it is (:func:`pyinit.run.target.turn_into_target`).
    """

    __slots__ = (
        "command",
        "env",
        "extra_groups",
        "identity",
        "keep_caps",
        "keep_fds",
        "listen_fds",
        "no_new_privs",
        "rlimits",
        "session",
        "switch_identity",
        "umask",
        "workdir",
    )
    command: tuple[str, ...]
    identity: Identity | None
    switch_identity: bool
    extra_groups: tuple[int, ...]
    # The whole environment it is exec'd with, read-only (secret values included).
    env: Mapping[str, str]
    workdir: str | None
    umask: int | None
    rlimits: tuple[RlimitStep, ...]
    # Capabilities raised as ambient (--keep-cap), and PR_SET_NO_NEW_PRIVS.
    keep_caps: tuple[str, ...]
    no_new_privs: bool
    # The inherited descriptors >= 3 it keeps: --keep-fd and the socket-activation ones.
    keep_fds: tuple[int, ...]
    # How many of keep_fds, from 3, are socket activation's: LISTEN_PID becomes its pid.
    listen_fds: int
    session: str  # one of the SESSION_* values


class Plan(Record):
    """Everything pyinit will do, in the order it will do it."""

    __slots__ = (
        "alive",
        "chowns",
        "command",
        "config_files",
        "control",
        "env",
        "extra_groups",
        "file_env",
        "forward_to_group",
        "host",
        "identity",
        "is_pid1",
        "items",
        "keep_caps",
        "keep_fds",
        "listen_fds",
        "log_format",
        "log_time",
        "mkdirs",
        "mode",
        "mode_reason",
        "mode_requested",
        "no_new_privs",
        "notices",
        "notify_socket",
        "on_unhealthy",
        "only_for",
        "post_hooks",
        "pre_hooks",
        "ready",
        "rewrites",
        "rlimits",
        "root_setup",
        "secrets",
        "setsid",
        "stop_delay",
        "stop_timeout",
        "success_exits",
        "switch_identity",
        "umask",
        "workdir",
    )
    command: tuple[str, ...]
    mode: str
    mode_requested: str
    # Why: who asked for exec/supervise, or what made auto pick it (shown by --dry-run).
    mode_reason: str
    is_pid1: bool
    identity: Identity | None
    switch_identity: bool
    extra_groups: tuple[int, ...]
    root_setup: bool
    mkdirs: tuple[MkdirStep, ...]
    chowns: tuple[ChownStep, ...]
    umask: int | None
    rlimits: tuple[RlimitStep, ...]
    workdir: str | None
    file_env: tuple[str, ...]
    # The target's whole environment, read-only (see frozen_env).
    env: Mapping[str, str]
    # Every value read from a NAME_FILE, the main's (--file-env, also in env) and the
    # items' (file-env=), by name, read-only: an item gets only those it names.
    # Never printed (--dry-run shows the names).
    secrets: Mapping[str, str]
    pre_hooks: tuple[Hook, ...]
    post_hooks: tuple[Hook, ...]
    no_new_privs: bool
    keep_caps: tuple[str, ...]
    keep_fds: tuple[int, ...]
    # Socket activation: how many fds from 3 were passed to pyinit (LISTEN_PID = our pid).
    listen_fds: int
    setsid: bool
    stop_timeout: float
    # --stop-delay: after a stop signal, seconds of draining (not ready, the main not yet
    # signalled) before it is forwarded; the first part of the stop_timeout deadline.
    stop_delay: float
    forward_to_group: bool
    # Supervise mode: the NOTIFY_SOCKET pyinit was given, for its own READY=1/STOPPING=1;
    # no child inherits it (it is not in env).  None in exec mode, where the target is
    # pyinit's process and keeps it in env, and when there is none (or it is empty).
    notify_socket: str | None
    rewrites: tuple[tuple[int, int], ...]
    # --success-exit: the main's exit codes (128+N: killed by signal N) pyinit exits 0 for.
    success_exits: tuple[int, ...]
    notices: tuple[str, ...]
    # --only-for: whether the command is the service's (None without the flag).
    only_for: OnlyFor | None
    # pyinit's own lines and the relayed ones: text or json (LOG_FORMATS), with times or not.
    log_format: str
    log_time: bool
    # Sidecars and tasks (docs/services.md), in start order; the main's --ready probe.
    items: tuple[Item, ...]
    ready: Probe | None
    # The main's liveness check (--alive, None without), and what its death does
    # (--on-unhealthy: ignore or stop).
    alive: Liveness | None
    on_unhealthy: str
    # The --config files read, in the order they were merged.
    config_files: tuple[str, ...]
    # Supervise mode: the control socket's path (pyinitctl); None: no socket (exec mode,
    # --control none).
    control: str | None
    # The host as the plan found it (pyinit's pid and ids, limits, terminal): every host
    # fact a decision or --dry-run uses comes from here.
    host: Host

    @property
    def launch(self) -> Launch:
        """The main's launch record, derived from this plan's fields (``replace`` keeps it true)."""
        return Launch(
            command=self.command,
            identity=self.identity,
            switch_identity=self.switch_identity,
            extra_groups=self.extra_groups,
            env=self.env,
            workdir=self.workdir,
            umask=self.umask,
            rlimits=self.rlimits,
            keep_caps=self.keep_caps,
            no_new_privs=self.no_new_privs,
            keep_fds=(*range(3, 3 + self.listen_fds), *self.keep_fds),
            listen_fds=self.listen_fds,
            session=self.main_session,
        )

    def exit_code_for_main(self, code: int) -> int:
        """pyinit's exit code when the main's own ``code`` ends it: 0 if --success-exit lists it.

        Only for the main's status (its code, or 128+N when signal N killed
        it), never for pyinit's own codes (125, a give-up, a stop before the
        main ran): the run layer calls it where the main's end decides.
        """
        return 0 if code in self.success_exits else code

    @property
    def main_session(self) -> str:
        """The main's ``Launch.session``: decided by the mode, --setsid and --signal-group."""
        if self.mode == "exec":
            return SESSION_SETSID if self.setsid else SESSION_KEEP
        if self.setsid:
            return SESSION_DETACHED
        return SESSION_OWN if self.forward_to_group else SESSION_GROUP


def frozen_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """A read-only copy of ``env``, as ``Plan.env`` holds it (``os.execve`` takes it as is).

    A derived environment (an item's, LISTEN_PID, PYINIT_EXIT_CODE) is built
    as a new dict from it; one that goes back into a Plan is frozen again.
    """
    return MappingProxyType(dict(env))


def item_launch(plan: Plan, item: Item) -> Launch:
    """An item's launch record: its command, user, environment and workdir; the main's hygiene.

    Its environment is the main's without the secrets read for the main (or
    any item), with its own HOME, USER and LOGNAME when it has a user, its
    ``env=`` pairs and the secrets it names (``file-env=``).  It keeps the
    main's umask, rlimits and no_new_privs; no extra groups, no capabilities,
    no inherited descriptors; a session of its own without a terminal.
    """
    env = dict(plan.env)
    for name in plan.secrets:
        env.pop(name, None)
    if item.identity is not None:
        for name in ("USER", "LOGNAME"):
            env.pop(name, None)
        env.update(_identity_environment(item.identity))
    env.update(item.env)
    env.update({name: plan.secrets[name] for name in item.file_env if name in plan.secrets})
    return Launch(
        command=item.command,
        identity=item.identity,
        switch_identity=item.switch_identity,
        extra_groups=(),
        env=frozen_env(env),
        workdir=item.workdir,
        umask=plan.umask,
        rlimits=plan.rlimits,
        keep_caps=(),
        no_new_privs=plan.no_new_privs,
        keep_fds=(),
        listen_fds=0,
        session=SESSION_DETACHED,
    )


# --- small parsers, each naming its flag in errors ---------------------------------


def parse_octal(text: str, flag: str, maximum: int) -> int:
    """Parse an octal mode or mask such as ``0750`` or ``027``."""
    digits = text.strip()
    digits = digits[2:] if digits[:2] in ("0o", "0O") else digits
    if not digits or any(c not in "01234567" for c in digits):
        raise UsageError(f"{flag} {quoted(text)}: expected an octal number such as 0750")
    value = int(digits, 8)
    if value > maximum:
        raise UsageError(f"{flag} {quoted(text)}: out of range (at most {maximum:o})")
    return value


def parse_mkdir(text: str, current: tuple[int, int] | None = None) -> MkdirStep:
    """Parse ``PATH[:MODE][=OWNER]``; PATH must be absolute and is normalised (see _absolute).

    ``current``: pyinit's real (uid, gid), for an OWNER without a user or group part.
    """
    rest, owner = split_owner(text, "--mkdir", current)
    path, sep, mode_text = rest.rpartition(":")
    if not sep or "/" in mode_text:
        path, mode_text = rest, ""
    mode = parse_octal(mode_text, "--mkdir", 0o7777) if mode_text else None
    return MkdirStep(path=_absolute(path, "--mkdir"), mode=mode, owner=owner)


def parse_chown(
    text: str,
    policy: str = "always",
    cross_mounts: bool = False,
    current: tuple[int, int] | None = None,
) -> ChownStep:
    """Parse ``PATH[=OWNER]``; PATH must be absolute and is normalised (see _absolute)."""
    path, owner = split_owner(text, "--chown", current)
    return ChownStep(
        path=_absolute(path, "--chown"), policy=policy, cross_mounts=cross_mounts, owner=owner
    )


def split_owner(
    text: str, flag: str, current: tuple[int, int] | None = None
) -> tuple[str, Identity | None]:
    """Split ``PATH[:MODE]=OWNER`` at its last ``=``: the rest, and OWNER resolved (or None).

    OWNER is a user spec as for --user.  An ``=`` followed by a ``/``
    belongs to a directory name, not to an owner, so a path whose last
    name holds ``=`` is written with a trailing ``/`` (``/srv/a=b/``).
    """
    rest, sep, spec = text.rpartition("=")
    if not sep or "/" in spec:
        return text, None
    where = f"{flag} {text!r}"
    if not spec:
        raise UsageError(f"{where}: empty owner after '=' (PATH=USER[:GROUP], e.g. {rest}=app)")
    group = spec.partition(":")[2]
    if ":" in group or (flag == "--mkdir" and group[:1] == "0" and len(group) > 1):
        # gosu drops what follows a second ':', and app:0750 is gid 750: both are a mode
        # written after the owner, never silently misread.
        raise UsageError(
            f"{where}: owner {spec!r} ends like a mode; the mode goes before the owner"
            " (PATH:MODE=USER[:GROUP])"
        )
    from pyinit.plan.userspec import resolve_user_spec_as

    try:
        owner = resolve_user_spec_as(spec, f"{where}: owner {spec!r}", current)
    except UsageError as e:
        if ": unknown user " not in e.message:
            raise
        hint = f" (a path whose last name holds '=' is written with a trailing '/': {text}/)"
        raise UsageError(e.message + hint) from None
    return rest, owner


def _require_absolute(path: str, flag: str) -> None:
    """Refuse a relative path, and one that is (or normalises to) the root directory."""
    if not path.startswith("/"):
        raise UsageError(f"{flag} {quoted(path)}: path must be absolute")
    if _normalise(path) == "/":
        # Handing / (and every file system mounted under it) to a service user
        # is never what was meant; /tmp/.. and /./. are / too.
        raise UsageError(f"{flag} {quoted(path)}: refusing to act on the root directory")


def _normalise(path: str) -> str:
    """``path`` with ``.``, ``..`` and repeated slashes resolved as text (``//x`` is ``/x``)."""
    normal = os.path.normpath(path)
    # POSIX normpath keeps a leading "//"; the kernel treats it as "/".
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


RLIMIT_ALIASES = {"nofile": "NOFILE", "openfiles": "NOFILE", "procs": "NPROC"}


def parse_rlimit(text: str, nr_open: int | None = None) -> RlimitStep:
    """Parse ``NAME=SOFT[:HARD]``; NAME as RLIMIT_* without prefix, values or ``unlimited``.

    ``nr_open`` (the host snapshot's fs.nr_open), when known, caps nofile.
    """
    flag = "--rlimit"
    name_text, sep, values = text.partition("=")
    if not sep or not values:
        raise UsageError(f"{flag} {quoted(text)}: expected NAME=SOFT[:HARD], e.g. nofile=65536")
    name = name_text.strip().upper().removeprefix("RLIMIT_")
    name = RLIMIT_ALIASES.get(name.lower(), name)
    # ASCII only: str.upper() maps e.g. "\u017f" to "S", which would make odd text a limit name.
    valid = name_text.isascii() and name.replace("_", "").isalnum()
    number = getattr(resource, "RLIMIT_" + name, None) if valid else None
    if not isinstance(number, int) or not name:
        known = ", ".join(sorted(n[7:].lower() for n in dir(resource) if n.startswith("RLIMIT_")))
        raise UsageError(
            f"{flag} {quoted(text)}: unknown limit {quoted(name_text)} (one of {known})"
        )
    soft_text, _, hard_text = values.partition(":")
    soft = _parse_limit_value(soft_text, flag, text)
    hard = _parse_limit_value(hard_text, flag, text) if hard_text else soft
    if _limit_exceeds(soft, hard):
        raise UsageError(f"{flag} {quoted(text)}: soft limit is above the hard limit")
    if number == resource.RLIMIT_NOFILE and nr_open is not None:
        _check_nofile(hard, text, nr_open)
    return RlimitStep(name=name.lower(), resource=number, soft=soft, hard=hard)


#: The largest finite limit: rlim_t is 64 bits and RLIM_INFINITY is its all-ones value.
MAX_FINITE_LIMIT = 2**63 - 1


def _parse_limit_value(value: str, flag: str, text: str) -> int:
    value = value.strip().lower()
    if value in ("unlimited", "infinity", "-1"):
        return resource.RLIM_INFINITY
    if not _ascii_digits(value):
        raise UsageError(
            f"{flag} {quoted(text)}: limit {quoted(value)} is not a number or 'unlimited'"
        )
    number = int(value)
    if number > MAX_FINITE_LIMIT:
        raise UsageError(
            f"{flag} {quoted(text)}: limit {value} is out of range "
            f"(0..{MAX_FINITE_LIMIT} or 'unlimited')"
        )
    return number


def _check_nofile(hard: int, text: str, nr_open: int) -> None:
    # The kernel refuses (EPERM) any nofile limit above fs.nr_open, unlimited
    # included: say so now rather than fail after the setup began.
    if _limit_exceeds(hard, nr_open):
        raise UsageError(
            f"--rlimit {quoted(text)}: the kernel allows at most {nr_open} open files (fs.nr_open)"
        )


def format_limit(value: int) -> str:
    """A limit as users write it: the number, or ``unlimited``."""
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _limit_exceeds(a: int, b: int) -> bool:
    """Whether limit ``a`` is above limit ``b``, with RLIM_INFINITY the largest."""
    inf = resource.RLIM_INFINITY
    if a == b:
        return False
    return a == inf or (b != inf and a > b)


#: ``--stop-timeout`` by default: ends well inside Docker's 10 s grace (and Kubernetes' 30 s).
#: Here, not with the stop policy (:mod:`pyinit.plan.stop`): the exec path has no stop, and
#: reads it (for the help text and the plan) without loading that module.
DEFAULT_STOP_TIMEOUT = 8.0
#: The longest --stop-timeout: a year is already "never" for a stop deadline.
MAX_STOP_TIMEOUT = 365 * 24 * 3600.0


def parse_stop_timeout(text: str) -> float:
    """Parse a non-negative number of seconds: ASCII digits with an optional fraction."""
    return parse_seconds(text, "--stop-timeout")


def parse_stop_delay(text: str) -> float:
    """Parse ``--stop-delay``: seconds, as ``--stop-timeout``."""
    return parse_seconds(text, "--stop-delay")


def parse_seconds(text: str, flag: str) -> float:
    """Parse a non-negative number of seconds for ``flag``: ASCII digits, optional fraction."""
    digits = text.strip()
    # float() alone would also take "1_0", "1e3", "nan" and non-ASCII digits.
    whole, _, fraction = digits.partition(".")
    if not (whole or fraction) or not _ascii_digits(whole or "0", fraction or "0"):
        raise UsageError(f"{flag} {quoted(text)}: expected seconds, e.g. 10 or 2.5")
    value = float(digits)
    if value > MAX_STOP_TIMEOUT:
        raise UsageError(f"{flag} {quoted(text)}: at most {MAX_STOP_TIMEOUT:g} seconds")
    return value


def parse_fd(text: str, limit: int | None = None) -> int:
    """Parse a descriptor number >= 3 for ``--keep-fd``, below the fd table size.

    ``limit`` (:attr:`pyinit.plan.host.Host.fd_table_size`: the RLIMIT_NOFILE
    hard limit) is the size of the descriptor table: no inherited descriptor
    can be at or above it.  Without it only the syntax is checked.
    """
    if not _ascii_digits(text) or int(text) < 3:
        raise UsageError(f"--keep-fd {quoted(text)}: expected a descriptor number >= 3")
    fd = int(text)
    if limit is not None and fd >= limit:
        raise UsageError(
            f"--keep-fd {quoted(text)}: no such descriptor can exist (the fd table has {limit} "
            "entries, RLIMIT_NOFILE hard limit)"
        )
    return fd


def parse_listen_fds(environ: Mapping[str, str], pid: int, limit: int) -> int:
    """How many socket-activation fds (from 3) were passed to pyinit: LISTEN_FDS, if for us.

    sd_listen_fds(3) semantics: the count is ignored unless ``LISTEN_PID`` is
    our pid.  A count the fd table (``limit``: the RLIMIT_NOFILE hard limit)
    cannot hold is refused rather than trusted.
    """
    count = environ.get("LISTEN_FDS", "")
    if not _ascii_digits(count) or environ.get("LISTEN_PID") != str(pid):
        return 0
    if int(count) > limit - 3:
        raise UsageError(
            f"LISTEN_FDS={count}: more descriptors than the fd table holds ({limit} entries,"
            " RLIMIT_NOFILE hard limit)"
        )
    return int(count)


def _ascii_digits(*texts: str) -> bool:
    return all(t.isascii() and t.isdigit() for t in texts)


def shell_hook(command: str, flag: str) -> Hook:
    """A hook run as ``/bin/sh -c COMMAND``."""
    if not command.strip():
        raise UsageError(f"{flag}: empty command")
    return Hook(label=f"{flag} {command!r}", argv=("/bin/sh", "-c", command))


def hooks_from_directory(directory: str) -> list[Hook]:
    """The executable regular files of ``--pre-dir DIR``, in lexical order.

    Like the official images' /docker-entrypoint.d: files without the
    execute bit are skipped, so a README or a disabled script can sit there.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        raise UsageError(f"--pre-dir {quoted(directory)}: no such directory") from None
    except OSError as e:
        raise UsageError(f"--pre-dir {quoted(directory)}: {e.strerror}") from None
    hooks = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            hooks.append(Hook(label=f"--pre-dir {path}", argv=(path,)))
    return hooks


# --- building the plan ---------------------------------------------------------------


def build_plan(
    options: Namespace,
    environ: Mapping[str, str],
    *,
    host: Host | None = None,
    pid: int | None = None,
    euid: int | None = None,
    capability_mask: int | None = None,
) -> Plan:
    """Resolve parsed options and the environment into a complete, checked Plan.

    Decides from ``host`` (default: :func:`pyinit.plan.host.read_host`, this
    process as it is now; ``pid``, ``euid`` and ``capability_mask`` override
    single facts of it) and reads /etc/passwd, /etc/group and secret files;
    changes nothing.  Raises UsageError (exit 125) on the first problem found.
    """
    if not options.command:
        raise UsageError("no command given (usage: pyinit [OPTIONS] -- COMMAND [ARG...])")
    host = read_host() if host is None else host
    pid = host.pid if pid is None else pid
    euid = host.euid if euid is None else euid
    if capability_mask is None:
        capability_mask = host.capability_set("CapEff")
    _refuse_setuid_install(host)
    if (pid, euid) != (host.pid, host.euid):  # a caller's override of single facts
        host = host.replace(pid=pid, uids=(host.uids[0], euid, host.uids[2]))
    only_for: OnlyFor | None = None
    if getattr(options, "only_for", None):
        from pyinit.plan.onlyfor import decide_only_for

        options, only_for = decide_only_for(options, euid)
    runs_service = only_for is None or only_for.matched

    identity = _main_identity(options, host)
    extra_groups = _extra_groups(options.groups)
    if options.keep_groups:
        if identity is None:
            raise UsageError("--keep-groups needs --user (the groups are set during the step-down)")
        extra_groups += runtime_groups(host.groups)
    if extra_groups and identity is None:
        raise UsageError("--groups needs --user (the groups are set during the step-down)")
    mode, mode_reason = _resolve_mode(options, pid)
    notices: list[str] = []
    if mode == "supervise" and pid != 1:
        notices.append(
            f"not PID 1 (pid {pid}): becoming a child subreaper so orphans are still reaped"
        )

    switch_identity = False
    if identity is not None:  # pyinit.plan.userspec is imported only for a user or group
        from pyinit.plan.userspec import needs_identity_switch

        switch_identity = needs_identity_switch(
            identity, euid, host.egid, host.groups, extra_groups
        )
    skip_non_root = switch_identity and _cannot_switch_as_non_root(
        euid, options.if_not_root, capability_mask
    )
    if skip_non_root:
        # What the official images' entrypoints do (`if [ "$(id -u)" = 0 ]`):
        # started with --user / runAsUser, run as that user, no setup, no gosu.
        assert identity is not None
        notices.append(
            f"running as uid {euid} without CAP_SETUID/CAP_SETGID: skipping root setup and the "
            f"step-down to {quoted(identity.spec)} (--if-not-root fail makes this an error)"
        )
        switch_identity = False
    mkdirs = tuple(parse_mkdir(m, host.real_ids) for m in options.mkdir)
    chowns = tuple(
        parse_chown(p, options.chown_policy, options.chown_cross_mounts, host.real_ids)
        for p in options.chown
    )
    rlimits = tuple(parse_rlimit(r, host.nr_open) for r in options.rlimit)
    pre_hooks = [shell_hook(c, "--pre") for c in options.pre]
    for directory in options.pre_dir:
        pre_hooks.extend(hooks_from_directory(directory))
    post_hooks = tuple(shell_hook(c, "--post") for c in options.post)

    services = _plan_services(options, identity, skip_non_root, euid, capability_mask, host)
    items, ready, alive, on_unhealthy = (
        (services.items, services.ready, services.alive, services.on_unhealthy)
        if services is not None
        else ((), None, None, "ignore")
    )
    notices.extend(services.notices if services is not None else ())
    config_sources = getattr(options, "config_sources", ())
    if config_sources:
        # Before any secret is read for them: the users are known only now.
        main_user = _secret_target(identity, extra_groups, switch_identity, euid)
        users = _item_users(items, main_user, euid)
        for source in config_sources:
            source.check_trust(users)

    from_env = _split_list(environ.get("PYINIT_FILE_ENV", "")) if runs_service else []
    file_env_names = tuple(dict.fromkeys(from_env + list(options.file_env)))
    env = dict(environ)
    secrets: dict[str, str] = {}
    if file_env_names:  # pyinit.plan.secrets is imported only when there are some to read
        from pyinit.plan.secrets import resolve_file_env

        secret_target = _secret_target(identity, extra_groups, switch_identity, euid)
        secrets = resolve_file_env(file_env_names, environ, target=secret_target)
    env.update(secrets)
    item_secrets = _item_secrets(items, environ, euid)
    for name in (*file_env_names, *item_secrets):
        # pyinit consumes NAME_FILE: no process sees the path of a secret.
        env.pop(name + "_FILE", None)
    if identity is not None and not skip_non_root:
        # A uid without a name must not inherit the caller's USER=root.
        env.pop("USER", None)
        env.pop("LOGNAME", None)
        env.update(_identity_environment(identity))
    notify_socket: str | None = None
    if mode == "supervise":
        # pyinit's own manager's socket: pyinit reports READY=1/STOPPING=1 to it
        # itself, and a child that inherited it could report for the container.
        notify_socket = env.pop("NOTIFY_SOCKET", None) or None
    stack = [r.soft for r in rlimits if r.resource == resource.RLIMIT_STACK]
    stack_limit = stack[-1] if stack else None
    if secrets:  # without secrets read there is nothing to check (see check_exec_budget)
        from pyinit.plan.secrets import check_exec_budget

        check_exec_budget(options.command, env, secrets, stack_limit)

    wants_setup = bool(mkdirs or chowns or rlimits or pre_hooks)
    root_setup = wants_setup
    if wants_setup and euid != 0 and not switch_identity:
        if options.if_not_root == "fail":
            raise UsageError(f"root setup asked for but running as uid {euid} (--if-not-root fail)")
        if not skip_non_root:
            notices.append(f"running as uid {euid}, not root: skipping root setup")
        root_setup = False

    plan = Plan(
        command=tuple(options.command),
        mode=mode,
        mode_requested=options.mode,
        mode_reason=mode_reason,
        is_pid1=pid == 1,
        identity=identity,
        switch_identity=switch_identity,
        extra_groups=extra_groups,
        root_setup=root_setup,
        mkdirs=mkdirs if root_setup else (),
        chowns=chowns if root_setup else (),
        umask=parse_octal(options.umask, "--umask", 0o777) if options.umask is not None else None,
        rlimits=rlimits if root_setup else (),
        workdir=parse_workdir(options.workdir),
        file_env=file_env_names,
        env=frozen_env(env),
        secrets=frozen_env({**item_secrets, **secrets}),
        pre_hooks=tuple(pre_hooks) if root_setup else (),
        post_hooks=post_hooks,
        no_new_privs=options.no_new_privs,
        keep_caps=tuple(dict.fromkeys(parse_capability(c, "--keep-cap") for c in options.keep_cap)),
        keep_fds=tuple(parse_fd(f, host.fd_table_size) for f in options.keep_fd),
        listen_fds=parse_listen_fds(environ, pid, host.fd_table_size),
        setsid=options.setsid,
        stop_timeout=_stop_timeout(options),
        stop_delay=_stop_delay(options),
        forward_to_group=options.signal_group,
        notify_socket=notify_socket,
        rewrites=tuple(parse_rewrite(r) for r in options.rewrite),
        success_exits=_success_exits(options),
        notices=tuple(notices),
        only_for=only_for,
        log_format=_log_format(options.log_format),
        log_time=options.log_time,
        items=items,
        ready=ready,
        alive=alive,
        on_unhealthy=on_unhealthy,
        config_files=tuple(s.path for s in config_sources if not s.is_directory),
        control=_control(options, mode, host),
        host=host,
    )
    if plan.items:
        plan = plan.replace(items=tuple(i.replace(launch=item_launch(plan, i)) for i in plan.items))
    check_item_exec_budgets(plan, stack_limit)
    check_capabilities(plan, euid, capability_mask)
    check_step_down(plan)
    check_ready_fd(plan, host.fd_table_size)
    check_exec_setsid(plan, host)
    return plan


def _log_format(value: str) -> str:
    """--log-format's value, checked (argparse and the config file check it first)."""
    if value not in LOG_FORMATS:
        raise UsageError(f"--log-format {quoted(value)}: expected one of {', '.join(LOG_FORMATS)}")
    return value


def check_exec_setsid(plan: Plan, host: Host) -> None:
    """Refuse in the plan what target.new_session would refuse: --setsid that exec mode cannot do.

    setsid() fails for a process-group leader; leading a session with no
    terminal already meets the goal, anything else needs the fork of
    supervise mode.
    """
    if plan.main_session != SESSION_SETSID or host.pgrp != host.pid:
        return
    if host.sid == host.pid and not host.controlling_terminal:
        return
    raise UsageError(
        f"--setsid: pyinit (pid {host.pid}) leads process group {host.pgrp} "
        "and cannot start a new session in exec mode; use --mode supervise"
    )


def check_item_exec_budgets(plan: Plan, stack_soft_limit: int | None) -> None:
    """Refuse an item's ``file-env=`` secrets that would push its exec past the budget."""
    for item in plan.items:
        if item.file_env and item.launch is not None:
            from pyinit.plan.secrets import check_exec_budget

            flag = f"{item.source}: file-env="
            check_exec_budget(item.command, item.launch.env, item.file_env, stack_soft_limit, flag)


def check_ready_fd(plan: Plan, limit: int) -> None:
    """Refuse an ``fd:N`` probe past the fd table (``limit`` entries), or one the main has."""
    for item in plan.items:
        if item.ready is not None and item.ready.fd is not None and item.ready.fd >= limit:
            where = f"{item.kind} {item.name}: ready={quoted(item.ready.text)}"
            raise UsageError(f"{where}: {_past_fd_table(limit)}")
    ready = plan.ready
    if ready is None or ready.fd is None:
        return
    fd = ready.fd
    if fd >= limit:
        raise UsageError(f"--ready {quoted(ready.text)}: {_past_fd_table(limit)}")
    if fd in plan.keep_fds:
        why = f"--keep-fd {fd} passes the main that descriptor already"
    elif fd < 3 + plan.listen_fds:
        last = 2 + plan.listen_fds
        why = f"LISTEN_FDS={plan.listen_fds} passes the main fds 3..{last} (socket activation)"
    else:
        return
    raise UsageError(f"--ready {quoted(ready.text)}: {why}; pick another N for the readiness pipe")


def _past_fd_table(limit: int) -> str:
    return (
        f"no such descriptor can exist (the fd table has {limit} entries, RLIMIT_NOFILE hard limit)"
    )


def check_step_down(plan: Plan) -> None:
    """Refuse, before anything is done, a step-down the run-time verification would refuse.

    With CAP_SETUID kept a non-root target can ``setuid(0)``: the drop would
    not be a drop (identity.verify_step_down checks the same at run time).
    """
    identity = plan.identity
    dropping = plan.switch_identity and identity is not None and identity.uid != 0
    if dropping and identity is not None and "SETUID" in plan.keep_caps:
        raise UsageError(
            f"--keep-cap SETUID: with it uid {identity.uid} (--user {quoted(identity.spec)}) could "
            "setuid(0) back to root; the step-down would not be one"
        )


def _secret_target(
    identity: Identity | None, extra_groups: tuple[int, ...], switch_identity: bool, euid: int
) -> Target | None:
    """Whom ``--file-env`` paths must be safe from: the step-down's user, if it is another."""
    if identity is None or not switch_identity or identity.uid in (0, euid):
        return None
    from pyinit.plan.secrets import Target

    gids = (identity.gid, *identity.groups, *extra_groups)
    return Target(identity.uid, gids, trusted=(0, euid))


def _item_secrets(items: tuple[Item, ...], environ: Mapping[str, str], euid: int) -> dict[str, str]:
    """The ``file-env=`` secrets of every item, each path checked against that item's user."""
    values: dict[str, str] = {}
    for item in items:
        if item.file_env:
            from pyinit.plan.secrets import resolve_file_env

            target = _secret_target(item.identity, (), item.switch_identity, euid)
            flag = f"{item.source}: file-env="
            values.update(resolve_file_env(item.file_env, environ, target=target, flag=flag))
    return values


def _item_users(items: tuple[Item, ...], main_user: Target | None, euid: int) -> list[Target]:
    """The users pyinit steps down to for the main (MAIN_USER) and for each item."""
    from pyinit.plan.secrets import Target

    users = [] if main_user is None else [main_user]
    for item in items:
        identity = item.identity
        if identity is not None and item.switch_identity and identity.uid not in (0, euid):
            gids = (identity.gid, *identity.groups)
            users.append(Target(identity.uid, gids, trusted=(0, euid)))
    return users


def _plan_services(
    options: Namespace,
    identity: Identity | None,
    skip_non_root: bool,
    euid: int,
    capability_mask: int,
    host: Host,
) -> Services | None:
    """Sidecars, tasks, --ready and --alive; None without any (no services module imported)."""
    wanted = ("ready", "alive", "alive_every", "alive_failures", "on_unhealthy")
    if not getattr(options, "items", None) and all(
        getattr(options, w, None) is None for w in wanted
    ):
        return None
    from pyinit.plan.items import plan_services

    return plan_services(
        options,
        identity,
        skip_non_root=skip_non_root,
        euid=euid,
        capability_mask=capability_mask,
        host=host,
    )


def _cannot_switch_as_non_root(euid: int, policy: str, capability_mask: int) -> bool:
    """Non-root, asked for another user, without the capabilities, and told to skip."""
    if euid == 0 or policy != "skip":
        return False
    return bool(missing_capabilities({"SETUID": "", "SETGID": ""}, capability_mask))


def runtime_groups(groups: tuple[int, ...]) -> tuple[int, ...]:
    """Of the supplementary ``groups`` pyinit was started with, those that are not root's own.

    What a runtime adds (docker --group-add, Kubernetes fsGroup and
    supplementalGroups) minus gid 0 and every group whose member list names
    root: the step-down must never hand root's groups to the target.
    """
    from pyinit.plan.userspec import read_group

    roots = {0} | {g.gid for g in read_group() if "root" in g.members}
    return tuple(g for g in groups if g not in roots)


def _split_list(text: str | list[str] | None) -> list[str]:
    if not text:
        return []
    items = text if isinstance(text, list) else [text]
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _absolute(path: str, flag: str) -> str:
    """The normalised absolute path a root-setup flag acts on, validated as normalised.

    The check and the action use the same text: what is refused is what
    would have been used (``/tmp/..`` is ``/``), and ``..`` never survives
    into a path that root setup opens.
    """
    _require_absolute(path, flag)
    return _normalise(path)


def parse_workdir(text: str | None) -> str | None:
    """``--workdir``: an absolute directory or ``~``/``~/SUB`` (the target's home), normalised."""
    if text is None:
        return None
    if text == "~" or text.startswith("~/"):
        rest = _normalise("/" + text[2:]) if text != "~" else "/"
        return "~" if rest == "/" else "~" + rest
    if not text.startswith("/"):
        raise UsageError(
            f"--workdir {quoted(text)}: path must be absolute (or ~ / ~/SUB for the target's home)"
        )
    return _normalise(text)


def _refuse_setuid_install(host: Host) -> None:
    # Like gosu: an init installed setuid would hand root to any local user.
    ruid, euid, _ = host.uids
    rgid, egid, _ = host.gids
    if ruid != euid or rgid != egid:
        raise UsageError(
            f"refusing to run setuid/setgid (real uid {ruid}, effective uid {euid}): "
            "install pyinit without the setuid/setgid bit"
        )


def _resolve_mode(options: Namespace, pid: int) -> tuple[str, str]:
    """exec | supervise, and why.

    The one rule (docs/usage.md): a supervise-only option given by a flag or a
    config file makes ``auto`` supervise, and is an error with ``exec``;
    PYINIT_STOP_TIMEOUT, a deployment-wide setting, does neither.
    """
    given = supervise_only_given(options)
    if options.mode == "exec" and given:
        raise UsageError(
            f"{given[0]} needs --mode supervise, not {typed(options, 'mode')}:"
            " in exec mode pyinit is replaced by the target"
        )
    if options.mode != "auto":
        return str(options.mode), f"asked by {typed(options, 'mode')}"
    if pid == 1:
        return "supervise", "asked: auto; pyinit is PID 1"
    if given:
        return "supervise", f"asked: auto; {given[0]} needs supervise"
    return "exec", "asked: auto; not PID 1, no supervise-only option"


def _main_identity(options: Namespace, host: Host) -> Identity | None:
    """The main's ``--user`` (or PYINIT_USER), resolved; an error names what the user typed."""
    if options.user is None:
        return None
    from pyinit.plan.userspec import resolve_user_spec

    uid, gid = host.real_ids
    try:
        return resolve_user_spec(options.user, current_uid=uid, current_gid=gid)
    except UsageError as e:
        raise named_for_its_origin(e, options, "user") from None


def _extra_groups(groups: str | list[str] | None) -> tuple[int, ...]:
    """The ``--groups`` gids, resolved (names read from /etc/group)."""
    names = _split_list(groups)
    if not names:
        return ()
    from pyinit.plan.userspec import resolve_group

    return tuple(resolve_group(g, "--groups") for g in names)


def _success_exits(options: Namespace) -> tuple[int, ...]:
    """The --success-exit codes, sorted, each once (``143`` and ``TERM`` are one code)."""
    return tuple(sorted({parse_success_exit(text) for text in options.success_exit}))


def _stop_timeout(options: Namespace) -> float:
    """``--stop-timeout`` (or PYINIT_STOP_TIMEOUT, or the default), in seconds."""
    if options.stop_timeout is None:
        return DEFAULT_STOP_TIMEOUT
    try:
        return parse_stop_timeout(options.stop_timeout)
    except UsageError as e:
        raise named_for_its_origin(e, options, "stop_timeout") from None


def _stop_delay(options: Namespace) -> float:
    """``--stop-delay`` (or PYINIT_STOP_DELAY; default 0), shorter than the stop timeout."""
    if options.stop_delay is None:
        return 0.0
    try:
        delay = parse_stop_delay(options.stop_delay)
    except UsageError as e:
        raise named_for_its_origin(e, options, "stop_delay") from None
    timeout = _stop_timeout(options)
    if delay > 0 and delay >= timeout:
        error = UsageError(
            f"--stop-delay {quoted(options.stop_delay)}: must be shorter than the stop timeout "
            f"({timeout:g}s), which it is the first part of"
        )
        raise named_for_its_origin(error, options, "stop_delay")
    return delay


#: The longest AF_UNIX path: sun_path holds 108 bytes, the final NUL included.
MAX_CONTROL_PATH = 107


def parse_control(text: str) -> str | None:
    """``--control PATH|none``: an absolute, normalised socket path that fits sun_path; or None."""
    if text == "none":
        return None
    if not text.startswith("/"):
        raise UsageError(f"--control {quoted(text)}: expected an absolute path or none")
    path = _normalise(text)
    name = path.rpartition("/")[2]
    if text.endswith("/") or name in ("", ".", "..") or path.count("/") < 2:
        raise UsageError(
            f"--control {quoted(text)}: expected a socket path in a directory, "
            f"e.g. {DEFAULT_CONTROL}"
        )
    if "\0" in path or len(os.fsencode(path)) > MAX_CONTROL_PATH:
        raise UsageError(
            f"--control {quoted(text)}: too long for a unix socket "
            f"(at most {MAX_CONTROL_PATH} bytes)"
        )
    return path


def _control(options: Namespace, mode: str, host: Host) -> str | None:
    """The control socket's path (--control, PYINIT_CONTROL, default); None in exec mode.

    A pyinit that is not root has none unless asked for one: the default
    directory is root's (docs/operate.md), and a container run as a user
    must not get a notice about it at every start.
    """
    text = getattr(options, "control", None)
    if text is None and host.euid != 0:
        return None
    try:
        path = parse_control(DEFAULT_CONTROL if text is None else text)
    except UsageError as e:
        raise named_for_its_origin(e, options, "control") from None
    return path if mode == "supervise" else None


def _identity_environment(identity: Identity) -> dict[str, str]:
    env = {"HOME": identity.home}
    if identity.name is not None:
        env["USER"] = identity.name
        env["LOGNAME"] = identity.name
    return env


def required_capabilities(plan: Plan, euid: int | None = None) -> dict[str, str]:
    """Map each planned privileged action to the capability it needs, with the reason.

    ``euid`` (default: the plan's host's) decides whether the uid changes at
    all; the host's limits whether an --rlimit raises a hard limit.
    """
    euid = plan.host.euid if euid is None else euid
    needed: dict[str, str] = {}
    if plan.switch_identity and plan.identity is not None:
        ident = plan.identity
        if ident.uid != euid:
            needed["SETUID"] = f"--user {quoted(ident.spec)}: switching to uid {ident.uid}"
        needed["SETGID"] = f"--user {quoted(ident.spec)}: setting gid {ident.gid} and groups"
    for cap in plan.keep_caps:
        # Only a capability this process holds can be passed on as ambient.
        needed.setdefault(cap, f"--keep-cap {cap}: passing it on to the target")
    if plan.chowns or plan.mkdirs:
        flag = "--chown" if plan.chowns else "--mkdir"
        needed["CHOWN"] = f"{flag}: changing file ownership"
    for step in plan.rlimits:
        if _limit_exceeds(step.hard, plan.host.hard_limit(step.resource)):
            needed["SYS_RESOURCE"] = f"--rlimit {step.name}: raising the hard limit"
    return needed


def check_capabilities(plan: Plan, euid: int, mask: int) -> None:
    """Fail early, naming the capability, when a planned action cannot succeed."""
    missing = missing_capabilities(required_capabilities(plan, euid), mask)
    if not missing:
        return
    cap, why = missing[0]
    cause = (
        "the container drops it (e.g. securityContext capabilities.drop: [ALL] or --cap-drop)"
        if euid == 0
        else f"running as uid {euid} (e.g. runAsNonRoot/--user); start as root or drop the flag"
    )
    also = "".join(f"; also CAP_{c} for {w.partition(':')[0]}" for c, w in missing[1:])
    raise UsageError(f"{why} needs CAP_{cap}, which this process lacks: {cause}{also}")
