"""The host snapshot: read once, and the plan decides from it alone."""

from __future__ import annotations

import argparse
import os

import pytest

from pyinit.cli import parse_options
from pyinit.errors import UsageError
from pyinit.plan import build_plan
from pyinit.plan.capabilities import CAPABILITY_NUMBERS
from pyinit.plan.host import read_host


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
