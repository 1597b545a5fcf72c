"""The services model: sidecars and tasks beside the main process (docs/services.md).

Pure data, decided in the plan: the planning layer builds these records from
``--sidecar``/``--task``/``--ready`` strings and from the ``--config`` TOML
file; the running layer (:mod:`pyinit.run`) only carries them out.
"""

from __future__ import annotations

from pyinit.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan.build import Launch
    from pyinit.plan.userspec import Identity

#: Item kinds.
SIDECAR = "sidecar"
TASK = "task"

#: ``restart=`` values.
RESTART_POLICIES = ("always", "on-failure", "never")
#: ``on-giveup=`` values.
GIVEUP_POLICIES = ("stop", "ignore")
#: ``log=`` values.
LOG_MODES = ("prefix", "raw")

#: Probe kinds (``ready=``/``--ready``).
PROBE_KINDS = ("notify", "fd", "tcp", "unix", "file", "exec", "http")

#: Every probe call is bounded by this many seconds.
PROBE_CALL_TIMEOUT = 1.0
#: Liveness (``alive=``/``--alive``): how often the probe runs, and how many failures in a row
#: mean dead (``alive-every=``, ``alive-failures=``).
DEFAULT_ALIVE_EVERY = 10.0
DEFAULT_ALIVE_FAILURES = 3
#: Probes that say "ready" once, on a channel made for the start: no liveness check.
ONE_SHOT_PROBES = ("notify", "fd")

#: Polling probes start this fast ...
PROBE_FIRST_INTERVAL = 0.1
#: ... and back off, doubling, to at most this.
PROBE_MAX_INTERVAL = 1.0


class Probe(Record):
    """How readiness is detected.

    ``kind`` is one of :data:`PROBE_KINDS`; the other fields are used by the
    kinds that need them and are None otherwise:

    * ``notify``: nothing (pyinit gives the process a NOTIFY_SOCKET of its own);
    * ``fd``: ``fd`` (>= 3, the child writes a newline on it, s6 style);
    * ``tcp``: ``host`` (default 127.0.0.1) and ``port``;
    * ``unix`` / ``file``: ``path``;
    * ``exec``: ``argv`` (run as the item's user; ready on exit 0);
    * ``http``: ``url`` (``http://HOST:PORT/PATH``; 2xx/3xx is ready),
      with ``host``, ``port`` and ``path`` split out.
    """

    __slots__ = ("argv", "fd", "host", "kind", "path", "port", "text", "url")
    kind: str
    text: str  # as the user wrote it, for --dry-run and messages
    fd: int | None
    host: str | None
    port: int | None
    path: str | None
    argv: tuple[str, ...] | None
    url: str | None


class Liveness(Record):
    """A liveness check: ``probe`` every ``every`` seconds from readiness on.

    ``failures`` failed calls in a row mean dead (a success resets the count).
    The probe is a polling one (never ``notify`` or ``fd:N``).
    """

    __slots__ = ("every", "failures", "probe")
    probe: Probe
    every: float
    failures: int


class Item(Record):
    """One sidecar or task, fully resolved.

    ``identity`` is the item's own user (``user=``, default the main's
    ``--user``; None when pyinit runs items as itself), resolved with the
    same gosu grammar and step-down as the main.  ``env`` are the items'
    own ``env=K=V`` additions on top of the main's environment, in order.
    ``file_env`` are the ``--file-env`` secrets it asked for by name
    (``file-env=NAME``): it gets no other secret pyinit read from a file.
    Sidecar-only fields keep their defaults for a task.  ``launch`` is how
    each run is started (:func:`pyinit.plan.build.item_launch`): None only
    until :func:`pyinit.plan.build.build_plan` has made it.
    """

    __slots__ = (
        "alive",
        "backoff_max",
        "backoff_min",
        "command",
        "env",
        "file_env",
        "identity",
        "kind",
        "launch",
        "log",
        "max_restarts",
        "name",
        "on_giveup",
        "ready",
        "ready_timeout",
        "restart",
        "restart_window",
        "source",
        "stop_signal",
        "switch_identity",
        "workdir",
    )
    kind: str  # SIDECAR or TASK
    name: str
    command: tuple[str, ...]
    identity: Identity | None
    switch_identity: bool  # False: already that user, or running items as pyinit's own user
    workdir: str | None
    env: tuple[tuple[str, str], ...]
    file_env: tuple[str, ...]  # secret names, in order, each once
    ready: Probe | None
    ready_timeout: float | None  # None: wait for ever, with a notice every 10 s
    alive: Liveness | None  # alive=, alive-every=, alive-failures= (None: no liveness check)
    restart: str  # one of RESTART_POLICIES
    backoff_min: float  # seconds, default 0.5
    backoff_max: float  # seconds, default 30
    max_restarts: int  # default 5 ...
    restart_window: float  # ... within this many seconds, default 60
    on_giveup: str  # one of GIVEUP_POLICIES
    stop_signal: int  # default SIGTERM
    log: str  # one of LOG_MODES
    source: str  # where it was defined, for messages: "--sidecar" or "FILE [[start]] #N"
    launch: Launch | None


class Services(Record):
    """What the planner decided: items in start order, the main's probes, notices.

    ``alive`` is the main's liveness check (``--alive``), ``on_unhealthy``
    what a dead main does (one of :data:`UNHEALTHY_POLICIES`).
    """

    __slots__ = ("alive", "items", "notices", "on_unhealthy", "ready")
    items: tuple[Item, ...]
    ready: Probe | None
    alive: Liveness | None
    on_unhealthy: str
    notices: tuple[str, ...]
