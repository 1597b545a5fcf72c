"""Planning sidecars, tasks, probes and --config (docs/services.md), up to --dry-run."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_helpers import ALL_CAPS, plan_for
from sandbox import PYINIT, base_environment, pyinit_imports, run

from pyinit.cli import parse_options
from pyinit.errors import UsageError, quoted
from pyinit.plan import build_plan
from pyinit.plan.items import ALL_KEYS, parse_item_text, parse_probe, split_words
from pyinit.plan.render import render_plan
from pyinit.plan.services import SIDECAR, TASK, Item, Probe


def error_of(argv: list[str], environ: dict[str, str] | None = None, **kw: int) -> str:
    """The UsageError message planning ``argv`` raises."""
    with pytest.raises(UsageError) as info:
        plan_for(argv, environ, **kw)
    return info.value.message


def sidecar(text: str, *more: str) -> Item:
    """The one item planned from ``--sidecar TEXT``."""
    plan = plan_for(["--sidecar", text, *more, "--", "main"])
    assert len(plan.items) == 1
    return plan.items[0]


def write(tmp_path: Path, text: str, name: str = "pyinit.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- the item string ---------------------------------------------------------------------


def test_defaults_of_a_sidecar() -> None:
    item = sidecar("db -- redis-server --port 6380")
    assert item.kind == SIDECAR
    assert item.name == "db"
    assert item.command == ("redis-server", "--port", "6380")
    assert item.identity is None
    assert item.switch_identity is False
    assert (item.workdir, item.env, item.ready, item.ready_timeout) == (None, (), None, None)
    assert (item.restart, item.backoff_min, item.backoff_max) == ("always", 0.5, 30.0)
    assert (item.max_restarts, item.restart_window) == (5, 60.0)
    assert (item.on_giveup, item.stop_signal, item.log) == ("stop", signal.SIGTERM, "prefix")
    assert item.source == "--sidecar 'db -- redis-server --port 6380'"


def test_every_key_parses() -> None:
    item = sidecar(
        "w user=nobody workdir=/srv env=A=1 env='B=two words' env=C= ready=tcp:6380 "
        "ready-timeout=2.5 restart=on-failure backoff=1:10 max-restarts=3/20 "
        "on-giveup=ignore stop-signal=QUIT log=raw -- worker 'x y'"
    )
    assert item.command == ("worker", "x y")
    assert item.identity is not None and item.identity.uid == 65534
    assert item.switch_identity is True
    assert item.workdir == "/srv"
    assert item.env == (("A", "1"), ("B", "two words"), ("C", ""))
    assert item.ready is not None and (item.ready.host, item.ready.port) == ("127.0.0.1", 6380)
    assert item.ready_timeout == 2.5
    assert (item.restart, item.backoff_min, item.backoff_max) == ("on-failure", 1.0, 10.0)
    assert (item.max_restarts, item.restart_window) == (3, 20.0)
    assert (item.on_giveup, item.stop_signal, item.log) == ("ignore", signal.SIGQUIT, "raw")


def test_max_restarts_without_window_keeps_60() -> None:
    item = sidecar("w max-restarts=0 -- x")
    assert (item.max_restarts, item.restart_window) == (0, 60.0)


def test_a_task_takes_the_common_keys() -> None:
    plan = plan_for(["--task", "m user=nobody workdir=/ env=X=1 log=raw -- migrate", "main"])
    (item,) = plan.items
    assert (item.kind, item.name, item.log, item.env) == (TASK, "m", "raw", (("X", "1"),))


def test_items_default_to_the_main_user() -> None:
    item = sidecar("a -- x", "--user", "nobody")
    assert item.identity is not None and item.identity.name == "nobody"
    assert item.switch_identity
    own = sidecar("a user=root -- x", "--user", "nobody")
    assert own.identity is not None and own.identity.uid == 0


def test_order_is_kept_interleaved() -> None:
    plan = plan_for(["--task", "t1 -- a", "--sidecar", "s1 -- b", "--task", "t2 -- c", "main"])
    assert [(i.kind, i.name) for i in plan.items] == [
        (TASK, "t1"),
        (SIDECAR, "s1"),
        (TASK, "t2"),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("db redis-server", ["no ' -- '"]),
        ("db --", ["empty command"]),
        ("-- redis-server", ["missing NAME"]),
        ("db 'unbalanced -- x", ["cannot split"]),
        ("db ready -- x", ["'ready' is not KEY=VALUE"]),
        ("Db -- x", ["bad name 'Db'"]),
        ("main -- x", ["'main' is reserved"]),
        ("_x -- x", ["bad name '_x'"]),
        ("a" * 33 + " -- x", ["bad name"]),
        ("db colour=red -- x", ["unknown key 'colour'"]),
        ("db restart=sometimes -- x", ["restart='sometimes'", "always, on-failure, never"]),
        ("db on-giveup=cry -- x", ["on-giveup='cry'"]),
        ("db log=file -- x", ["log='file'"]),
        ("db stop-signal=NOPE -- x", ["stop-signal 'NOPE'", "unknown signal"]),
        ("db backoff=1 -- x", ["backoff='1'", "MIN:MAX"]),
        ("db backoff=5:1 -- x", ["MIN is above MAX"]),
        ("db backoff=a:1 -- x", ["backoff='a:1'"]),
        ("db backoff=1:0 -- x", ["must be a finite number > 0"]),
        ("db max-restarts=x -- x", ["max-restarts='x'"]),
        ("db max-restarts=3/0 -- x", ["max-restarts='3/0'"]),
        ("db max-restarts=-1 -- x", ["max-restarts='-1'"]),
        ("db ready-timeout=0 -- x", ["ready-timeout='0'"]),
        ("db ready-timeout=inf -- x", ["ready-timeout='inf'"]),
        ("db ready-timeout=soon -- x", ["ready-timeout='soon'"]),
        ("db env=NOVALUE -- x", ["env='NOVALUE'", "NAME=VALUE"]),
        ("db env==1 -- x", ["env='=1'"]),
        ("db user= -- x", ["user=", "empty"]),
        ("db user=nosuchuser -- x", ["user='nosuchuser'", "unknown user 'nosuchuser'"]),
        ("db user=nobody:nosuchgroup -- x", ["unknown group 'nosuchgroup'"]),
        ("db workdir= -- x", ["workdir="]),
        ("db restart=never restart=always -- x", ["'restart' given twice"]),
        ("db ready=bogus -- x", ["ready='bogus'", "unknown probe"]),
    ],
)
def test_sidecar_errors(text: str, words: list[str]) -> None:
    message = error_of(["--sidecar", text, "main"])
    assert message.startswith(f"--sidecar {text!r}: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "key", ["ready=notify", "ready-timeout=1", "restart=never", "backoff=1:2", "max-restarts=1",
            "on-giveup=ignore", "stop-signal=INT"]
)  # fmt: skip
def test_sidecar_keys_are_errors_on_a_task(key: str) -> None:
    message = error_of(["--task", f"t {key} -- x", "main"])
    assert message.startswith(f"--task 't {key} -- x': key ")
    assert "for sidecars only" in message


def test_duplicate_names_across_kinds() -> None:
    message = error_of(["--sidecar", "a -- x", "--task", "a -- y", "main"])
    assert message == "--task 'a -- y': duplicate name 'a' (first used by --sidecar 'a -- x')"


def test_item_user_needs_the_capabilities() -> None:
    message = error_of(["--sidecar", "a user=nobody -- x", "main"], mask=0)
    assert message.startswith("--sidecar 'a user=nobody -- x': user='nobody': ")
    assert "CAP_SETGID" in message or "CAP_SETUID" in message


def test_non_root_item_user_is_skipped_with_a_notice() -> None:
    plan = plan_for(["--sidecar", "a user=nobody -- x", "main"], euid=1000, mask=0)
    (item,) = plan.items
    assert (item.identity, item.switch_identity) == (None, False)
    assert any("sidecar 'a' runs as uid 1000" in n for n in plan.notices)
    message = error_of(
        ["--if-not-root", "fail", "--sidecar", "a user=nobody -- x", "main"], euid=1000, mask=0
    )
    assert "needs CAP_" in message


def test_items_follow_a_skipped_main_step_down() -> None:
    plan = plan_for(["--user", "nobody", "--sidecar", "a -- x", "main"], euid=1000, mask=0)
    assert (plan.items[0].switch_identity, plan.switch_identity) == (False, False)


# --- probes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("notify", {"kind": "notify"}),
        ("fd:3", {"kind": "fd", "fd": 3}),
        ("fd:10", {"kind": "fd", "fd": 10}),
        ("tcp:6380", {"kind": "tcp", "host": "127.0.0.1", "port": 6380}),
        ("tcp:db.local:5432", {"kind": "tcp", "host": "db.local", "port": 5432}),
        ("tcp:[::1]:80", {"kind": "tcp", "host": "::1", "port": 80}),
        ("unix:/run/app.sock", {"kind": "unix", "path": "/run/app.sock"}),
        ("unix:@abstract", {"kind": "unix", "path": "@abstract"}),
        ("file:/tmp/ready", {"kind": "file", "path": "/tmp/ready"}),
        ("exec:redis-cli ping", {"kind": "exec", "argv": ("redis-cli", "ping")}),
        ("exec:sh -c 'test -e /x'", {"kind": "exec", "argv": ("sh", "-c", "test -e /x")}),
        (
            "http://127.0.0.1:8080/healthz",
            {"kind": "http", "host": "127.0.0.1", "port": 8080, "path": "/healthz"},
        ),
        ("http://localhost", {"kind": "http", "host": "localhost", "port": 80, "path": "/"}),
        ("http://h:81/a?b=c", {"kind": "http", "host": "h", "port": 81, "path": "/a?b=c"}),
    ],
)
def test_probes_parse(text: str, fields: dict[str, object]) -> None:
    probe = parse_probe(text, "--ready")
    assert probe.text == text
    for name, value in fields.items():
        assert getattr(probe, name) == value
    if probe.kind == "http":
        assert probe.url == text


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("", "unknown probe"),
        ("ready", "unknown probe"),
        ("fd:2", ">= 3"),
        ("fd:x", ">= 3"),
        ("fd:", ">= 3"),
        ("tcp:", "port ''"),
        ("tcp:0", "port '0'"),
        ("tcp:65536", "port '65536'"),
        ("tcp:host:", "port ''"),
        ("tcp::80", "bad host"),
        ("unix:", "needs a path"),
        ("file:", "needs a path"),
        ("exec:", "needs a command"),
        ("exec:'x", "cannot split"),
        ("http://", "bad host"),
        ("http://h:x/", "port 'x'"),
        ("http://h/a b", "spaces"),
        ("https://h/", "unknown probe"),
        ("smtp:25", "unknown probe"),
    ],
)
def test_probe_errors(text: str, word: str) -> None:
    message = error_of(["--ready", text, "main"])
    assert message.startswith(f"--ready {text!r}: ")
    assert word in message


def test_ready_of_the_main_is_planned() -> None:
    plan = plan_for(["--ready", "tcp:8080", "--mode", "supervise", "main"])
    assert plan.ready == parse_probe("tcp:8080", "--ready")
    assert plan.items == ()


def test_without_items_the_plan_has_none() -> None:
    plan = plan_for(["main"])
    assert (plan.items, plan.ready) == ((), None)


# --- mode -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags", [["--sidecar", "a -- x"], ["--task", "a -- x"], ["--ready", "notify"]]
)
def test_items_mean_supervise(flags: list[str]) -> None:
    assert plan_for([*flags, "main"], pid=4242).mode == "supervise"
    assert plan_for(["--mode", "supervise", *flags, "main"]).mode == "supervise"
    message = error_of(["--mode", "exec", *flags, "main"])
    assert "needs --mode supervise" in message


def test_mode_exec_env_with_an_item_is_an_error() -> None:
    message = error_of(["--sidecar", "a -- x", "main"], base_environment(PYINIT_MODE="exec"))
    assert "needs --mode supervise" in message


# --- the config file ---------------------------------------------------------------------------

EXAMPLE = """\
user = "nobody"
stop-timeout = 8
mkdir = ["/tmp/pyinit-example:0750"]
no-new-privs = true
command = ["app", "--serve"]

[[start]]
sidecar = "db"
command = ["redis-server", "--port", "6380"]
ready = "tcp:6380"

[[start]]
task = "migrate"
command = ["python", "manage.py", "migrate"]

[[start]]
sidecar = "worker"
command = ["celery", "-A", "proj", "worker"]
env = { C_FORCE_ROOT = "false" }
max-restarts = 3
ready-timeout = 30
"""


def test_config_file_example(tmp_path: Path) -> None:
    plan = plan_for(["--config", write(tmp_path, EXAMPLE)])
    assert plan.command == ("app", "--serve")
    assert plan.identity is not None and plan.identity.name == "nobody"
    assert plan.stop_timeout == 8
    assert plan.no_new_privs is True
    assert [m.path for m in plan.mkdirs] == ["/tmp/pyinit-example"]
    assert [(i.kind, i.name) for i in plan.items] == [
        (SIDECAR, "db"),
        (TASK, "migrate"),
        (SIDECAR, "worker"),
    ]
    db, _, worker = plan.items
    assert db.ready is not None and db.ready.port == 6380
    assert worker.env == (("C_FORCE_ROOT", "false"),)
    assert (worker.max_restarts, worker.ready_timeout) == (3, 30.0)
    assert worker.identity is not None and worker.identity.name == "nobody"
    assert plan.mode == "supervise"
    assert db.source.endswith("pyinit.toml: [[start]] #1 (db)")


def test_pyinit_config_env(tmp_path: Path) -> None:
    plan = plan_for([], base_environment(PYINIT_CONFIG=write(tmp_path, EXAMPLE)))
    assert len(plan.items) == 3


def test_config_flag_wins_over_env(tmp_path: Path) -> None:
    other = write(tmp_path, 'command = ["other"]\n', "other.toml")
    env = base_environment(PYINIT_CONFIG=write(tmp_path, EXAMPLE))
    assert plan_for(["--config", other], env).command == ("other",)


def test_file_items_start_before_the_flags(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    plan = plan_for(["--task", "first -- a", "--config", path, "--sidecar", "last -- b"])
    assert [i.name for i in plan.items] == ["db", "migrate", "worker", "first", "last"]


def test_flags_override_scalars_and_append_to_lists(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    plan = plan_for(
        [
            "--config",
            path,
            "--stop-timeout",
            "3",
            "--user",
            "root",
            "--mkdir",
            "/tmp/pyinit-second",
        ]
    )
    assert plan.stop_timeout == 3
    assert plan.identity is not None and plan.identity.uid == 0
    assert [m.path for m in plan.mkdirs] == ["/tmp/pyinit-example", "/tmp/pyinit-second"]


def test_argv_command_wins(tmp_path: Path) -> None:
    plan = plan_for(["--config", write(tmp_path, EXAMPLE), "--", "mine", "arg"])
    assert plan.command == ("mine", "arg")


def test_every_store_option_works_from_the_file(tmp_path: Path) -> None:
    text = """\
mode = "supervise"
umask = "027"
rlimit = ["nofile=1024"]
keep-fd = [5]
rewrite = ["TERM:QUIT"]
post = ["echo done"]
signal-group = true
chown-policy = "on-root-mismatch"
ready = "http://127.0.0.1:8080/"
command = ["x"]
"""
    plan = plan_for(["--config", write(tmp_path, text)])
    assert plan.mode == "supervise"
    assert plan.umask == 0o027
    assert [r.name for r in plan.rlimits] == ["nofile"]
    assert plan.keep_fds == (5,)
    assert plan.rewrites == ((signal.SIGTERM, signal.SIGQUIT),)
    assert plan.forward_to_group is True
    assert plan.ready is not None and plan.ready.kind == "http"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("user = \n", ["TOML syntax error"]),
        ("[[start]\n", ["TOML syntax error"]),
        ("colour = 'red'\n", ["unknown key 'colour'"]),
        ("config = 'x'\n", ["unknown key 'config'"]),
        ("sidecar = ['a -- x']\n", ["unknown key 'sidecar'"]),
        ("user = 65534\nuser2 = 1\n", ["unknown key 'user2'"]),
        ("stop-timeout = true\n", ["key 'stop-timeout'", "not a boolean"]),
        ("no-new-privs = 'yes'\n", ["key 'no-new-privs'", "expected true or false"]),
        ("mkdir = '/data'\n", ["key 'mkdir'", "expected an array"]),
        ("mkdir = [1.5, {}]\n", ["key 'mkdir'", "not a table"]),
        ("command = 'app'\n", ["key 'command'", "expected an array"]),
        ("command = []\n", ["key 'command'", "empty array"]),
        ("mode = 'fast'\n", ["key 'mode'", "'fast' is not one of exec, supervise, auto"]),
        ("stop-timeout = -1\n", ["key 'stop-timeout'", "--stop-timeout '-1'"]),
        ("mkdir = ['data']\n", ["key 'mkdir'", "must be absolute"]),
        ("umask = '999'\n", ["key 'umask'", "octal"]),
        ("user = 'nosuchuser'\n", ["key 'user'", "unknown user 'nosuchuser'"]),
        ("ready = 'tcp:0'\n", ["key 'ready'", "port '0'"]),
        ("keep-cap = ['FLY']\n", ["key 'keep-cap'", "unknown capability"]),
        ("start = 1\n", ["key 'start'"]),
        ("[[start]]\ncommand = ['x']\n", ["[[start]] #1", "exactly one of"]),
        ("[[start]]\nsidecar = 'a'\ntask = 'b'\ncommand = ['x']\n", ["exactly one of"]),
        ("[[start]]\nsidecar = 1\ncommand = ['x']\n", ["[[start]] #1: key 'sidecar'"]),
        ("[[start]]\nsidecar = 'a'\n", ["[[start]] #1 (a): key 'command' is missing"]),
        ("[[start]]\nsidecar = 'a'\ncommand = []\n", ["(a): key 'command': empty"]),
        ("[[start]]\nsidecar = 'a'\ncommand = 'x'\n", ["(a): key 'command'"]),
        ("[[start]]\nsidecar = 'a'\ncommand = ['x']\ncolour = 1\n", ["unknown key 'colour'"]),
        ("[[start]]\nsidecar = 'a'\ncommand = ['x']\nenv = 'A=1'\n", ["(a): key 'env'"]),
        ("[[start]]\nsidecar = 'a'\ncommand = ['x']\nenv = { A = [] }\n", ["key 'env.A'"]),
        ("[[start]]\nsidecar = 'a'\ncommand = ['x']\nrestart = 1\n", ["key 'restart'"]),
        ("[[start]]\nsidecar = 'a'\ncommand = ['x']\nrestart = 'no'\n", ["restart='no'"]),
        ("[[start]]\nsidecar = 'A'\ncommand = ['x']\n", ["(A): bad name 'A'"]),
        ("[[start]]\ntask = 't'\ncommand = ['x']\nready = 'notify'\n", ["for sidecars only"]),
        (
            "[[start]]\nsidecar = 'a'\ncommand = ['x']\n[[start]]\ntask = 'a'\ncommand = ['y']\n",
            ["[[start]] #2 (a): duplicate name 'a'"],
        ),
    ],
)
def test_config_errors(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    message = error_of(["--config", path, "main"])
    assert message.startswith(path + ": "), message
    for word in words:
        assert word in message, message


def test_config_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    assert error_of(["--config", path, "main"]) == f"--config {path!r}: No such file or directory"


def test_config_item_numbers_and_strings(tmp_path: Path) -> None:
    text = (
        "[[start]]\nsidecar = 'a'\ncommand = ['x']\nready-timeout = '1.5'\nmax-restarts = '2/9'\n"
    )
    (item,) = plan_for(["--config", write(tmp_path, text), "main"]).items
    assert (item.ready_timeout, item.max_restarts, item.restart_window) == (1.5, 2, 9.0)


def test_duplicate_between_file_and_flags(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    message = error_of(["--config", path, "--sidecar", "db -- x"])
    assert message.startswith("--sidecar 'db -- x': duplicate name 'db' (first used by ")


# --- --dry-run -----------------------------------------------------------------------------------


def test_dry_run_text(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    code, out, err = run(
        [
            *PYINIT,
            "--dry-run",
            "--config",
            path,
            "--sidecar",
            "exp user=root stop-signal=INT env=A=1 workdir=/srv log=raw -- exporter 'a b'",
            "--ready",
            "http://127.0.0.1:8080/health",
        ],
        env=base_environment(),
    )
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    start = lines.index("start (in order, then the main):")
    assert lines[start + 1] == "  1. sidecar db: redis-server --port 6380"
    assert lines[start + 2].startswith("     user: switch to nobody (uid 65534")
    assert lines[start + 3] == "     environment: the main's; HOME=/nonexistent"
    assert lines[start + 4] == "     ready: tcp:127.0.0.1:6380, timeout none"
    assert lines[start + 5] == (
        "     policy: restart always, backoff 0.5:30s, max-restarts 5/60s, on-giveup stop, "
        "stop-signal SIGTERM, log prefix"
    )
    assert "  2. task migrate: python manage.py migrate" in lines
    assert "     env C_FORCE_ROOT=false" in lines
    assert "     ready: none (ready once it has exec'd), timeout 30s" in lines
    assert "  4. sidecar exp: exporter 'a b'" in lines
    assert "     workdir: /srv" in lines
    assert "     env A=1" in lines
    # exp runs as root, the main as nobody: its own HOME, USER and LOGNAME (names only).
    assert "     environment: the main's, set A, HOME, LOGNAME, USER; HOME=/root" in lines
    assert any("stop-signal SIGINT, log raw" in line for line in lines)
    assert "main ready: http://127.0.0.1:8080/health" in lines
    assert "command: app --serve" in lines
    assert lines.index("main ready: http://127.0.0.1:8080/health") < lines.index(
        "command: app --serve"
    )


def test_dry_run_json(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    code, out, err = run(
        [*PYINIT, "--dry-run", "--json", "--config", path, "--ready", "unix:/run/app.sock"],
        env=base_environment(),
    )
    assert (code, err) == (0, ""), err
    data = json.loads(out)
    assert data["mode"] == "supervise"
    assert [(i["kind"], i["name"]) for i in data["items"]] == [
        ("sidecar", "db"),
        ("task", "migrate"),
        ("sidecar", "worker"),
    ]
    db = data["items"][0]
    assert db["command"] == ["redis-server", "--port", "6380"]
    assert db["user"].startswith("nobody (uid 65534")
    assert db["ready"]["kind"] == "tcp" and db["ready"]["port"] == 6380
    assert (db["restart"], db["backoff_min"], db["backoff_max"]) == ("always", 0.5, 30.0)
    assert (db["max_restarts"], db["restart_window"], db["on_giveup"]) == (5, 60.0, "stop")
    assert (db["stop_signal"], db["stop_signal_name"], db["log"]) == (15, "SIGTERM", "prefix")
    assert data["items"][2]["env"] == [["C_FORCE_ROOT", "false"]]
    launch = db["launch"]
    assert launch["command"] == ["redis-server", "--port", "6380"]
    assert launch["user"].startswith("nobody (uid 65534")
    assert (launch["home"], launch["workdir"], launch["env_set"]) == ("/nonexistent", None, [])
    assert (launch["no_new_privs"], launch["keep_caps"], launch["keep_fds"]) == (True, [], [])
    assert (launch["session"], launch["extra_groups"]) == ("detached", [])
    assert data["items"][2]["launch"]["env_set"] == ["C_FORCE_ROOT"]
    assert "env" not in launch  # names only: an item's environment holds its secrets
    main = data["launch"]
    assert (main["command"], main["session"]) == (["app", "--serve"], "group")
    assert "HOME" in main["env_set"] and main["home"] == "/nonexistent"
    assert data["ready"]["kind"] == "unix" and data["ready"]["path"] == "/run/app.sock"


def test_the_mains_fd_probe_is_planned_and_shown() -> None:
    plan = plan_for(["--ready", "fd:5", "--keep-fd", "3", "--", "main"])
    assert plan.ready is not None and (plan.ready.kind, plan.ready.fd) == ("fd", 5)
    assert "main ready: fd:5" in render_plan(plan, {}).splitlines()


def test_the_mains_fd_probe_may_not_be_a_socket_activation_fd() -> None:
    environ = {**base_environment(), "LISTEN_FDS": "2", "LISTEN_PID": "4242"}
    message = error_of(["--ready", "fd:4", "--", "main"], environ)
    assert message == (
        "--ready 'fd:4': LISTEN_FDS=2 passes the main fds 3..4 (socket activation); pick "
        "another N for the readiness pipe"
    )
    assert plan_for(["--ready", "fd:5", "--", "main"], environ).ready is not None


def test_dry_run_json_without_items() -> None:
    data = json.loads(render_plan(plan_for(["x"]), {}, as_json=True))
    assert (data["items"], data["ready"]) == ([], None)
    assert "start (in order" not in render_plan(plan_for(["x"]), {})


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["--sidecar", "db restart=maybe -- x"], "pyinit: --sidecar 'db restart=maybe -- x': "),
        (["--task", "t ready=notify -- x"], "pyinit: --task 't ready=notify -- x': "),
        (["--ready", "tcp:99999"], "pyinit: --ready 'tcp:99999': "),
        (["--ready", "fd:3", "--keep-fd", "3"], "pyinit: --ready 'fd:3': --keep-fd 3 passes"),
        (["--ready", "fd:2147483647"], "pyinit: --ready 'fd:2147483647': no such descriptor"),
        (
            ["--sidecar", "s ready=fd:2147483647 -- x"],
            "pyinit: sidecar s: ready='fd:2147483647': no such descriptor",
        ),
        (["--mode", "exec", "--task", "t -- x"], "pyinit: --sidecar/--task needs --mode"),
    ],
)
def test_errors_are_one_line_and_125(argv: list[str], start: str) -> None:
    code, out, err = run([*PYINIT, "--dry-run", *argv, "--", "main"], env=base_environment())
    assert (code, out) == (125, "")
    assert err.startswith(start), err
    assert err.count("\n") == 1


def test_config_errors_are_one_line_and_125(tmp_path: Path) -> None:
    path = write(tmp_path, "[[start]]\nsidecar = 'a'\ncommand = ['x']\nbackoff = '9:1'\n")
    code, out, err = run([*PYINIT, "--dry-run", "--config", path], env=base_environment())
    assert (code, out) == (125, "")
    assert err == f"pyinit: {path}: [[start]] #1 (a): backoff='9:1': MIN is above MAX\n"
    bad = write(tmp_path, "user = [\n", "bad.toml")
    code, _, err = run([*PYINIT, "--dry-run", "--config", bad, "x"], env=base_environment())
    assert code == 125 and err.startswith(f"pyinit: {bad}: TOML syntax error")
    assert err.count("\n") == 1


# --- import cost ---------------------------------------------------------------------------------


def test_shlex_and_tomllib_only_when_used(tmp_path: Path) -> None:
    plain = pyinit_imports(["--dry-run", "--", "true"])
    assert not {"shlex", "tomllib", "pyinit.plan.items", "pyinit.plan.config"} & plain
    items = pyinit_imports(["--dry-run", "--sidecar", "a -- x", "--", "true"])
    assert {"shlex", "pyinit.plan.items"} <= items
    assert "tomllib" not in items
    config = pyinit_imports(["--dry-run", "--config", write(tmp_path, EXAMPLE)])
    assert {"tomllib", "pyinit.plan.config"} <= config


def test_an_item_string_without_quotes_is_split_without_shlex() -> None:
    # The items are planned before the first sidecar is forked: shlex's import and
    # tokenizer are paid only by a string that quotes or escapes (--dry-run's
    # listing imports it to quote the commands).
    code = (
        "import os, sys; from pyinit.cli import parse_options; from pyinit.plan import build_plan;"
        "o = parse_options(['--sidecar', 'a user=nobody -- /bin/x --flag=1 y', '--', 'true'],"
        " os.environ); p = build_plan(o, os.environ);"
        "print(p.items[0].command, 'shlex' in sys.modules)"
    )
    _, out, err = run([sys.executable, "-S", "-c", code], env=base_environment())
    assert out == "('/bin/x', '--flag=1', 'y') False\n", err


# --- properties ----------------------------------------------------------------------------------

TOKENS = st.sampled_from(
    ["db", "a", "main", "--", "-", "=", "'", '"', " ", "\\", "user=", "ready=", "env=A=1"]
    + [f"{k}=" for k in ALL_KEYS]
    + ["notify", "tcp:1", "fd:3", "x", "restart=never", "backoff=1:2", "0", "A"]
)


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(
                ["a", "b=1", "--", " ", "  ", "\t", "'", '"', "\\", "#", "\xa0", "\x0b", "é"]
            ),
            max_size=10,
        ).map("".join),
    )
)
def test_split_words_is_shlex_split(text: str) -> None:
    try:
        expected: list[str] | str = shlex.split(text)
    except ValueError as e:
        expected = str(e)
    try:
        got: list[str] | str = split_words(text)
    except ValueError as e:
        got = str(e)
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["sidecar", "task"]),
    text=st.one_of(st.text(max_size=60), st.lists(TOKENS, max_size=12).map(" ".join)),
)
def test_item_strings_parse_or_fail_naming_the_flag(kind: str, text: str) -> None:
    try:
        spec = parse_item_text(kind, text)
    except UsageError as e:
        assert e.message.startswith(f"--{kind} {quoted(text)}: ")
        assert "\n" not in e.message
        return
    assert spec.command and spec.name
    options = parse_options([f"--{kind}", text, "--mode", "supervise", "main"], {})
    try:
        plan = build_plan(options, {}, pid=4242, euid=0, capability_mask=ALL_CAPS)
    except UsageError as e:
        assert e.message.startswith(f"--{kind} {quoted(text)}: ")
        return
    (item,) = plan.items
    assert isinstance(item, Item) and item.kind == kind and item.command == spec.command


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.tuples(
            st.sampled_from(["notify", "fd:", "tcp:", "unix:", "file:", "exec:", "http://", "x:"]),
            st.text(max_size=30),
        ).map("".join),
    )
)
def test_probes_parse_or_fail_naming_the_flag(text: str) -> None:
    where = f"--ready {text!r}"
    try:
        probe = parse_probe(text, where)
    except UsageError as e:
        assert e.message.startswith(where + ": ")
        return
    assert isinstance(probe, Probe)
    assert probe.text == text
    if probe.kind == "tcp":
        assert probe.port is not None and 1 <= probe.port <= 65535 and probe.host
    if probe.kind == "fd":
        assert probe.fd is not None and probe.fd >= 3
    if probe.kind == "exec":
        assert probe.argv
