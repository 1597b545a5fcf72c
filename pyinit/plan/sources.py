"""Where each setting came from: flags > PYINIT_* environment > config files > defaults.

argparse already puts the flags over their defaults, and a config file's
values become those defaults (:mod:`pyinit.plan.config`).  The PYINIT_*
variables go between the two: :func:`apply_environment` puts each one over
the parsed value unless a flag gave the option, and notes where every value
that matters came from, so that an error names what the user typed
(``PYINIT_USER='x'``, a file's key) and ``--dry-run`` says why the mode is
what it is.  No config file is read here: this stays on the lean exec path.
"""

from __future__ import annotations

from pyinit.errors import UsageError, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import Namespace
    from collections.abc import Mapping

#: The options a PYINIT_* variable gives when no flag does: dest -> (variable, flag).
#: An empty variable counts as unset.  (PYINIT_CONFIG names the config file
#: itself; PYINIT_FILE_ENV adds names to the --file-env list.)
ENVIRONMENT_OPTIONS = {
    "user": ("PYINIT_USER", "--user"),
    "mode": ("PYINIT_MODE", "--mode"),
    "stop_timeout": ("PYINIT_STOP_TIMEOUT", "--stop-timeout"),
    "control": ("PYINIT_CONTROL", "--control"),
}

#: Options that only supervise mode can carry out: dest -> flag.  One given by a
#: flag or a config file makes ``--mode auto`` supervise, and ``exec`` with one
#: is an error; PYINIT_STOP_TIMEOUT does neither (see :func:`supervise_only_given`).
SUPERVISE_ONLY = {
    "items": "--sidecar/--task",
    "ready": "--ready",
    "post": "--post",
    "stop_timeout": "--stop-timeout",
    "rewrite": "--rewrite",
    "signal_group": "--signal-group",
    "success_exit": "--success-exit",
}

#: The flags of every option whose origin is noted.
_FLAGS = {dest: flag for dest, (_, flag) in ENVIRONMENT_OPTIONS.items()} | SUPERVISE_ONLY


def apply_environment(
    options: Namespace,
    flags_only: Namespace,
    environ: Mapping[str, str],
    config: str | None = None,
) -> None:
    """Give each PYINIT_* option its variable's value unless a flag gave it; note origins.

    ``flags_only`` is the command line parsed without any config file, so a
    value set there came from a flag; ``config`` names the config file(s)
    whose values are already in ``options``.  The origins go to
    ``options.sources`` (dest -> the flag, the variable, or ``FILE: key 'KEY'``);
    the supervise-only options a flag or config file gave go to ``options.given``,
    even when a PYINIT_* variable then replaced the value.
    """
    sources: dict[str, str] = {}
    for dest, flag in _FLAGS.items():
        if _is_set(getattr(flags_only, dest, None)):
            sources[dest] = flag
        elif _is_set(getattr(options, dest, None)) and config is not None:
            key = "[[start]]" if dest == "items" else repr(flag[2:])
            sources[dest] = f"{config}: key {key}"
    # What the command line and the image's config asked for, before the
    # deployment's environment overrides values: it decides the mode.
    options.given = {dest: where for dest, where in sources.items() if dest in SUPERVISE_ONLY}
    for dest, (variable, _) in ENVIRONMENT_OPTIONS.items():
        value = environ.get(variable)
        if value and sources.get(dest) != _FLAGS[dest]:
            setattr(options, dest, value)
            sources[dest] = variable
    options.sources = sources


def _is_set(value: object) -> bool:
    return value is not None and value is not False and value != []


def supervise_only_given(options: Namespace) -> list[str]:
    """The supervise-only options a flag or a config file gave, as the user wrote them.

    PYINIT_STOP_TIMEOUT is a deployment-wide setting (set it once to match
    Kubernetes' terminationGracePeriodSeconds): it applies when pyinit
    supervises, and neither picks the mode nor conflicts with exec.
    """
    given: dict[str, str] | None = getattr(options, "given", None)
    if given is None:  # options that did not come through apply_environment: all given
        given = {d: f for d, f in SUPERVISE_ONLY.items() if _is_set(getattr(options, d, None))}
    return [given[dest] for dest in SUPERVISE_ONLY if dest in given]


def origin(options: Namespace, dest: str) -> str:
    """How the user gave option ``dest``: its flag, a PYINIT_* variable, or a file's key."""
    sources: dict[str, str] = getattr(options, "sources", {})
    return sources.get(dest, _FLAGS[dest])


def from_environment(options: Namespace, dest: str) -> bool:
    """Whether option ``dest`` has the value of a PYINIT_* variable."""
    return origin(options, dest).startswith("PYINIT_")


def typed(options: Namespace, dest: str) -> str:
    """``dest`` and its value as written: ``--mode exec``, ``PYINIT_MODE=exec``."""
    where = origin(options, dest)
    value = getattr(options, dest)
    if where.startswith("PYINIT_"):
        return f"{where}={value}"
    if where.startswith("--"):
        return f"{where} {value}"
    return f"{where} = {value!r}"


def named_for_its_origin(error: UsageError, options: Namespace, dest: str) -> UsageError:
    """``error`` about option ``dest``, naming the PYINIT_* variable if the value came from one."""
    if not from_environment(options, dest):
        return error
    return name_the_variable(error, _FLAGS[dest], origin(options, dest), getattr(options, dest))


def name_the_variable(error: UsageError, flag: str, variable: str, value: str) -> UsageError:
    """``error`` reworded for a value that came from ``variable`` rather than ``flag``.

    Planning errors start with ``FLAG 'VALUE':`` (or ``FLAG:``); that becomes
    ``VARIABLE='VALUE':``, as the user wrote it.  Any other error (one naming
    a file, say) is returned as it is.
    """
    message = error.message
    for prefix in (f"{flag} {quoted(value)}:", f"{flag}:"):
        if message.startswith(prefix):
            rest = message[len(prefix) - 1 :]
            return UsageError(f"{variable}={quoted(value)}{rest}", error.exit_code)
    return error
