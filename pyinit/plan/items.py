"""Planning sidecars, tasks and probes (docs/services.md): strings and tables to Items.

An item comes from a ``--sidecar``/``--task`` string (split as :mod:`shlex` does)
or from a ``[[start]]`` table of the ``--config`` file; both become an
:class:`ItemSpec` (name, command, raw ``KEY=VALUE`` pairs, where it came
from), and one resolver turns a spec into a checked
:class:`~pyinit.plan.services.Item`.  This module is imported only when
items or ``--ready`` are used, so the plain exec path never pays for it; shlex
itself is imported only for a string that quotes or escapes (:func:`split_words`).
"""

from __future__ import annotations

import re
import signal

from pyinit.errors import UsageError, quoted
from pyinit.plan.build import UNHEALTHY_POLICIES
from pyinit.plan.capabilities import missing_capabilities
from pyinit.plan.services import (
    DEFAULT_ALIVE_EVERY,
    DEFAULT_ALIVE_FAILURES,
    GIVEUP_POLICIES,
    LOG_MODES,
    ONE_SHOT_PROBES,
    RESTART_POLICIES,
    SIDECAR,
    TASK,
    Item,
    Liveness,
    Probe,
    Services,
)
from pyinit.plan.signals import parse_signal
from pyinit.plan.sources import origin
from pyinit.plan.userspec import needs_identity_switch, resolve_user_spec_as
from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Iterable, Mapping
    from typing import Any

    from pyinit.plan.host import Host
    from pyinit.plan.userspec import Identity

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
RESERVED_NAMES = ("main",)

#: Keys for both kinds, and keys only a sidecar may have.
COMMON_KEYS = ("user", "workdir", "env", "file-env", "log")
#: Keys that may be given more than once (their values add up).
REPEATABLE_KEYS = ("env", "file-env")
SIDECAR_KEYS = (
    "ready",
    "ready-timeout",
    "restart",
    "backoff",
    "max-restarts",
    "on-giveup",
    "stop-signal",
    "alive",
    "alive-every",
    "alive-failures",
)
#: The keys that tune a liveness check: they need ``alive=``.
ALIVE_TUNING_KEYS = ("alive-every", "alive-failures")
ALL_KEYS = COMMON_KEYS + SIDECAR_KEYS

DEFAULT_BACKOFF = (0.5, 30.0)
DEFAULT_MAX_RESTARTS = (5, 60.0)

PROBE_FORMS = (
    "notify, fd:N, tcp:[HOST:]PORT, unix:PATH, file:PATH, exec:CMD [ARG...] "
    "or http://HOST:PORT/PATH"
)


class ItemSpec(Record):
    """An item as written: kind, name, command and ``(key, value)`` pairs, not yet checked.

    ``where`` starts every error about it, e.g. ``--sidecar 'db -- redis-server'``
    or ``/etc/pyinit.toml: [[start]] #2 (db)``.
    """

    __slots__ = ("command", "kind", "name", "pairs", "where")
    kind: str
    name: str
    command: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    where: str


# --- the --sidecar / --task string ------------------------------------------------------

#: What :func:`shlex.split` gives a meaning to (POSIX mode, no comments): quotes, the escape.
_QUOTING = frozenset("'\"\\")


def split_words(text: str) -> list[str]:
    """``shlex.split(text)``; a printable-ASCII text without quotes or backslashes skips shlex.

    Such a text splits on its spaces alone, as shlex would split it.  shlex's
    tokenizer costs ~75 us a string (and its import 0.3 ms), paid before the
    first sidecar is forked.  Raises ValueError as shlex does.
    """
    if text.isascii() and text.isprintable() and _QUOTING.isdisjoint(text):
        return text.split()
    import shlex

    return shlex.split(text)


def parse_item_text(kind: str, text: str) -> ItemSpec:
    """Split ``'NAME [KEY=VALUE ...] -- COMMAND [ARG...]'`` into an ItemSpec (not yet checked)."""
    where = f"--{kind} {quoted(text)}"
    try:
        words = split_words(text)
    except ValueError as e:
        raise UsageError(f"{where}: cannot split it ({e})") from None
    if "--" not in words:
        raise UsageError(
            f"{where}: expected 'NAME [KEY=VALUE ...] -- COMMAND [ARG...]' (no ' -- ')"
        )
    split = words.index("--")
    head, command = words[:split], words[split + 1 :]
    if not head:
        raise UsageError(f"{where}: missing NAME before ' -- '")
    if not command:
        raise UsageError(f"{where}: empty command after ' -- '")
    pairs = []
    for word in head[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise UsageError(
                f"{where}: {quoted(word)} is not KEY=VALUE (the command goes after ' -- ')"
            )
        pairs.append((key, value))
    return ItemSpec(
        kind=kind, name=head[0], command=tuple(command), pairs=tuple(pairs), where=where
    )


# --- probes -----------------------------------------------------------------------------


def parse_probe(text: str, where: str) -> Probe:
    """Parse a readiness probe (``ready=`` or ``--ready``); errors start with ``where``."""
    kind, sep, rest = text.partition(":")
    fields: dict[str, object] = {}
    if text == "notify":
        kind = "notify"
    elif text.startswith("http://"):
        kind = "http"
        fields = _parse_http(text, where)
    elif not sep:
        raise UsageError(f"{where}: unknown probe {quoted(text)} (expected {PROBE_FORMS})")
    elif kind == "fd":
        if not (rest.isdigit() and rest.isascii()) or not 3 <= int(rest) <= 2**31 - 1:
            raise UsageError(f"{where}: fd:N needs a descriptor number N >= 3, not {quoted(rest)}")
        fields = {"fd": int(rest)}
    elif kind == "tcp":
        fields = _parse_host_port(rest, where, default_host="127.0.0.1")
    elif kind in ("unix", "file"):
        if not rest or "\0" in rest:
            raise UsageError(f"{where}: {kind}:PATH needs a path")
        fields = {"path": rest}
    elif kind == "exec":
        try:
            argv = split_words(rest)
        except ValueError as e:
            raise UsageError(f"{where}: cannot split the command ({e})") from None
        if not argv:
            raise UsageError(f"{where}: exec:CMD needs a command")
        fields = {"argv": tuple(argv)}
    else:
        raise UsageError(f"{where}: unknown probe {quoted(text)} (expected {PROBE_FORMS})")
    probe: dict[str, Any] = {
        "fd": None,
        "host": None,
        "port": None,
        "path": None,
        "argv": None,
        "url": None,
    }
    probe.update(fields)
    return Probe(kind=kind, text=text, **probe)


def parse_alive_probe(text: str, where: str) -> Probe:
    """Parse a liveness probe (``alive=`` or ``--alive``): a polling probe, never notify or fd:N."""
    probe = parse_probe(text, where)
    if probe.kind in ONE_SHOT_PROBES:
        raise UsageError(
            f"{where}: {probe.kind} is a one-shot readiness channel, not a liveness check "
            "(expected tcp:, unix:, file:, exec: or http://)"
        )
    return probe


def parse_alive_every(text: str, where: str) -> float:
    """``alive-every``/``--alive-every``: seconds between checks, a finite number > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{where}: expected seconds > 0 between checks, e.g. 10 or 0.5")
    return seconds


def parse_alive_failures(text: str, where: str) -> int:
    """``alive-failures``/``--alive-failures``: failed checks in a row that mean dead, >= 1."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise UsageError(f"{where}: expected a whole number >= 1 of failed checks in a row")
    return int(text)


def _parse_http(text: str, where: str) -> dict[str, object]:
    netloc, slash, path = text[len("http://") :].partition("/")
    fields = _parse_host_port(netloc, where, default_port=80)
    full_path = slash + path if slash else "/"
    if any(c.isspace() or c == "\0" for c in full_path):
        raise UsageError(f"{where}: the path has spaces (encode them as %20)")
    fields["path"] = full_path
    fields["url"] = text
    return fields


def _parse_host_port(
    text: str,
    where: str,
    default_host: str | None = None,
    default_port: int | None = None,
) -> dict[str, object]:
    """``HOST:PORT``, ``[V6]:PORT``, or ``PORT`` alone / ``HOST`` alone with a default."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or not host or (after and not after.startswith(":")):
            raise UsageError(f"{where}: expected [IPV6]:PORT")
        port_text = after[1:] if after else ""
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    elif default_host is not None:
        host, port_text = default_host, text
    else:
        host, port_text = text, ""
    if not port_text and default_port is not None:
        port_text = str(default_port)
    if not host or any(c.isspace() or c in "/@\0" for c in host):
        raise UsageError(f"{where}: missing or bad host {quoted(host)}")
    if not (port_text.isdigit() and port_text.isascii()) or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"{where}: port {quoted(port_text)} is not a number 1..65535")
    return {"host": host, "port": int(port_text)}


# --- keys -------------------------------------------------------------------------------


def _seconds(value: str, where: str, key: str, *, zero: bool, whole: str | None = None) -> float:
    """Seconds for ``key``; ``whole`` is the full value shown in errors (MIN of MIN:MAX...)."""
    shown = value if whole is None else whole
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(
            f"{where}: {key}={quoted(shown)}: {quoted(value)} is not seconds, e.g. 10 or 2.5"
        ) from None
    if not (seconds >= 0 if zero else seconds > 0) or seconds == float("inf"):
        bound = ">= 0" if zero else "> 0"
        raise UsageError(
            f"{where}: {key}={quoted(shown)}: {quoted(value)} must be a finite number {bound}"
        )
    return seconds


def _choice(value: str, where: str, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"{where}: {key}={quoted(value)}: expected one of {', '.join(choices)}")
    return value


def _backoff(value: str, where: str) -> tuple[float, float]:
    low, sep, high = value.partition(":")
    if not sep:
        raise UsageError(f"{where}: backoff={quoted(value)}: expected MIN:MAX seconds, e.g. 0.5:30")
    minimum = _seconds(low, where, "backoff", zero=True, whole=value)
    maximum = _seconds(high, where, "backoff", zero=False, whole=value)
    if minimum > maximum:
        raise UsageError(f"{where}: backoff={quoted(value)}: MIN is above MAX")
    return minimum, maximum


def _max_restarts(value: str, where: str) -> tuple[int, float]:
    count, sep, window = value.partition("/")
    if not (count.isdigit() and count.isascii()):
        raise UsageError(f"{where}: max-restarts={quoted(value)}: expected N[/WINDOW], e.g. 5/60")
    seconds = (
        _seconds(window, where, "max-restarts", zero=False, whole=value)
        if sep
        else DEFAULT_MAX_RESTARTS[1]
    )
    return int(count), seconds


def _env_pair(value: str, where: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name or "\0" in value:
        raise UsageError(f"{where}: env={quoted(value)}: expected env=NAME=VALUE")
    return name, text


def _file_env_names(value: str, where: str, seen: list[str]) -> list[str]:
    """``file-env=NAME[,NAME...]``: secret names, checked as ``--file-env`` checks them."""
    from pyinit.plan.secrets import valid_env_name

    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise UsageError(f"{where}: file-env={value!r}: expected file-env=NAME[,NAME...]")
    for name in names:
        if not valid_env_name(name):
            raise UsageError(
                f"{where}: file-env={value!r}: {name!r} is not a valid environment variable name"
            )
    return [name for name in dict.fromkeys(names) if name not in seen]


def _check_name(spec: ItemSpec) -> None:
    if not NAME_PATTERN.fullmatch(spec.name):
        raise UsageError(
            f"{spec.where}: bad name {quoted(spec.name)} (expected [a-z0-9][a-z0-9_.-]{{0,31}})"
        )
    if spec.name in RESERVED_NAMES:
        raise UsageError(
            f"{spec.where}: the name {quoted(spec.name)} is reserved for the main process"
        )


class _Keys:
    """The checked values of one item's pairs, with the defaults docs/services.md gives."""

    def __init__(self, spec: ItemSpec) -> None:
        self.user: str | None = None
        self.workdir: str | None = None
        self.env: list[tuple[str, str]] = []
        self.file_env: list[str] = []
        self.ready: Probe | None = None
        self.ready_timeout: float | None = None
        self.restart = "always"
        self.backoff = DEFAULT_BACKOFF
        self.max_restarts = DEFAULT_MAX_RESTARTS
        self.on_giveup = "stop"
        self.stop_signal = int(signal.SIGTERM)
        self.log = "prefix"
        self.alive: Probe | None = None
        self.alive_every = DEFAULT_ALIVE_EVERY
        self.alive_failures = DEFAULT_ALIVE_FAILURES
        seen: set[str] = set()
        for key, value in spec.pairs:
            self._check_key(spec, key, seen)
            self._set(spec.where, key, value)
        tuning = [key for key in ALIVE_TUNING_KEYS if key in seen]
        if tuning and self.alive is None:
            raise UsageError(
                f"{spec.where}: key {quoted(tuning[0])} needs alive=PROBE (the check it tunes)"
            )
        both = [name for name, _ in self.env if name in self.file_env]
        if both:
            raise UsageError(
                f"{spec.where}: env={both[0]}=... and file-env={both[0]}: "
                "one variable, two sources (they are exclusive)"
            )

    @staticmethod
    def _check_key(spec: ItemSpec, key: str, seen: set[str]) -> None:
        where = spec.where
        if key not in ALL_KEYS:
            raise UsageError(f"{where}: unknown key {quoted(key)} (one of {', '.join(ALL_KEYS)})")
        if key in SIDECAR_KEYS and spec.kind != SIDECAR:
            raise UsageError(f"{where}: key {quoted(key)} is for sidecars only, not a {spec.kind}")
        if key in seen and key not in REPEATABLE_KEYS:
            raise UsageError(f"{where}: key {quoted(key)} given twice")
        seen.add(key)

    def _set(self, where: str, key: str, value: str) -> None:
        if key == "user":
            if not value:
                raise UsageError(f"{where}: user=: empty user spec")
            self.user = value
        elif key == "workdir":
            if not value or "\0" in value:
                raise UsageError(f"{where}: workdir=: empty directory")
            self.workdir = value
        elif key == "env":
            self.env.append(_env_pair(value, where))
        elif key == "file-env":
            self.file_env.extend(_file_env_names(value, where, self.file_env))
        elif key == "ready":
            self.ready = parse_probe(value, f"{where}: ready={quoted(value)}")
        elif key == "ready-timeout":
            self.ready_timeout = _seconds(value, where, key, zero=False)
        elif key == "restart":
            self.restart = _choice(value, where, key, RESTART_POLICIES)
        elif key == "backoff":
            self.backoff = _backoff(value, where)
        elif key == "max-restarts":
            self.max_restarts = _max_restarts(value, where)
        elif key == "on-giveup":
            self.on_giveup = _choice(value, where, key, GIVEUP_POLICIES)
        elif key == "stop-signal":
            self.stop_signal = parse_signal(value, f"{where}: stop-signal")
        elif key == "alive":
            self.alive = parse_alive_probe(value, f"{where}: alive={quoted(value)}")
        elif key == "alive-every":
            self.alive_every = parse_alive_every(value, f"{where}: alive-every={quoted(value)}")
        elif key == "alive-failures":
            self.alive_failures = parse_alive_failures(
                value, f"{where}: alive-failures={quoted(value)}"
            )
        else:
            self.log = _choice(value, where, key, LOG_MODES)

    def liveness(self) -> Liveness | None:
        """The item's liveness check, None without ``alive=``."""
        if self.alive is None:
            return None
        return Liveness(probe=self.alive, every=self.alive_every, failures=self.alive_failures)


# --- resolving ---------------------------------------------------------------------------


class _Who(Record):
    """The main's step-down decision, which items inherit."""

    __slots__ = ("capability_mask", "euid", "host", "identity", "if_not_root", "skip_non_root")
    identity: Identity | None
    skip_non_root: bool
    euid: int
    if_not_root: str
    capability_mask: int
    host: Host


def check_item_spec(spec: ItemSpec) -> None:
    """Check a spec's name, keys and values (everything but users and uniqueness)."""
    _check_name(spec)
    _Keys(spec)


def resolve_item(spec: ItemSpec, who: _Who, notices: list[str]) -> Item:
    """A checked Item: keys validated, defaults filled, its user resolved and allowed."""
    _check_name(spec)
    keys = _Keys(spec)
    identity, switch = _item_identity(spec, keys.user, who, notices)
    return Item(
        kind=spec.kind,
        name=spec.name,
        command=spec.command,
        identity=identity,
        switch_identity=switch,
        workdir=keys.workdir,
        env=tuple(keys.env),
        file_env=tuple(keys.file_env),
        ready=keys.ready,
        ready_timeout=keys.ready_timeout,
        alive=keys.liveness(),
        restart=keys.restart,
        backoff_min=keys.backoff[0],
        backoff_max=keys.backoff[1],
        max_restarts=keys.max_restarts[0],
        restart_window=keys.max_restarts[1],
        on_giveup=keys.on_giveup,
        stop_signal=keys.stop_signal,
        log=keys.log,
        source=spec.where,
        launch=None,  # build_plan makes it, once the main's environment is known
    )


def _item_identity(
    spec: ItemSpec, user: str | None, who: _Who, notices: list[str]
) -> tuple[Identity | None, bool]:
    """The item's user and whether pyinit must switch to it; the same checks as ``--user``."""
    if user is None:
        if who.identity is None or who.skip_non_root:
            return who.identity, False
        return who.identity, needs_identity_switch(
            who.identity, who.euid, who.host.egid, who.host.groups
        )
    identity = resolve_user_spec_as(user, f"{spec.where}: user={quoted(user)}", who.host.real_ids)
    switch = needs_identity_switch(identity, who.euid, who.host.egid, who.host.groups)
    if not switch:
        return identity, False
    needed = {"SETGID": f"setting gid {identity.gid} and groups"}
    if identity.uid != who.euid:
        needed["SETUID"] = f"switching to uid {identity.uid}"
    missing = missing_capabilities(needed, who.capability_mask)
    if not missing:
        return identity, True
    if who.euid != 0 and who.if_not_root == "skip":
        notices.append(
            f"running as uid {who.euid} without CAP_SETUID/CAP_SETGID: {spec.kind} "
            f"{quoted(spec.name)} runs as uid {who.euid}, not {quoted(user)} (--if-not-root fail "
            "makes this an error)"
        )
        return None, False
    cap, why = missing[0]
    raise UsageError(
        f"{spec.where}: user={quoted(user)}: {why} needs CAP_{cap}, which this process lacks"
        f" (running as uid {who.euid})"
    )


def item_specs(entries: Iterable[object]) -> list[ItemSpec]:
    """Normalise ``options.items``: ``(kind, text)`` from flags, ItemSpec from the file."""
    specs = []
    for entry in entries:
        if isinstance(entry, ItemSpec):
            specs.append(entry)
        else:
            pair: tuple[str, str] = entry  # type: ignore[assignment]
            specs.append(parse_item_text(pair[0], pair[1]))
    return specs


def plan_services(
    options: Namespace,
    identity: Identity | None,
    *,
    skip_non_root: bool,
    euid: int,
    capability_mask: int,
    host: Host,
) -> Services:
    """Resolve ``options.items`` (file's first, then flags', in order) and ``--ready``.

    Names must be unique across items; every user is resolved and its
    step-down checked for capabilities, as the main's is.
    """
    who = _Who(
        identity=identity,
        skip_non_root=skip_non_root,
        euid=euid,
        if_not_root=options.if_not_root,
        capability_mask=capability_mask,
        host=host,
    )
    notices: list[str] = []
    items: list[Item] = []
    seen: dict[str, str] = {}
    for spec in item_specs(options.items):
        item = resolve_item(spec, who, notices)
        if item.name in seen:
            raise UsageError(
                f"{spec.where}: duplicate name {quoted(item.name)} "
                f"(first used by {seen[item.name]})"
            )
        seen[item.name] = spec.where
        items.append(item)
    ready = None
    if options.ready is not None:
        ready = parse_probe(options.ready, f"--ready {quoted(options.ready)}")
    return Services(
        items=tuple(items),
        ready=ready,
        alive=main_liveness(options),
        on_unhealthy=getattr(options, "on_unhealthy", None) or "ignore",
        notices=tuple(notices),
    )


#: The main's liveness options besides ``--alive``: option dest -> how it is parsed.
_MAIN_ALIVE_TUNING = (
    ("alive_every", parse_alive_every),
    ("alive_failures", parse_alive_failures),
)


def main_liveness(options: Namespace) -> Liveness | None:
    """The main's check: ``--alive``, ``--alive-every``, ``--alive-failures`` (None without).

    A tuning option or ``--on-unhealthy`` without ``--alive`` is an error;
    an error names the option as the user gave it (the flag, or the file's key).
    """
    text = getattr(options, "alive", None)
    values: dict[str, float] = {}
    for dest, parse in _MAIN_ALIVE_TUNING:
        given = getattr(options, dest, None)
        if given is not None:
            values[dest] = parse(str(given), f"{origin(options, dest)} {quoted(str(given))}")
    unhealthy = getattr(options, "on_unhealthy", None)
    if text is None:
        loose = [dest for dest, _ in _MAIN_ALIVE_TUNING if dest in values]
        loose += ["on_unhealthy"] if unhealthy is not None else []
        if loose:
            raise UsageError(
                f"{origin(options, loose[0])}: needs --alive PROBE (the check it tunes)"
            )
        return None
    if unhealthy is not None and unhealthy not in UNHEALTHY_POLICIES:
        raise UsageError(
            f"--on-unhealthy {quoted(unhealthy)}: expected one of {', '.join(UNHEALTHY_POLICIES)}"
        )
    return Liveness(
        probe=parse_alive_probe(text, f"{origin(options, 'alive')} {quoted(text)}"),
        every=values.get("alive_every", DEFAULT_ALIVE_EVERY),
        failures=int(values.get("alive_failures", DEFAULT_ALIVE_FAILURES)),
    )


# --- --dry-run --------------------------------------------------------------------------


def describe_probe(probe: Probe | None) -> str:
    """A probe as --dry-run shows it, with defaults spelled out (``tcp:127.0.0.1:6380``)."""
    if probe is None:
        return "none (ready once it has exec'd)"
    if probe.kind == "tcp":
        return f"tcp:{probe.host}:{probe.port}"
    if probe.kind == "exec":
        import shlex

        return "exec:" + shlex.join(probe.argv or ())
    return probe.text


def describe_liveness(alive: Liveness | None) -> str:
    """A liveness check as --dry-run shows it: ``tcp:127.0.0.1:80 every 10s, dead after 3 ...``."""
    if alive is None:
        return "none"
    failures = "failure" if alive.failures == 1 else "failures in a row"
    return (
        f"{describe_probe(alive.probe)} every {alive.every:g}s from readiness on, dead after "
        f"{alive.failures} {failures}"
    )


def describe_items(
    items: Iterable[Item],
    ready: Probe | None,
    main_env: Mapping[str, str],
    euid: int,
    alive: Liveness | None = None,
    on_unhealthy: str = "ignore",
) -> list[str]:
    """The --dry-run lines for the items, in start order, and the main's readiness and liveness.

    ``main_env`` is the main's environment, which an item's launch record is
    shown against (names only); ``euid`` is pyinit's, for an item run as it.
    """
    import shlex

    from pyinit.plan.signals import signal_name

    lines = ["start (in order, then the main):"]
    for number, item in enumerate(items, 1):
        lines.append(f"  {number}. {item.kind} {item.name}: {shlex.join(item.command)}")
        lines.append(f"     user: {_describe_user(item, euid)}")
        if item.workdir is not None:
            lines.append(f"     workdir: {item.workdir}")
        for name, value in item.env:
            lines.append(f"     env {name}={value}")
        if item.launch is not None:
            environment = _describe_environment(item, item.launch.env, main_env)
            lines.append(f"     environment: {environment}")
        if item.kind == SIDECAR:
            timeout = f"{item.ready_timeout:g}s" if item.ready_timeout is not None else "none"
            lines.append(f"     ready: {describe_probe(item.ready)}, timeout {timeout}")
            lines.append(
                f"     policy: restart {item.restart}, backoff {item.backoff_min:g}:"
                f"{item.backoff_max:g}s, max-restarts {item.max_restarts}/"
                f"{item.restart_window:g}s, on-giveup {item.on_giveup}, stop-signal "
                f"{signal_name(item.stop_signal)}, log {item.log}"
            )
            dead = "; dead: stopped, then its restart policy" if item.alive is not None else ""
            lines.append(f"     alive: {describe_liveness(item.alive)}{dead}")
        else:
            lines.append(f"     policy: must exit 0 before the next item starts, log {item.log}")
    if not lines[1:]:
        lines = []
    lines.append(f"main ready: {describe_probe(ready)}")
    if alive is not None:
        then = {
            "ignore": "health says unhealthy, the container runs on",
            "stop": "health says unhealthy and the container stops (exit 143)",
        }[on_unhealthy]
        lines.append(
            f"main alive: {describe_liveness(alive)}; dead: {then} (on-unhealthy {on_unhealthy})"
        )
    return lines


def _describe_environment(item: Item, env: Mapping[str, str], main_env: Mapping[str, str]) -> str:
    """``the main's, set A, HOME, USER, unset DBPW; HOME=/srv``: names only, but HOME.

    HOME's value is shown when it is the item's user's (from the passwd
    file); an inherited value never is.
    """
    from pyinit.plan.render import env_names_changed

    changed, removed = env_names_changed(main_env, env)
    text = "the main's"
    if changed:
        text += f", set {', '.join(changed)}"
    if removed:
        text += f", unset {', '.join(removed)}"
    if item.identity is not None:
        text += f"; HOME={item.identity.home}"
    return text


def _describe_user(item: Item, euid: int) -> str:
    if item.identity is None:
        return f"the current user (uid {euid})"
    action = "switch to" if item.switch_identity else "already running as"
    return f"{action} {item.identity.describe()}"


__all__ = [
    "SIDECAR",
    "TASK",
    "ItemSpec",
    "Services",
    "check_item_spec",
    "describe_items",
    "describe_liveness",
    "describe_probe",
    "main_liveness",
    "parse_alive_every",
    "parse_alive_failures",
    "parse_alive_probe",
    "parse_item_text",
    "parse_probe",
    "plan_services",
]
