"""The host snapshot: read once, and the plan decides from it alone."""

from __future__ import annotations

import argparse
import os
import resource

import pytest
from plan_helpers import ALL_CAPS

from pyinit.cli import parse_options
from pyinit.errors import UsageError
from pyinit.plan import build_plan, required_capabilities
from pyinit.plan.capabilities import CAPABILITY_NUMBERS
from pyinit.plan.host import Host, read_host
from pyinit.plan.render import render_plan


def options(*argv: str) -> argparse.Namespace:
    """Parsed options for ``pyinit ARGV``."""
    return parse_options(list(argv), {})


def test_snapshot_matches_this_process() -> None:
    host = read_host()
    assert host.pid == os.getpid()
    assert host.ppid == os.getppid()
    assert host.uids == os.getresuid()
    assert host.gids == os.getresgid()
    assert set(host.groups) == set(os.getgroups())
    with open("/proc/self/status", encoding="ascii") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    assert host.capability_set("CapEff") == eff


def test_the_plan_decides_from_the_snapshot_not_the_process() -> None:
    """A snapshot of PID 1 gives supervise mode, whatever pid the test runs as."""
    host = read_host().replace(pid=1)
    plan = build_plan(options("--", "true"), {"PATH": "/usr/bin"}, host=host)
    assert plan.mode == "supervise"
    assert plan.is_pid1


def test_a_setuid_snapshot_is_refused() -> None:
    host = read_host().replace(uids=(1000, 0, 0))
    with pytest.raises(UsageError) as info:
        build_plan(options("--", "true"), {}, host=host)
    assert "setuid" in info.value.message


def test_capabilities_come_from_the_snapshot() -> None:
    """A snapshot without CAP_CHOWN refuses --chown in the plan, naming the capability."""
    no_chown = ((1 << (max(CAPABILITY_NUMBERS.values()) + 1)) - 1) & ~(
        1 << CAPABILITY_NUMBERS["CHOWN"]
    )
    caps = tuple(
        (name, no_chown if name == "CapEff" else mask) for name, mask in read_host().capabilities
    )
    host = read_host().replace(uids=(0, 0, 0), gids=(0, 0, 0), capabilities=caps)
    with pytest.raises(UsageError) as info:
        build_plan(options("--chown", "/srv/data", "--", "true"), {}, host=host)
    assert "CAP_CHOWN" in info.value.message


def host_with_nofile(hard: int) -> Host:
    """This process's snapshot with another RLIMIT_NOFILE hard limit."""
    host = read_host()
    limits = tuple(
        (n, min(soft, hard), hard) if n == resource.RLIMIT_NOFILE else (n, soft, h)
        for n, soft, h in host.rlimits
    )
    return host.replace(rlimits=limits)


def test_the_fd_table_is_the_snapshots() -> None:
    host = host_with_nofile(64)
    with pytest.raises(UsageError) as info:
        build_plan(options("--keep-fd", "100", "--", "true"), {}, host=host)
    assert "the fd table has 64 entries" in info.value.message
    plan = build_plan(options("--keep-fd", "100", "--", "true"), {}, host=host_with_nofile(1024))
    assert plan.keep_fds == (100,)


def test_raising_a_hard_limit_is_judged_from_the_snapshots_limits() -> None:
    argv = options("--rlimit", "nofile=100:200", "--", "true")
    low = build_plan(argv, {}, host=host_with_nofile(128), capability_mask=ALL_CAPS)
    high = build_plan(argv, {}, host=host_with_nofile(4096), capability_mask=ALL_CAPS)
    assert "SYS_RESOURCE" in required_capabilities(low)
    assert "SYS_RESOURCE" not in required_capabilities(high)


@pytest.mark.parametrize(
    ("pgrp", "sid", "terminal", "refused"),
    [
        (77, 77, True, True),  # leads its group and a session with a terminal
        (77, 5, False, True),  # leads its group in another's session
        (77, 77, False, False),  # already leads a session without a terminal
        (5, 5, True, False),  # not a group leader: setsid() works
    ],
)
def test_exec_mode_setsid_is_judged_from_the_snapshot(
    pgrp: int, sid: int, terminal: bool, refused: bool
) -> None:
    host = read_host().replace(pid=77, pgrp=pgrp, sid=sid, controlling_terminal=terminal)
    argv = options("--mode", "exec", "--setsid", "--", "true")
    if not refused:
        assert build_plan(argv, {}, host=host).launch.session == "setsid"
        return
    with pytest.raises(UsageError) as info:
        build_plan(argv, {}, host=host)
    assert info.value.message == (
        f"--setsid: pyinit (pid 77) leads process group {pgrp} and cannot start a new "
        "session in exec mode; use --mode supervise"
    )


def test_dry_run_shows_the_snapshots_pid_and_ids() -> None:
    host = read_host().replace(pid=1, uids=(0, 0, 0), gids=(7, 7, 7))
    plan = build_plan(options("--mkdir", "/srv/x", "--", "true"), {}, host=host)
    text = render_plan(plan, {})
    assert text.startswith("mode: supervise (asked: auto; pyinit is PID 1; pid 1, PID 1)")
    assert "owned by the current user (0:7)" in text


def test_a_spec_without_a_user_part_means_the_snapshots_real_uid() -> None:
    # gosu: --user :GID keeps the current uid; "current" is the snapshot's real uid.
    host = read_host().replace(uids=(500, 500, 500), gids=(500, 500, 500))
    argv = options("--user", ":2000", "--mkdir", "/srv/x=:2001", "--", "true")
    plan = build_plan(argv, {}, host=host, capability_mask=ALL_CAPS)
    assert plan.identity is not None and (plan.identity.uid, plan.identity.gid) == (500, 2000)
    owner = plan.mkdirs[0].owner
    assert owner is not None and (owner.uid, owner.gid) == (500, 2001)


def test_the_kernels_nofile_cap_is_the_snapshots() -> None:
    host = read_host().replace(nr_open=1000)
    argv = options("--rlimit", "nofile=2000", "--", "true")
    with pytest.raises(UsageError) as info:
        build_plan(argv, {}, host=host, capability_mask=ALL_CAPS)
    assert info.value.message == (
        "--rlimit 'nofile=2000': the kernel allows at most 1000 open files (fs.nr_open)"
    )
    assert build_plan(argv, {}, host=host.replace(nr_open=4000), capability_mask=ALL_CAPS)
