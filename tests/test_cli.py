"""The command line: parsing, environment defaults, --help/--version, and the plan it builds."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
from pathlib import Path
from types import MappingProxyType

import pytest
from plan_helpers import ALL_CAPS, plan_for
from sandbox import PROJECT_ROOT, base_environment, run, run_pyinit

from pyinit import __version__
from pyinit.cli import build_parser, execute, parse_options
from pyinit.errors import UsageError
from pyinit.plan import frozen_env, required_capabilities
from pyinit.plan.capabilities import CAPABILITY_NUMBERS
from pyinit.plan.render import render_plan
from pyinit.record import Record

#: The stable surface from the guide (section 1): these names must exist.
CONTRACT_FLAGS = [
    "--user",
    "--mode",
    "--chown",
    "--mkdir",
    "--umask",
    "--rlimit",
    "--file-env",
    "--no-new-privs",
    "--keep-cap",
    "--pre",
    "--post",
    "--stop-timeout",
    "--dry-run",
    "--verbose",
    "--quiet",
    "--version",
    "--help",
]


def long_options() -> list[str]:
    """Every long option the parser knows."""
    return sorted(
        opt
        for action in build_parser()._actions
        for opt in action.option_strings
        if opt.startswith("--")
    )


# --- --version, --help, entry points ---------------------------------------------------


def test_version() -> None:
    code, out, err = run_pyinit("--version")
    assert (code, out, err) == (0, f"pyinit {__version__}\n", "")


def test_help_lists_the_contract() -> None:
    code, out, err = run_pyinit("--help")
    assert (code, err) == (0, "")
    for flag in CONTRACT_FLAGS:
        assert flag in out, flag
    assert "exit status" in out
    assert "125" in out


def test_short_options() -> None:
    code, out, _ = run_pyinit("-h")
    assert code == 0
    for short in ("-u", "-m", "-v", "-q", "-h"):
        assert re.search(rf"(^|\s){short}[ ,]", out), short


def test_console_script() -> None:
    script = shutil.which("pyinit")
    if script is None:
        pytest.skip("the pyinit console script is not on PATH")
    code, out, _ = run([script, "--version"], env=dict(os.environ))
    assert (code, out) == (0, f"pyinit {__version__}\n")


def test_python_dash_m_runs_a_target() -> None:
    code, out, _ = run_pyinit("--", "sh", "-c", "echo ran")
    assert (code, out) == (0, "ran\n")


@pytest.mark.parametrize(
    ("mode", "runner"),
    [
        ("exec", "pyinit.run.execmode.run_exec_mode"),
        ("supervise", "pyinit.run.supervisor.supervise"),
    ],
)
def test_the_collector_is_back_on_before_anything_is_carried_out(
    monkeypatch: pytest.MonkeyPatch, mode: str, runner: str
) -> None:
    # pyinit.__main__ turns the cyclic collector off for the start-up (docs/design.md,
    # "Start-up cost"): root setup and a supervisor that runs for months must have it.
    seen: list[tuple[bool, int]] = []
    monkeypatch.setattr(runner, lambda *_: seen.append((gc.isenabled(), gc.get_freeze_count())))
    plan = plan_for(["--mode", mode, "--", "true"])
    gc.disable()
    try:
        execute(plan, ())
    finally:
        gc.unfreeze()
        gc.enable()
    [(enabled, frozen)] = seen
    assert enabled
    assert frozen > 0  # what the start-up made is out of every later collection


def test_a_collector_left_on_is_not_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    # cli.main called in-process (not through pyinit.__main__): nothing of the caller's is frozen.
    seen: list[int] = []
    monkeypatch.setattr(
        "pyinit.run.supervisor.supervise", lambda *_: seen.append(gc.get_freeze_count())
    )
    assert gc.isenabled()
    execute(plan_for(["--mode", "supervise", "--", "true"]), ())
    assert seen == [0]


def test_docs_cover_every_flag() -> None:
    usage = (PROJECT_ROOT / "docs" / "usage.md").read_text()
    missing = [flag for flag in long_options() if f"`{flag}" not in usage]
    assert not missing, f"docs/usage.md does not document {missing}"
    for name in ("PYINIT_USER", "PYINIT_MODE", "PYINIT_FILE_ENV"):
        assert name in usage


def test_stepdown_doc_exists() -> None:
    text = (PROJECT_ROOT / "docs" / "stepdown.md").read_text()
    for word in ("gosu", "su-exec", "setpriv", "/etc/passwd", "NSS", "TIOCSTI"):
        assert word in text, word


# --- parsing ---------------------------------------------------------------------------


def test_separator_is_stripped_once() -> None:
    assert parse_options(["--", "--", "x"], {}).command == ["--", "x"]
    assert parse_options(["--", "true"], {}).command == ["true"]


def test_options_after_the_command_belong_to_it() -> None:
    options = parse_options(["--user", "redis", "redis-server", "--user", "x", "-v"], {})
    assert options.user == "redis"
    assert options.command == ["redis-server", "--user", "x", "-v"]
    assert not options.verbose


def test_equals_form_allows_leading_dash_values() -> None:
    assert parse_options(["--user=-x", "--", "true"], {}).user == "-x"


def test_pyinit_user_env() -> None:
    assert parse_options(["true"], {"PYINIT_USER": "redis"}).user == "redis"
    assert parse_options(["-u", "alice", "true"], {"PYINIT_USER": "redis"}).user == "alice"
    assert parse_options(["true"], {"PYINIT_USER": ""}).user is None


@pytest.mark.parametrize("mode", ["exec", "supervise", "auto"])
def test_pyinit_mode_env(mode: str) -> None:
    assert parse_options(["true"], {"PYINIT_MODE": mode}).mode == mode


def test_mode_flag_wins_over_env() -> None:
    assert parse_options(["-m", "exec", "true"], {"PYINIT_MODE": "supervise"}).mode == "exec"


def test_bad_pyinit_mode_env_is_ignored_when_the_flag_is_given() -> None:
    assert parse_options(["--mode", "exec", "true"], {"PYINIT_MODE": "bogus"}).mode == "exec"


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--mode", "fast", "true"], {}, ["--mode", "fast"]),
        (["true"], {"PYINIT_MODE": "fast"}, ["PYINIT_MODE", "fast"]),
        (["-v", "-q", "true"], {}, ["--verbose", "--quiet"]),
        (["--json", "true"], {}, ["--json", "--dry-run"]),
        (["--frobnicate", "true"], {}, ["--frobnicate"]),
        (["--user"], {}, ["--user"]),
    ],
)
def test_parse_errors(argv: list[str], env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(UsageError) as info:
        parse_options(argv, env)
    assert info.value.exit_code == 125
    assert "\n" not in info.value.message
    for word in words:
        assert word in info.value.message


def test_no_abbreviations() -> None:
    # A prefix must never silently mean another flag (--us for --user...).
    with pytest.raises(UsageError):
        parse_options(["--us", "redis", "true"], {})


# --- the plan --------------------------------------------------------------------------


def test_plan_mode_auto() -> None:
    assert plan_for(["true"], pid=1).mode == "supervise"
    assert plan_for(["true"], pid=77).mode == "exec"
    # a supervise-only flag selects supervise even when not PID 1 (with a notice)
    plan = plan_for(["--post", "echo done", "true"], pid=77)
    assert plan.mode == "supervise"
    assert any("subreaper" in n for n in plan.notices)


def test_plan_identity_environment() -> None:
    plan = plan_for(["--user", "root", "true"], base_environment(USER="x", LOGNAME="y"))
    assert (plan.env["HOME"], plan.env["USER"], plan.env["LOGNAME"]) == ("/root", "root", "root")
    nameless = plan_for(["--user", "4242", "true"], base_environment(USER="x", LOGNAME="y"))
    assert nameless.env["HOME"] == "/"
    assert "USER" not in nameless.env
    assert "LOGNAME" not in nameless.env


def test_plan_without_user_keeps_the_environment() -> None:
    env = base_environment(USER="someone")
    plan = plan_for(["true"], env)
    assert plan.identity is None
    assert plan.env == env


def _mutable_parts(value: object, where: str) -> list[str]:
    """Where ``value`` (a Record, tuple or mapping, at any depth) holds a mutable container."""
    if isinstance(value, (list, dict, set, bytearray)):
        return [where]
    if isinstance(value, Record):
        return [m for n in value._field_names() for m in _mutable_parts(getattr(value, n), n)]
    if isinstance(value, tuple):
        return [m for i, v in enumerate(value) for m in _mutable_parts(v, f"{where}[{i}]")]
    if isinstance(value, MappingProxyType):
        return [m for k, v in value.items() for m in _mutable_parts(v, f"{where}[{k!r}]")]
    return []


def test_the_plan_holds_nothing_mutable(tmp_path: Path) -> None:
    plan = plan_for(
        ["--user", "nobody", "--groups", "0", "--mkdir", "/srv/a", "--chown", "/srv/a",
         "--rlimit", "nofile=1024", "--pre", "true", "--post", "true", "--keep-cap", "CHOWN",
         "--rewrite", "TERM:INT", "--ready", "tcp:80",
         "--sidecar", "s env=A=1 ready=exec:true -- sleep 1", "--task", "t -- true", "main"],
        base_environment(NOTIFY_SOCKET="/run/n"),
        pid=1,
    )  # fmt: skip
    assert plan.items and plan.env and plan.pre_hooks
    assert _mutable_parts(plan, "plan") == []
    with pytest.raises(TypeError):
        plan.env["PATH"] = "/evil"  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.env.pop("PATH")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        plan.env = {}  # type: ignore[misc]
    # A derived plan must freeze its env too: a dict is refused, not silently kept.
    with pytest.raises(TypeError, match=r"Plan\.env: a dict"):
        plan.replace(env=dict(plan.env))
    assert plan.replace(env=frozen_env({"A": "1"})).env == {"A": "1"}


def test_frozen_env_is_a_private_copy() -> None:
    source = {"A": "1"}
    env = frozen_env(source)
    source["A"] = "changed"
    assert env == {"A": "1"}


def test_notify_socket_is_pyinit_s_own_in_supervise_mode() -> None:
    env = base_environment(NOTIFY_SOCKET="/run/podman/notify.sock")
    plan = plan_for(["--mode", "supervise", "true"], env)
    assert plan.notify_socket == "/run/podman/notify.sock"
    assert "NOTIFY_SOCKET" not in plan.env
    assert plan_for(["true"], env, pid=1).notify_socket == "/run/podman/notify.sock"
    # Empty is no manager (sd_notify(3)): nothing to report to, and still not inherited.
    empty = plan_for(["--mode", "supervise", "true"], base_environment(NOTIFY_SOCKET=""))
    assert empty.notify_socket is None
    assert "NOTIFY_SOCKET" not in empty.env
    assert plan_for(["--mode", "supervise", "true"]).notify_socket is None


def test_notify_socket_is_the_target_s_in_exec_mode() -> None:
    # In exec mode the target becomes pyinit's process: the socket is meant for it.
    env = base_environment(NOTIFY_SOCKET="/run/podman/notify.sock")
    plan = plan_for(["--mode", "exec", "true"], env)
    assert plan.notify_socket is None
    assert plan.env["NOTIFY_SOCKET"] == "/run/podman/notify.sock"


def test_render_shows_the_notify_socket_decision() -> None:
    env = base_environment(NOTIFY_SOCKET="/run/podman/notify.sock")
    supervise = plan_for(["--mode", "supervise", "true"], env)
    text = render_plan(supervise, env)
    assert (
        "  NOTIFY_SOCKET: kept for pyinit (READY=1/STOPPING=1), not passed to children"
        in text.splitlines()
    )
    data = json.loads(render_plan(supervise, env, as_json=True))
    assert data["notify_socket"] == "<from NOTIFY_SOCKET>"
    assert "NOTIFY_SOCKET" in data["env_changes"]["unset"]
    exec_plan = plan_for(["--mode", "exec", "true"], env)
    assert "NOTIFY_SOCKET: left to the target" in render_plan(exec_plan, env)
    data = json.loads(render_plan(exec_plan, env, as_json=True))
    assert data["notify_socket"] is None
    assert data["env_changes"] == {"set": {}, "unset": []}
    for output in (text, render_plan(exec_plan, env)):
        assert "/run/podman" not in output  # an inherited value, like any other: not shown
    without = render_plan(plan_for(["--mode", "supervise", "true"]), base_environment())
    assert "NOTIFY_SOCKET" not in without


def test_root_to_root_still_switches() -> None:
    # Dropping root's supplementary groups needs the switch.
    assert plan_for(["--user", "root", "true"]).switch_identity


def test_capability_check_names_setuid() -> None:
    mask = ALL_CAPS & ~(1 << CAPABILITY_NUMBERS["SETUID"])
    with pytest.raises(UsageError) as info:
        plan_for(["--user", "nobody", "true"], mask=mask)
    message = info.value.message
    assert "CAP_SETUID" in message
    assert "--user 'nobody'" in message
    assert "drop" in message  # root without the capability: the container dropped it


def test_capability_check_names_setgid() -> None:
    mask = ALL_CAPS & ~(1 << CAPABILITY_NUMBERS["SETGID"])
    with pytest.raises(UsageError) as info:
        plan_for(["--user", "nobody", "true"], mask=mask)
    assert "CAP_SETGID" in info.value.message


def test_keep_cap_needs_the_capability() -> None:
    mask = ALL_CAPS & ~(1 << CAPABILITY_NUMBERS["NET_BIND_SERVICE"])
    with pytest.raises(UsageError) as info:
        plan_for(["--user", "nobody", "--keep-cap", "NET_BIND_SERVICE", "true"], mask=mask)
    assert "CAP_NET_BIND_SERVICE" in info.value.message
    assert "--keep-cap" in info.value.message


def test_keep_cap_names_are_normalised() -> None:
    plan = plan_for(
        [
            "--user",
            "nobody",
            "--keep-cap",
            "cap_net_bind_service",
            "--keep-cap",
            "NET_BIND_SERVICE",
            "true",
        ]
    )
    assert plan.keep_caps == ("NET_BIND_SERVICE",)


def test_required_capabilities_for_root_to_root() -> None:
    plan = plan_for(["--user", "root", "true"])
    needed = required_capabilities(plan, euid=0)
    assert "SETUID" not in needed  # uid 0 stays 0: setresuid(0, 0, 0) needs nothing
    assert "SETGID" in needed


def test_groups_need_user() -> None:
    with pytest.raises(UsageError) as info:
        plan_for(["--groups", "0", "true"])
    assert "--groups" in info.value.message


def test_setup_as_non_root_is_skipped_with_a_notice() -> None:
    plan = plan_for(["--mkdir", "/tmp/x", "true"], euid=4242, mask=0)
    assert not plan.root_setup
    assert plan.mkdirs == ()
    assert any("skipping root setup" in n for n in plan.notices)
    with pytest.raises(UsageError):
        plan_for(["--if-not-root", "fail", "--mkdir", "/tmp/x", "true"], euid=4242, mask=0)


def test_render_masks_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("topsecret\n")
    env = base_environment(TOKEN_FILE=str(secret), DB_PASSWORD="plainsecret")
    plan = plan_for(["--file-env", "TOKEN", "--user", "nobody", "true"], env)
    assert plan.env["TOKEN"] == "topsecret"
    assert "TOKEN_FILE" not in plan.env
    text = render_plan(plan, env)
    data = json.loads(render_plan(plan, env, as_json=True))
    for output in (text, json.dumps(data)):
        assert "topsecret" not in output
        assert "plainsecret" not in output
    assert data["env_changes"]["set"]["TOKEN"] == "<from TOKEN_FILE>"
    assert data["env_changes"]["set"]["HOME"] == "/nonexistent"
    assert data["env_changes"]["unset"] == ["TOKEN_FILE"]


def test_render_text_mentions_identity_and_command() -> None:
    text = render_plan(plan_for(["--user", "nobody", "--no-new-privs", "sh", "-c", "x"]), {})
    assert "switch to nobody (uid 65534" in text
    assert "no_new_privs" in text
    assert "command: sh -c x" in text


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--keep-fd=\u00b2"], "--keep-fd"),
        (["--keep-fd=\u0661\u0662"], "--keep-fd"),
        (["--keep-fd=2147483648"], "--keep-fd"),
        (["--keep-fd=2"], "--keep-fd"),
        (["--rlimit=nofile=\u00b2"], "--rlimit"),
        (["--rlimit=core=18446744073709551616"], "--rlimit"),
        (["--rlimit=core=9223372036854775808"], "--rlimit"),
        (["--rlimit=core=-2"], "--rlimit"),
        (["--rlimit=nofile=unlimited"], "--rlimit"),
        (["--rlimit=\u017ftack=1"], "--rlimit"),
        (["--mode=supervise", "--rewrite=TERM:\u00b2"], "--rewrite"),
        (["--mode=supervise", "--rewrite=\u00b2:TERM"], "--rewrite"),
        (["--mode=supervise", "--rewrite=\u017figterm:HUP"], "--rewrite"),
        (["--stop-timeout=\u0661"], "--stop-timeout"),
        (["--stop-timeout=1e3"], "--stop-timeout"),
        (["--stop-timeout=1_0"], "--stop-timeout"),
        (["--stop-timeout=99999999999"], "--stop-timeout"),
        (["--umask=\u0660\u0662\u0667"], "--umask"),
        (["--mkdir=/srv/x:\u0667\u0665\u0665"], "--mkdir"),
        (["--keep-cap=\u017fetuid"], "--keep-cap"),
        (["--user=\u00b2"], "--user"),
        (["--user=0", "--groups=99999999999"], "--groups"),
    ],
)
def test_bad_numbers_are_refused_in_the_plan(argv: list[str], flag: str) -> None:
    # Issue 8, items 11 and 12: ASCII digits only, ranges checked before any setup.
    with pytest.raises(UsageError) as info:
        plan_for([*argv, "--", "true"])
    assert info.value.exit_code == 125
    assert flag in info.value.message
    assert "\n" not in info.value.message


def test_numbers_at_the_edges_of_their_range_are_planned() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    plan = plan_for(
        [
            f"--keep-fd={hard - 1}",
            "--rlimit=core=9223372036854775807",
            "--stop-timeout=.5",
            "--umask=0o077",
            "--",
            "true",
        ]
    )
    assert plan.keep_fds == (hard - 1,)
    assert plan.rlimits[0].soft == 9223372036854775807
    assert plan.stop_timeout == 0.5
    assert plan.umask == 0o077


def test_columns_with_odd_digits_does_not_break_help() -> None:
    env = base_environment(COLUMNS="\u00b2")
    proc = run_pyinit("--help", env=env)
    assert proc.returncode == 0, proc.stderr
