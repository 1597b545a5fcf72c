"""``--only-for NAME``: the docker-library convention (issue 15, item 18).

The official redis image does its root setup and steps down only for
``redis-server``: ``docker run redis id`` prints 0, ``docker run -it redis
bash`` is a root shell, and ``docker run redis --port 7000`` runs
``redis-server --port 7000``.  Checked from the outside: pyinit is PID 1 of
a PID namespace with the fixture users (redis is 999); a fake
``redis-server`` on PATH reports its uid and arguments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from plan_helpers import plan_for
from sandbox import (
    DEFAULT_PATH,
    Result,
    Sandbox,
    base_environment,
    pyinit_imports,
    scratch_dir,
)

from pyinit.errors import UsageError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

FAKE_SERVER = '#!/bin/sh\necho "$(basename "$0") uid=$(id -u) args=$*"\n'


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every fixture user can reach, with a fake redis-server in its bin/."""
    with scratch_dir("pyinit-only-for-") as path:
        bin_dir = path / "bin"
        bin_dir.mkdir(mode=0o755)
        for name in ("redis-server", "redis-check-aof"):
            (bin_dir / name).write_text(FAKE_SERVER)
            (bin_dir / name).chmod(0o755)
        yield path


def env_for(public_dir: Path, **extra: str) -> dict[str, str]:
    return base_environment(PATH=f"{public_dir}/bin:{DEFAULT_PATH}", **extra)


def ok(result: Result) -> str:
    assert result.returncode == 0, result
    return result.stdout


# --- what a user of the official images expects ----------------------------------------


def test_another_command_runs_as_it_is(sandbox: Sandbox, public_dir: Path) -> None:
    # `docker run IMAGE id`: root, nothing set up, nothing else started, no secret read.
    d = public_dir
    (d / "own").mkdir()
    env = env_for(d, SECRET_FILE="/nonexistent", PYINIT_FILE_ENV="OTHER")
    result = sandbox.pyinit(
        "--user", "redis", "--only-for", "redis-server",
        "--mkdir", f"{d}/data", "--chown", f"{d}/own=redis", "--pre", f"touch {d}/pre",
        "--file-env", "SECRET", "--umask", "077", "--workdir", "~", "--rlimit", "nofile=64",
        "--sidecar", f"side -- touch {d}/side", "--task", f"task -- touch {d}/task",
        "--post", f"touch {d}/post",
        "--", "sh", "-c",
        'id -u; id -G; umask; pwd; ulimit -n; echo "$SECRET_FILE $HOME $PYINIT_FILE_ENV"',
        pid_namespace=True, env=env,
    )  # fmt: skip
    uid, groups, umask, cwd, nofile, environment = ok(result).split("\n")[:6]
    assert (uid, groups, cwd) == ("0", "0", "/")
    assert umask != "0077" and nofile != "64"
    assert environment == "/nonexistent /root OTHER"  # the environment untouched
    assert result.stderr == ""  # the notice is for -v and --dry-run only
    assert sorted(os.listdir(d)) == ["bin", "own"]  # no mkdir, hook, sidecar, task or post hook
    assert (d / "own").stat().st_uid == 0


def test_pid1_still_forwards_the_exit_status(sandbox: Sandbox) -> None:
    result = sandbox.pyinit(
        "--user", "redis", "--only-for", "redis-server", "--", "sh", "-c", "exit 7",
        pid_namespace=True,
    )  # fmt: skip
    assert result.returncode == 7, result


def test_a_first_argument_with_a_dash_goes_to_the_server(
    sandbox: Sandbox, public_dir: Path
) -> None:
    # `docker run IMAGE --port 7000`, with ENTRYPOINT [..., "--only-for", "redis-server", "--"].
    data = public_dir / "data"
    result = sandbox.pyinit(
        "--user", "redis", "--mkdir", str(data), "--only-for", "redis-server",
        "--", "--port", "7000",
        pid_namespace=True, env=env_for(public_dir),
    )  # fmt: skip
    assert ok(result) == "redis-server uid=999 args=--port 7000\n"
    assert data.stat().st_uid == 999  # matched: root setup done


def test_the_matching_command_is_set_up_and_steps_down(sandbox: Sandbox, public_dir: Path) -> None:
    data = public_dir / "data"
    for command in ("redis-server", f"{public_dir}/bin/redis-server"):
        result = sandbox.pyinit(
            "--user", "redis", "--mkdir", str(data), "--only-for", "redis-server",
            "--", command, "--save", "",
            pid_namespace=True, env=env_for(public_dir),
        )  # fmt: skip
        assert ok(result) == "redis-server uid=999 args=--save \n"
        assert data.stat().st_uid == 999
        data.rmdir()


def test_a_glob_matches_the_basename(sandbox: Sandbox, public_dir: Path) -> None:
    result = sandbox.pyinit(
        "--user", "redis", "--only-for", "mongo*", "--only-for", "redis-*",
        "--", "redis-check-aof", "x",
        pid_namespace=True, env=env_for(public_dir),
    )  # fmt: skip
    assert ok(result) == "redis-check-aof uid=999 args=x\n"


def test_a_dash_needs_a_literal_name(sandbox: Sandbox) -> None:
    result = sandbox.pyinit("--user", "redis", "--only-for", "redis*", "--", "--port", "7000")
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr == (
        "pyinit: --only-for redis*: the command starts with '--port', which goes to the server,"
        " but no --only-for is a plain command name to run it with (add the server's name too,"
        " e.g. --only-for mongod)\n"
    )


def test_bad_names_are_one_line(sandbox: Sandbox) -> None:
    for name, line in (
        ("", "pyinit: --only-for: empty name (a command name such as redis-server, or mongo*)\n"),
        (
            "/usr/bin/redis-server",
            "pyinit: --only-for '/usr/bin/redis-server': the name or pattern of the command's"
            " basename, without '/' (e.g. redis-server or mongo*)\n",
        ),
    ):
        result = sandbox.pyinit("--only-for", name, "--", "true")
        assert (result.returncode, result.stdout, result.stderr) == (125, "", line)


def test_notice_under_verbose(sandbox: Sandbox) -> None:
    result = sandbox.pyinit("-v", "--user", "redis", "--only-for", "redis-server", "--", "true")
    assert result.returncode == 0, result
    assert (
        "pyinit: --only-for: 'true' does not match redis-server: it runs as it is, as uid 0,"
        " without root setup, step-down, secrets, hooks, sidecars or tasks\n"
    ) in result.stderr


def test_dry_run_shows_the_decision(sandbox: Sandbox, public_dir: Path) -> None:
    args = ("--dry-run", "--user", "redis", "--mkdir", f"{public_dir}/data")
    out = ok(sandbox.pyinit(*args, "--only-for", "redis-server", "--", "bash"))
    assert "only-for: 'bash' does not match redis-server: it runs as it is, as uid 0" in out
    assert "root setup: none\nstep-down:\n  none (runs as the current user)\n" in out
    assert "command: bash\n" in out
    out = ok(sandbox.pyinit(*args, "--only-for", "redis-server", "--", "-p", "1"))
    assert "only-for: the command starts with '-p': running redis-server with its arguments" in out
    assert f"1. mkdir {public_dir}/data" in out
    assert "command: redis-server -p 1\n" in out
    data = json.loads(ok(sandbox.pyinit(*args, "--json", "--only-for", "redis-*", "--", "id")))
    assert data["only_for"] == {
        "names": ["redis-*"],
        "matched": False,
        "note": "'id' does not match redis-*: it runs as it is, as uid 0, without root setup,"
        " step-down, secrets, hooks, sidecars or tasks",
    }
    assert data["identity"] is None and data["mkdirs"] == []


def test_config_key(sandbox: Sandbox, public_dir: Path) -> None:
    config = public_dir / "pyinit.toml"
    config.write_text('user = "redis"\nonly-for = ["redis-server"]\ncommand = ["redis-server"]\n')
    env = env_for(public_dir)
    assert ok(sandbox.pyinit("--config", str(config), env=env)) == "redis-server uid=999 args=\n"
    assert ok(sandbox.pyinit("--config", str(config), "--", "id", "-u", env=env)) == "0\n"
    config.write_text('only-for = ["a/b"]\n')
    result = sandbox.pyinit("--config", str(config), "--", "true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"pyinit: {config}: key 'only-for': --only-for 'a/b': ")


# --- the plan, in process ----------------------------------------------------------------


def test_plan_of_an_unmatched_command() -> None:
    environ = {"PATH": DEFAULT_PATH, "PYINIT_USER": "nobody", "PYINIT_FILE_ENV": "X"}
    environ["X_FILE"] = "/nonexistent"
    plan = plan_for(["--only-for", "redis-server", "--mkdir", "/srv/x", "--", "bash"], environ)
    assert plan.identity is None and plan.mkdirs == () and not plan.root_setup
    assert plan.file_env == () and plan.env["X_FILE"] == "/nonexistent"
    assert plan.only_for is not None and not plan.only_for.matched
    matched = plan_for(["--only-for", "bash", "--user", "nobody", "--", "/bin/bash"])
    assert matched.identity is not None and matched.identity.uid == 65534
    assert matched.only_for is not None and matched.only_for.matched
    assert plan_for(["--user", "nobody", "--", "bash"]).only_for is None
    # The service's items are not planned for `bash`...
    plain = plan_for(["--only-for", "x", "--sidecar", "a -- y", "--", "bash"])
    assert plain.items == ()
    # ...but the supervise-only rule is the configuration's, whatever the command: an image
    # asking for --mode exec and a sidecar is refused for every command alike.
    with pytest.raises(UsageError, match="--sidecar/--task needs --mode supervise"):
        plan_for(["--mode", "exec", "--only-for", "x", "--sidecar", "a -- y", "--", "bash"])


# --- start-up cost -------------------------------------------------------------------------


def test_fnmatch_only_for_a_pattern() -> None:
    assert "pyinit.plan.onlyfor" not in pyinit_imports(["--mode", "exec", "--", "true"])
    literal = pyinit_imports(["--mode", "exec", "--only-for", "redis-server", "--", "true"])
    assert "pyinit.plan.onlyfor" in literal and "fnmatch" not in literal
    assert "fnmatch" in pyinit_imports(["--mode", "exec", "--only-for", "redis*", "--", "true"])
