"""Where settings come from: flags > PYINIT_* environment > config files > defaults.

Also what the errors name (the variable, the file's key, the hint for a
forgotten ``--``) and the one rule for supervise-only options.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from pidns import Namespace, wait_for
from plan_helpers import plan_for
from sandbox import (
    PROJECT_ROOT,
    PYINIT,
    PYINIT_IMPORTTIME,
    Sandbox,
    base_environment,
    imported_modules,
    run,
)

from pyinit.errors import UsageError
from pyinit.plan import DEFAULT_STOP_TIMEOUT, Plan


def plan_with(argv: list[str], env: dict[str, str] | None = None, pid: int = 4242) -> Plan:
    """Parse and plan in-process, as root with every capability, ``env`` added to the base."""
    return plan_for(argv, base_environment(**(env or {})), pid=pid)


def error_of(argv: list[str], env: dict[str, str] | None = None, pid: int = 4242) -> str:
    with pytest.raises(UsageError) as info:
        plan_with(argv, env, pid)
    assert info.value.exit_code == 125
    return info.value.message


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pyinit.toml"
    path.write_text(text)
    return str(path)


# --- one order ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "env", "flag", "expected"),
    [
        (None, None, None, "default"),
        ("daemon", None, None, "daemon"),
        ("daemon", "redis", None, "redis"),  # the environment wins over the file
        (None, "redis", None, "redis"),
        ("daemon", "redis", "nobody", "nobody"),  # the flag wins over both
        (None, None, "nobody", "nobody"),
    ],
)
def test_user_precedence(
    tmp_path: Path, in_file: str | None, env: str | None, flag: str | None, expected: str
) -> None:
    argv = ["--config", config(tmp_path, f'user = "{in_file}"\n' if in_file else "")]
    argv += ["--user", flag] if flag else []
    plan = plan_with([*argv, "true"], {"PYINIT_USER": env} if env else None)
    assert (plan.identity.name if plan.identity else "default") == expected


@pytest.mark.parametrize(
    ("in_file", "env", "flag", "expected"),
    [
        (None, None, None, DEFAULT_STOP_TIMEOUT),
        ("5", None, None, 5),
        ("5", "9", None, 9),
        (None, "9", None, 9),
        ("5", "9", "2", 2),
    ],
)
def test_stop_timeout_precedence(
    tmp_path: Path, in_file: str | None, env: str | None, flag: str | None, expected: float
) -> None:
    argv = ["--config", config(tmp_path, f"stop-timeout = {in_file}\n" if in_file else "")]
    argv += ["--stop-timeout", flag] if flag else []
    plan = plan_with([*argv, "true"], {"PYINIT_STOP_TIMEOUT": env} if env else None, pid=1)
    assert plan.stop_timeout == expected


def test_mode_precedence(tmp_path: Path) -> None:
    path = config(tmp_path, 'mode = "supervise"\n')
    assert plan_with(["--config", path, "true"]).mode == "supervise"
    assert plan_with(["--config", path, "true"], {"PYINIT_MODE": "exec"}).mode == "exec"
    flag = ["--config", path, "--mode", "supervise", "true"]
    assert plan_with(flag, {"PYINIT_MODE": "exec"}).mode == "supervise"


def test_empty_variables_are_unset() -> None:
    plan = plan_with(["true"], {"PYINIT_USER": "", "PYINIT_MODE": "", "PYINIT_STOP_TIMEOUT": ""})
    assert (plan.identity, plan.mode, plan.stop_timeout) == (None, "exec", DEFAULT_STOP_TIMEOUT)


# --- errors name what the user typed ------------------------------------------------------


def test_a_bad_variable_is_named(tmp_path: Path) -> None:
    assert error_of(["true"], {"PYINIT_USER": "nobodyy"}).startswith(
        "PYINIT_USER='nobodyy': unknown user 'nobodyy'"
    )
    assert error_of(["true"], {"PYINIT_STOP_TIMEOUT": "30s"}) == (
        "PYINIT_STOP_TIMEOUT='30s': expected seconds, e.g. 10 or 2.5"
    )
    # Even where it would not apply (exec mode): a typo fails everywhere alike.
    assert "PYINIT_STOP_TIMEOUT" in error_of(
        ["--mode", "exec", "true"], {"PYINIT_STOP_TIMEOUT": "x"}
    )
    # A flag's own value is still named as the flag.
    assert error_of(["--user", "nobodyy", "true"]).startswith("--user 'nobodyy': unknown user")
    # A flag that wins hides a bad variable, as PYINIT_MODE always did.
    assert plan_with(["--user", "nobody", "true"], {"PYINIT_USER": "nobodyy"}).identity


def test_a_bad_variable_is_one_line_and_125_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pre-ran"
    cases = {
        "PYINIT_USER": ("nobodyy", "pyinit: PYINIT_USER='nobodyy': unknown user 'nobodyy'"),
        "PYINIT_CONFIG": ("/nope", "pyinit: PYINIT_CONFIG='/nope': No such file or directory"),
        "PYINIT_STOP_TIMEOUT": ("8s", "pyinit: PYINIT_STOP_TIMEOUT='8s': expected seconds"),
        "PYINIT_MODE": ("fast", "pyinit: PYINIT_MODE='fast': expected one of exec, supervise"),
    }
    for variable, (value, line) in cases.items():
        env = base_environment(**{variable: value})
        code, out, err = run([*PYINIT, "--pre", f"touch {marker}", "--", "true"], env=env)
        assert (code, out) == (125, ""), err
        assert err.startswith(line) and err.count("\n") == 1, err
        assert not marker.exists()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        # An ENTRYPOINT without --, then `docker run IMAGE --port 7000`.
        (
            ["--user", "nobody", "--port", "7000"],
            "pyinit: unrecognized arguments: --port: not a pyinit option; if it is the "
            "command's, end pyinit's options with --: pyinit [OPTIONS] -- COMMAND [ARG...]\n",
        ),
        (
            ["--us", "nobody", "true"],
            "pyinit: unrecognized arguments: --us: pyinit's flags are never abbreviated, "
            "did you mean --user?\n",
        ),
        (["--user"], "pyinit: argument -u/--user: expected one argument (see pyinit --help)\n"),
    ],
)
def test_an_unknown_option_gets_a_hint(argv: list[str], line: str) -> None:
    code, out, err = run([*PYINIT, *argv])
    assert (code, out, err) == (125, "", line)


# --- one rule for supervise-only options --------------------------------------------------

SUPERVISE_ONLY = [
    (["--post", "true"], "post = ['true']", "--post", "key 'post'"),
    (["--stop-timeout", "3"], "stop-timeout = 3", "--stop-timeout", "key 'stop-timeout'"),
    (["--rewrite", "TERM:QUIT"], "rewrite = ['TERM:QUIT']", "--rewrite", "key 'rewrite'"),
    (["--signal-group"], "signal-group = true", "--signal-group", "key 'signal-group'"),
    (["--ready", "notify"], "ready = 'notify'", "--ready", "key 'ready'"),
    (
        ["--sidecar", "s -- sleep 9"],
        "[[start]]\nsidecar = 's'\ncommand = ['sleep', '9']",
        "--sidecar/--task",
        "key [[start]]",
    ),
]


@pytest.mark.parametrize(("flags", "toml", "flag", "key"), SUPERVISE_ONLY)
def test_a_supervise_only_option_means_supervise(
    tmp_path: Path, flags: list[str], toml: str, flag: str, key: str
) -> None:
    path = config(tmp_path, toml + "\n")
    for argv, named in ((flags, flag), (["--config", path], f"{path}: {key}")):
        plan = plan_with([*argv, "true"])
        assert (plan.mode, plan.mode_reason) == (
            "supervise",
            f"asked: auto; {named} needs supervise",
        )
        message = error_of(["--mode", "exec", *argv, "true"])
        assert message.startswith(f"{named} needs --mode supervise, not --mode exec: ")
        message = error_of([*argv, "true"], {"PYINIT_MODE": "exec"})
        assert message.startswith(f"{named} needs --mode supervise, not PYINIT_MODE=exec: ")


def test_pyinit_stop_timeout_applies_only_when_supervising() -> None:
    # Set once for a whole cluster (terminationGracePeriodSeconds): it never picks the
    # mode, never conflicts with exec, and is used whenever pyinit supervises.
    env = {"PYINIT_STOP_TIMEOUT": "25"}
    assert plan_with(["true"], env).mode == "exec"
    assert plan_with(["--mode", "exec", "true"], env).mode == "exec"
    assert plan_with(["true"], env, pid=1).stop_timeout == 25
    assert plan_with(["--post", "true", "true"], env).stop_timeout == 25


def test_a_config_stop_timeout_still_asks_for_supervise_when_the_variable_replaces_it(
    tmp_path: Path,
) -> None:
    plan = plan_with(
        ["--config", config(tmp_path, "stop-timeout = 5\n"), "true"], {"PYINIT_STOP_TIMEOUT": "9"}
    )
    assert (plan.mode, plan.stop_timeout) == ("supervise", 9)


def test_dry_run_says_why_the_mode(tmp_path: Path) -> None:
    cases = [
        ([], {}, "mode: exec (asked: auto; not PID 1, no supervise-only option; pid "),
        (["--stop-timeout", "3"], {}, "mode: supervise (asked: auto; --stop-timeout needs "),
        ([], {"PYINIT_MODE": "supervise"}, "mode: supervise (asked by PYINIT_MODE=supervise; "),
        (["--mode", "exec"], {}, "mode: exec (asked by --mode exec; pid "),
    ]
    for argv, env, first in cases:
        code, out, err = run(
            [*PYINIT, "--dry-run", *argv, "--", "true"], env=base_environment(**env)
        )
        assert code == 0, err
        assert out.startswith(first), out


# --- the outside view: what runs --------------------------------------------------------------


def _pid_and_parent(argv: list[str], env: dict[str, str]) -> tuple[int, int, int]:
    """Start pyinit (not PID 1); the pid pyinit had, and the target's pid and parent pid."""
    proc = subprocess.Popen(
        [*PYINIT, *argv, "--", "sh", "-c", "echo $$ $PPID"],
        env=base_environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    target, parent = map(int, out.split())
    return proc.pid, target, parent


def test_stop_timeout_flag_supervises_and_the_variable_does_not() -> None:
    pyinit, target, parent = _pid_and_parent(["--stop-timeout", "3"], {})
    assert target != pyinit and parent == pyinit  # supervised: a child of pyinit
    pyinit, target, _ = _pid_and_parent([], {"PYINIT_STOP_TIMEOUT": "3"})
    assert target == pyinit  # exec: the target is pyinit's process
    code, out, err = run([*PYINIT, "--mode", "exec", "--stop-timeout", "3", "--", "true"])
    assert (code, out) == (125, "")
    assert err == (
        "pyinit: --stop-timeout needs --mode supervise, not --mode exec: "
        "in exec mode pyinit is replaced by the target\n"
    )


@pytest.mark.parametrize(
    ("env", "flags", "uid"),
    [
        ({}, [], "999"),
        ({"PYINIT_USER": "alice"}, [], "1000"),
        ({"PYINIT_USER": "alice"}, ["-u", "nobody"], "65534"),
    ],
)
def test_the_variable_wins_over_the_config_file(
    sandbox: Sandbox, tmp_path: Path, env: dict[str, str], flags: list[str], uid: str
) -> None:
    path = config(tmp_path, 'user = "redis"\n')
    code, out, err = sandbox.pyinit(
        "--config", path, *flags, "--", "id", "-u", env=base_environment(**env)
    )
    assert (code, out) == (0, f"{uid}\n"), err


def test_pyinit_stop_timeout_wins_over_the_config_file_as_pid1(tmp_path: Path) -> None:
    # The config's 60 s would outlast the wait: the variable's 1 s must be the deadline.
    ready = tmp_path / "ready"
    script = f"trap '' TERM; touch {ready}; while :; do sleep 0.05; done"
    env = dict(os.environ, PYINIT_STOP_TIMEOUT="1")
    argv = ["--config", config(tmp_path, "stop-timeout = 60\n"), "--", "sh", "-c", script]
    with Namespace(argv, env=env) as ns:
        wait_for(ready.exists, what="the target")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait(timeout=20)
    assert code == 128 + signal.SIGKILL, err


def test_exec_path_with_the_variables_imports_no_config_reader(sandbox: Sandbox) -> None:
    env = base_environment(
        PYTHONPATH=str(PROJECT_ROOT),
        PYINIT_USER="nobody",
        PYINIT_MODE="exec",
        PYINIT_STOP_TIMEOUT="25",
    )
    code, out, err = sandbox.run([*PYINIT_IMPORTTIME, "--", "id", "-u"], env=env)
    assert (code, out) == (0, "65534\n"), err
    modules = imported_modules(err)
    assert "pyinit.run.execmode" in modules
    for heavy in ("tomllib", "pyinit.plan.config", "typing", "dataclasses", "trio"):
        assert heavy not in modules, heavy
