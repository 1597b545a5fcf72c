"""Launch records: how each process is started, decided in the plan (docs/design.md).

In process: the main's record follows the plan's flags, each item's is made by
build_plan (its own user's HOME/USER/LOGNAME, its env= pairs and its own
secrets only), and the run layer only applies them.
"""

from __future__ import annotations

import json

import pytest
from plan_helpers import plan_for

from pyinit.plan.build import (
    SESSION_DETACHED,
    SESSION_GROUP,
    SESSION_KEEP,
    SESSION_OWN,
    SESSION_SETSID,
    Launch,
    frozen_env,
)
from pyinit.plan.render import render_plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyinit.plan import Plan

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "USER": "root", "LOGNAME": "root", "X": "1"}


def item_launch(plan: Plan, index: int = 0) -> Launch:
    """The launch record build_plan made for item ``index``."""
    launch = plan.items[index].launch
    assert launch is not None
    return launch


@pytest.mark.parametrize(
    ("flags", "session"),
    [
        (["--mode", "exec"], SESSION_KEEP),
        (["--mode", "exec", "--setsid"], SESSION_SETSID),
        (["--mode", "supervise"], SESSION_GROUP),
        (["--mode", "supervise", "--signal-group"], SESSION_OWN),
        (["--mode", "supervise", "--setsid"], SESSION_DETACHED),
        (["--mode", "supervise", "--setsid", "--signal-group"], SESSION_DETACHED),
    ],
)
def test_the_mains_session_follows_mode_and_flags(flags: list[str], session: str) -> None:
    assert plan_for([*flags, "--", "app"], ENV).launch.session == session


def test_the_mains_launch_is_the_plans_own_fields() -> None:
    plan = plan_for(
        ["--user", "nobody", "--umask", "027", "--keep-fd", "5", "--no-new-privs",
         "--rlimit", "nofile=64", "--workdir", "/srv", "--", "app", "-v"],
        {**ENV, "LISTEN_FDS": "2", "LISTEN_PID": "4242"},
    )  # fmt: skip
    launch = plan.launch
    assert launch.command == ("app", "-v")
    assert launch.identity is not None and launch.identity.uid == 65534
    assert (launch.umask, launch.workdir, launch.no_new_privs) == (0o027, "/srv", True)
    assert [r.name for r in launch.rlimits] == ["nofile"]
    # Socket activation's fds 3 and 4, then --keep-fd 5; LISTEN_PID becomes the target's.
    assert (launch.keep_fds, launch.listen_fds) == ((3, 4, 5), 2)
    assert (launch.env["HOME"], launch.env["USER"], launch.env["X"]) == (
        "/nonexistent",
        "nobody",
        "1",
    )
    # Derived, not stored: the loop's change of the main's environment is its launch's too.
    changed = plan.replace(env=frozen_env({**plan.env, "NOTIFY_SOCKET": "/run/n"}))
    assert changed.launch == launch.replace(env=changed.env)


def test_an_item_with_its_own_user_gets_its_own_home_user_and_logname() -> None:
    plan = plan_for(["--user", "nobody", "--task", "t user=root env=A=2 -- job", "--", "app"], ENV)
    launch = item_launch(plan)
    assert launch.command == ("job",)
    assert launch.identity is not None and launch.identity.uid == 0
    assert (launch.env["HOME"], launch.env["USER"], launch.env["LOGNAME"]) == (
        "/root",
        "root",
        "root",
    )
    assert (launch.env["A"], launch.env["X"]) == ("2", "1")
    assert plan.env["USER"] == "nobody"  # the main's stays the main's


def test_a_uid_without_a_name_inherits_no_user_or_logname() -> None:
    plan = plan_for(["--task", "t user=12345 -- job", "--", "app"], ENV)
    env = item_launch(plan).env
    assert "USER" not in env and "LOGNAME" not in env
    assert env["HOME"] == "/"


def test_an_item_without_user_runs_as_the_main_with_the_mains_environment() -> None:
    plan = plan_for(["--user", "nobody", "--sidecar", "s -- side", "--", "app"], ENV)
    launch = item_launch(plan)
    assert launch.identity == plan.identity and launch.switch_identity == plan.switch_identity
    assert dict(launch.env) == dict(plan.env)


def test_an_item_keeps_the_mains_hygiene_but_nothing_the_main_was_handed() -> None:
    plan = plan_for(
        ["--user", "nobody", "--groups", "root", "--keep-cap", "NET_BIND_SERVICE",
         "--keep-fd", "7", "--umask", "077", "--no-new-privs", "--rlimit", "core=0",
         "--signal-group", "--sidecar", "s workdir=/tmp -- side", "--", "app"],
        ENV,
    )  # fmt: skip
    launch = item_launch(plan)
    assert (launch.umask, launch.no_new_privs, launch.rlimits) == (0o077, True, plan.rlimits)
    assert (launch.extra_groups, launch.keep_caps, launch.keep_fds) == ((), (), ())
    assert (launch.listen_fds, launch.workdir, launch.session) == (0, "/tmp", SESSION_DETACHED)
    assert plan.launch.extra_groups and plan.launch.keep_caps == ("NET_BIND_SERVICE",)


def test_dry_run_shows_each_items_environment_by_name_only() -> None:
    plan = plan_for(
        ["--user", "nobody", "--task", "t user=root env=TOKEN=abc -- job",
         "--sidecar", "s -- side", "--", "app"],
        ENV,
    )  # fmt: skip
    lines = render_plan(plan, ENV).splitlines()
    assert "     environment: the main's, set HOME, LOGNAME, TOKEN, USER; HOME=/root" in lines
    assert "     environment: the main's; HOME=/nonexistent" in lines
    data = json.loads(render_plan(plan, ENV, as_json=True))
    task, sidecar = (item["launch"] for item in data["items"])
    assert (task["env_set"], task["env_unset"]) == (["HOME", "LOGNAME", "TOKEN", "USER"], [])
    assert (task["home"], task["session"], sidecar["env_set"]) == ("/root", "detached", [])
    assert "host" not in data and data["launch"]["session"] == "group"
