"""Draining: ``--stop-delay SECS`` (docs/usage.md, docs/design.md "The stop timeline").

On a stop signal pyinit reports not-ready at once (``STOPPING=1`` upward,
``health``) and forwards the signal to the main only SECS later, inside the
one ``--stop-timeout`` deadline.  The budget is tested in-process; the rest
from outside, with pyinit as PID 1 of a PID namespace and a main that writes
down, with the time, every stop signal it gets.  Order is asserted with
timestamps the processes (and the kernel) took, never with how long the
test waited.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pidns import TARGET_PYTHON, Namespace, run_pyinit, wait_for
from test_cli_sources import plan_for

from pyinit.plan.render import render_plan
from pyinit.plan.stop import StopBudget, stop_budget

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

# --- the budget: pure numbers ------------------------------------------------------------


def test_the_delay_is_the_first_part_of_the_budget() -> None:
    budget = StopBudget.for_stop(8.0, ("sidecar b", "sidecar a"), ("--post 'x'",), delay=3.0)
    assert budget.delay == 3.0
    assert budget.share == 0.9
    assert [(t.who, round(t.signal_by, 6)) for t in budget.turns] == [
        ("main", 3.0),
        ("sidecar b", 3.9),
        ("sidecar a", 4.8),
        ("leftovers", 5.7),
    ]
    assert budget.kill_by == pytest.approx(6.6)
    assert [h.kill_by for h in budget.hooks] == [pytest.approx(7.5)]
    assert budget.grace == 0.5


def test_without_a_delay_the_budget_is_unchanged() -> None:
    assert StopBudget.for_stop(8.0, ("s",), ()) == StopBudget.for_stop(8.0, ("s",), (), 0.0)
    assert StopBudget.for_stop(8.0, (), ()).delay == 0.0


def test_a_delay_next_to_the_timeout_still_ends_by_it() -> None:
    budget = StopBudget.for_stop(2.0, ("sidecar s",), (), delay=1.9)
    assert budget.kill_by + budget.grace == pytest.approx(2.0)
    assert budget.share >= 0


def test_the_plan_takes_the_delay_from_flag_variable_and_config_file(tmp_path: Path) -> None:
    assert stop_budget(plan_for(["--stop-delay", "2", "--mode", "supervise", "true"])).delay == 2
    env_plan = plan_for(["--mode", "supervise", "true"], {"PYINIT_STOP_DELAY": "1.5"})
    assert env_plan.stop_delay == 1.5
    config = tmp_path / "pyinit.toml"
    config.write_text("stop-delay = 4\nstop-timeout = 30\n")
    config.chmod(0o644)
    assert plan_for(["--config", str(config), "true"]).stop_delay == 4
    assert plan_for(["--mode", "supervise", "true"]).stop_delay == 0


def test_dry_run_shows_the_drain_in_the_stop_timeline() -> None:
    plan = plan_for(["--stop-delay", "3", "--sidecar", "b -- true", "--mode", "supervise", "true"])
    text = render_plan(plan, {})
    assert (
        "  stop budget: 8s in turns of 1.5s (seconds after the stop; a turn ends early once "
        "its process is gone)\n"
        "    at 0s      a stop signal: not ready at once (STOPPING=1, health); draining 3s "
        "(--stop-delay; a second stop signal ends it)\n"
        "    at 3s      main: the stop signal, forwarded (after a give-up: SIGTERM at 0s)\n"
        "    by 4.5s    sidecar b: SIGTERM\n"
        "    by 6s      leftovers: SIGTERM\n"
        "    at 7.5s    SIGKILL to every process still running\n"
        "    at 8s      pyinit exits\n"
    ) in text
    data = json.loads(render_plan(plan, {}, as_json=True))
    assert data["stop_delay"] == 3.0
    assert data["stop_budget"]["delay"] == 3.0
    assert data["stop_budget"]["turns"][0] == {"who": "main", "signal_by": 3.0}


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["--stop-delay", "8"],
            {},
            "pyinit: --stop-delay '8': must be shorter than the stop timeout (8s), which it is "
            "the first part of\n",
        ),
        (
            ["--stop-timeout", "2"],
            {"PYINIT_STOP_DELAY": "5"},
            "pyinit: PYINIT_STOP_DELAY='5': must be shorter than the stop timeout (2s), which it "
            "is the first part of\n",
        ),
        (
            ["--stop-delay", "soon"],
            {},
            "pyinit: --stop-delay 'soon': expected seconds, e.g. 10 or 2.5\n",
        ),
    ],
)
def test_a_delay_that_does_not_fit_is_refused_with_one_line(
    args: list[str], env: dict[str, str], line: str
) -> None:
    full_env = dict(os.environ, **env)
    code, out, err = run_pyinit(
        [*args, "--mode", "supervise", "--", "touch", "/nonexistent/never"],
        pid1=False,
        env=full_env,
    )
    assert (code, out, err) == (125, "", line)


# --- from outside -------------------------------------------------------------------------

#: The main: writes ``SIGNAME TIME_NS`` (CLOCK_REALTIME) for each TERM or INT and exits 0;
#: exits 7 once ``exit`` exists.
MAIN = """
import os, signal, sys, time
T = sys.argv[1]
def got(signum, _):
    with open(T + "/signals", "a") as f:
        f.write(f"{signal.Signals(signum).name} {time.time_ns()}\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, got)
signal.signal(signal.SIGINT, got)
open(T + "/up", "w").close()
while not os.path.exists(T + "/exit"):
    time.sleep(0.01)
sys.exit(7)
"""

#: A sidecar makes the event loop supervise (no sidecar: the plain, synchronous driver).
DRIVERS = {"plain": [], "loop": ["--sidecar", "s -- sleep 60"]}


def _main(tmp_path: Path) -> list[str]:
    script = tmp_path / "main.py"
    script.write_text(MAIN)
    return ["--", TARGET_PYTHON, str(script), str(tmp_path)]


def _signals(tmp_path: Path) -> list[tuple[str, int]]:
    path = tmp_path / "signals"
    if not path.exists():
        return []
    return [
        (name, int(ns))
        for name, ns in (line.split() for line in path.read_text().split("\n") if line)
    ]


@contextlib.contextmanager
def _pyinit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Namespace]:
    """pyinit --verbose ARGS as PID 1, its stderr in ``tmp_path/stderr``, the main up."""
    argv = ["--verbose", *args]
    with (tmp_path / "stderr").open("w") as err, Namespace(argv, env=env, stderr=err) as ns:
        wait_for(lambda: (tmp_path / "up").exists() or ns.proc.poll() is not None, what="main")
        yield ns


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr").read_text()


def _draining(tmp_path: Path) -> None:
    """Wait until pyinit took the first stop signal and holds it back."""
    wait_for(lambda: "before the main gets it (--stop-delay)" in _stderr(tmp_path), what="drain")


@needs_root
@pytest.mark.parametrize("driver", DRIVERS)
def test_the_main_gets_the_stop_signal_only_after_the_delay(tmp_path: Path, driver: str) -> None:
    with _pyinit(tmp_path, "--stop-delay", "1", *DRIVERS[driver], *_main(tmp_path)) as ns:
        sent = time.time_ns()
        ns.signal(signal.SIGTERM)
        code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert code == 0, err
    [(name, got)] = _signals(tmp_path)
    assert name == "SIGTERM", err
    assert got - sent >= 0.9e9, (got - sent, err)  # the delay, less a clock's rounding
    assert "SIGTERM: draining for 1s before the main gets it (--stop-delay)" in err
    assert "drained: forwarded SIGTERM to " in err


@needs_root
@pytest.mark.parametrize("driver", DRIVERS)
def test_the_drained_signal_is_rewritten_like_any_forwarded_one(
    tmp_path: Path, driver: str
) -> None:
    args = ["--stop-delay", "0.5", "--rewrite", "TERM:INT", *DRIVERS[driver]]
    with _pyinit(tmp_path, *args, *_main(tmp_path)) as ns:
        ns.signal(signal.SIGTERM)
        code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert code == 0, err
    assert [name for name, _ in _signals(tmp_path)] == ["SIGINT"], err
    assert "drained: forwarded SIGINT to " in err


#: asm-generic's SO_TIMESTAMPNS (x86, arm): the kernel stamps each datagram's arrival.
SO_TIMESTAMPNS = 35


@needs_root
def test_stopping_reaches_the_upward_notify_socket_before_the_main_gets_its_signal(
    tmp_path: Path,
) -> None:
    address = f"pyinit-drain-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + address)
        sock.settimeout(20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        env = dict(os.environ, NOTIFY_SOCKET="@" + address)
        with _pyinit(tmp_path, "--stop-delay", "1", *_main(tmp_path), env=env) as ns:
            assert sock.recv(4096) == b"READY=1"
            ns.signal(signal.SIGTERM)
            message, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(16))
            code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert message == b"STOPPING=1", err
    [(_, _, data)] = ancillary
    seconds, nanoseconds = struct.unpack("qq", data[:16])
    stopping_at = seconds * 10**9 + nanoseconds
    assert code == 0, err
    [(name, got)] = _signals(tmp_path)
    assert name == "SIGTERM" and stopping_at < got, (stopping_at, got, err)


@needs_root
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_second_stop_signal_is_forwarded_at_once_and_ends_the_drain(
    tmp_path: Path, driver: str
) -> None:
    # A drain of 60 s: the namespace's wait (20 s) ends long before it would.
    args = ["--stop-timeout", "90", "--stop-delay", "60", *DRIVERS[driver]]
    with _pyinit(tmp_path, *args, *_main(tmp_path)) as ns:
        ns.signal(signal.SIGTERM)
        _draining(tmp_path)
        ns.signal(signal.SIGINT)
        code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert code == 0, err
    assert [name for name, _ in _signals(tmp_path)] == ["SIGINT"], err
    assert "second SIGINT during the drain: forwarded at once" in err


@needs_root
@pytest.mark.parametrize("driver", DRIVERS)
def test_the_main_exiting_during_the_drain_ends_pyinit_with_its_status(
    tmp_path: Path, driver: str
) -> None:
    args = ["--stop-timeout", "90", "--stop-delay", "60", *DRIVERS[driver]]
    with _pyinit(tmp_path, *args, *_main(tmp_path)) as ns:
        ns.signal(signal.SIGTERM)
        _draining(tmp_path)
        (tmp_path / "exit").touch()
        code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert code == 7, err
    assert _signals(tmp_path) == [], err
    assert "drained" not in err, err


@needs_root
def test_a_stop_that_is_not_a_stop_signal_has_no_drain(tmp_path: Path) -> None:
    # The sidecar gives up at once: the main gets SIGTERM then, not 60 s later.
    args = ["--stop-timeout", "90", "--stop-delay", "60", "--sidecar", "s restart=never -- false"]
    with _pyinit(tmp_path, *args, *_main(tmp_path)) as ns:
        code, _, _ = ns.wait()
    err = _stderr(tmp_path)
    assert code == 1, err
    assert [name for name, _ in _signals(tmp_path)] == ["SIGTERM"], err
    assert "draining" not in err, err
