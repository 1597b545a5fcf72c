"""Liveness checks (docs/services.md, "Liveness"): planning in-process, running as PID 1.

``alive=`` for a sidecar, ``--alive`` for the main: the readiness probes
again, every ``alive-every`` seconds from readiness on, ``alive-failures``
in a row = dead.  A dead sidecar is stopped and restarted through its
policy; a dead main stops the container under ``--on-unhealthy stop``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import trio
import trio.testing
from pidns import TARGET_PYTHON, Namespace, run_pyinit, wait_for
from plan_helpers import plan_for
from test_services import _free_port, lines

from pyinit.errors import UsageError
from pyinit.plan.items import parse_alive_probe
from pyinit.plan.render import render_plan
from pyinit.plan.services import Liveness
from pyinit.run.liveness import Checks
from pyinit.run.plain import is_plain

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")


def error_of(argv: list[str]) -> str:
    """The one-line UsageError message planning ``argv`` raises."""
    with pytest.raises(UsageError) as info:
        plan_for(argv)
    return info.value.message


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pyinit.toml"
    path.write_text(text)
    return str(path)


# --- planning -----------------------------------------------------------------------------


def test_a_sidecar_s_liveness_keys_and_their_defaults() -> None:
    (item,) = plan_for(["--sidecar", "db alive=tcp:6380 -- redis-server", "--", "main"]).items
    assert item.alive is not None
    assert (item.alive.probe.kind, item.alive.probe.port) == ("tcp", 6380)
    assert (item.alive.every, item.alive.failures) == (10.0, 3)
    text = "db alive=exec:'redis-cli ping' alive-every=0.5 alive-failures=1 -- redis-server"
    (item,) = plan_for(["--sidecar", text, "--", "main"]).items
    assert item.alive is not None
    assert (item.alive.probe.argv, item.alive.every, item.alive.failures) == (
        ("redis-cli", "ping"),
        0.5,
        1,
    )
    (plain,) = plan_for(["--sidecar", "db -- redis-server", "--", "main"]).items
    assert plain.alive is None


def test_the_mains_liveness_flags_and_their_defaults() -> None:
    plan = plan_for(["--alive", "http://127.0.0.1:8080/health", "--", "main"])
    assert plan.alive is not None
    assert (plan.alive.probe.kind, plan.alive.probe.path) == ("http", "/health")
    assert (plan.alive.every, plan.alive.failures, plan.on_unhealthy) == (10.0, 3, "ignore")
    assert plan.mode == "supervise"  # --alive needs the loop, as --ready does
    argv = ["--alive", "tcp:80", "--alive-every", "2.5", "--alive-failures", "5"]
    plan = plan_for([*argv, "--on-unhealthy", "stop", "--", "main"])
    assert plan.alive is not None
    assert (plan.alive.every, plan.alive.failures, plan.on_unhealthy) == (2.5, 5, "stop")
    assert plan_for(["main"]).alive is None


def test_a_main_with_alive_is_not_a_plain_target() -> None:
    assert is_plain(plan_for(["--mode", "supervise", "--", "main"]))
    assert not is_plain(plan_for(["--alive", "tcp:80", "--", "main"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--sidecar", "a alive=notify -- x"],
            "--sidecar 'a alive=notify -- x': alive='notify': notify is a one-shot readiness "
            "channel, not a liveness check (expected tcp:, unix:, file:, exec: or http://)",
        ),
        (
            ["--sidecar", "a alive=fd:3 -- x"],
            "--sidecar 'a alive=fd:3 -- x': alive='fd:3': fd is a one-shot readiness channel, "
            "not a liveness check (expected tcp:, unix:, file:, exec: or http://)",
        ),
        (
            ["--sidecar", "a alive-every=5 -- x"],
            "--sidecar 'a alive-every=5 -- x': key 'alive-every' needs alive=PROBE "
            "(the check it tunes)",
        ),
        (
            ["--sidecar", "a alive-failures=2 -- x"],
            "--sidecar 'a alive-failures=2 -- x': key 'alive-failures' needs alive=PROBE "
            "(the check it tunes)",
        ),
        (
            ["--sidecar", "a alive=file:/x alive-every=0 -- x"],
            "--sidecar 'a alive=file:/x alive-every=0 -- x': alive-every='0': expected seconds "
            "> 0 between checks, e.g. 10 or 0.5",
        ),
        (
            ["--sidecar", "a alive=file:/x alive-failures=0 -- x"],
            "--sidecar 'a alive=file:/x alive-failures=0 -- x': alive-failures='0': expected a "
            "whole number >= 1 of failed checks in a row",
        ),
        (
            ["--sidecar", "a alive=bogus -- x"],
            "--sidecar 'a alive=bogus -- x': alive='bogus': unknown probe 'bogus' (expected "
            "notify, fd:N, tcp:[HOST:]PORT, unix:PATH, file:PATH, exec:CMD [ARG...] or "
            "http://HOST:PORT/PATH)",
        ),
        (
            ["--task", "a alive=file:/x -- x"],
            "--task 'a alive=file:/x -- x': key 'alive' is for sidecars only, not a task",
        ),
        (
            ["--alive", "notify"],
            "--alive 'notify': notify is a one-shot readiness channel, not a liveness check "
            "(expected tcp:, unix:, file:, exec: or http://)",
        ),
        (["--alive-every", "5"], "--alive-every: needs --alive PROBE (the check it tunes)"),
        (["--alive-failures", "5"], "--alive-failures: needs --alive PROBE (the check it tunes)"),
        (["--on-unhealthy", "stop"], "--on-unhealthy: needs --alive PROBE (the check it tunes)"),
        (
            ["--alive", "tcp:80", "--alive-every", "inf"],
            "--alive-every 'inf': expected seconds > 0 between checks, e.g. 10 or 0.5",
        ),
        (
            ["--alive", "tcp:80", "--alive-failures", "-1"],
            "--alive-failures '-1': expected a whole number >= 1 of failed checks in a row",
        ),
        (
            ["--mode", "exec", "--alive", "tcp:80"],
            "--alive needs --mode supervise, not --mode exec: in exec mode pyinit is replaced "
            "by the target",
        ),
    ],
)
def test_bad_liveness_input_is_one_line_naming_the_key(argv: list[str], message: str) -> None:
    assert error_of([*argv, "--", "main"]) == message


def test_liveness_from_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'alive = "tcp:9000"\nalive-every = 0.5\non-unhealthy = "stop"\n'
        '[[start]]\nsidecar = "w"\ncommand = ["w"]\nalive = "file:/run/w"\n'
        "alive-every = 2\nalive-failures = 4\n",
    )
    plan = plan_for(["--config", path, "--", "main"])
    assert plan.alive is not None
    assert (plan.alive.probe.port, plan.alive.every, plan.alive.failures) == (9000, 0.5, 3)
    assert plan.on_unhealthy == "stop"
    (item,) = plan.items
    assert item.alive is not None
    assert (item.alive.probe.path, item.alive.every, item.alive.failures) == ("/run/w", 2.0, 4)
    # Flags override the file's scalars.
    plan = plan_for(["--config", path, "--alive-failures", "1", "--", "main"])
    assert plan.alive is not None and plan.alive.failures == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('alive = "fd:4"\n', "key 'alive': --alive 'fd:4': fd is a one-shot readiness channel"),
        ("alive-every = -1\n", "key 'alive-every': --alive-every '-1': expected seconds > 0"),
        ("alive-failures = 3\n", "key 'alive-failures': needs --alive PROBE (the check it tunes)"),
        ('on-unhealthy = "kill"\n', "key 'on-unhealthy': 'kill' is not one of ignore, stop"),
        (
            '[[start]]\nsidecar = "w"\ncommand = ["w"]\nalive-every = 1\n',
            "[[start]] #1 (w): key 'alive-every' needs alive=PROBE (the check it tunes)",
        ),
    ],
)
def test_bad_liveness_in_the_config_file_names_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    assert error_of(["--config", path, "--", "main"]).startswith(f"{path}: {message}")


def test_dry_run_shows_each_items_and_the_mains_liveness() -> None:
    plan = plan_for(
        [
            "--sidecar", "db alive=tcp:6380 alive-every=5 -- redis-server",
            "--sidecar", "w -- worker",
            "--alive", "http://127.0.0.1:8080/health", "--alive-failures", "1",
            "--on-unhealthy", "stop",
            "--", "main",
        ]
    )  # fmt: skip
    shown = render_plan(plan, {}).splitlines()
    assert (
        "     alive: tcp:127.0.0.1:6380 every 5s from readiness on, dead after 3 failures in a "
        "row; dead: stopped, then its restart policy"
    ) in shown
    assert "     alive: none" in shown  # w
    assert (
        "main alive: http://127.0.0.1:8080/health every 10s from readiness on, dead after 1 "
        "failure; dead: health says unhealthy and the container stops (exit 143) "
        "(on-unhealthy stop)"
    ) in shown
    only_main = render_plan(plan_for(["--alive", "file:/tmp/up", "--", "main"]), {}).splitlines()
    assert "main ready: none (ready once it has exec'd)" in only_main
    assert (
        "main alive: file:/tmp/up every 10s from readiness on, dead after 3 failures in a row; "
        "dead: health says unhealthy, the container runs on (on-unhealthy ignore)"
    ) in only_main


def test_json_has_each_items_and_the_mains_liveness() -> None:
    plan = plan_for(
        ["--sidecar", "db alive=unix:/run/db.sock -- db", "--alive", "tcp:80", "--", "main"]
    )
    data = json.loads(render_plan(plan, {}, as_json=True))
    assert data["alive"]["probe"]["kind"] == "tcp"
    assert (data["alive"]["every"], data["alive"]["failures"]) == (10.0, 3)
    assert data["on_unhealthy"] == "ignore"
    alive = data["items"][0]["alive"]
    assert (alive["probe"]["path"], alive["every"], alive["failures"]) == ("/run/db.sock", 10.0, 3)
    bare = json.loads(render_plan(plan_for(["main"]), {}, as_json=True))
    assert (bare["alive"], bare["on_unhealthy"]) == (None, "ignore")


# --- the checks' states, in-process with a fake clock ------------------------------------


class Owner:
    """What the checks report to: an ItemRun or the loop's Supervision."""

    def __init__(self) -> None:
        self.alive_state: str | None = None
        self.stopping = False


class Recorded(Checks):
    """Checks whose verdict "dead" is only recorded (a sidecar's kill is tested as PID 1)."""

    def __init__(self, owner: Owner, nursery: trio.Nursery, results: list[int]) -> None:
        alive = Liveness(probe=parse_alive_probe("exec:probe", "alive="), every=10.0, failures=3)
        super().__init__(alive, owner, "sidecar x", nursery, self.call)
        self.results = results
        self.calls: list[float] = []
        self.states: list[str | None] = []
        self.deaths: list[str] = []

    async def call(self, argv: object) -> int:
        self.calls.append(trio.current_time())
        return self.results.pop(0) if self.results else 0

    async def dead(self, run: object, times: str) -> None:
        self.deaths.append(times)


async def test_states_from_waiting_to_dead_and_a_success_resets_the_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    owner = Owner()
    async with trio.open_nursery() as nursery:
        checks = Recorded(owner, nursery, [1, 1, 0, 1, 1, 1])
        checks.reset()
        assert owner.alive_state == "waiting"
        start = trio.current_time()
        checks.begin(run=None)  # type: ignore[arg-type]
        assert owner.alive_state == "ok"
        for _ in range(6):
            await trio.sleep(10.0)
            await trio.testing.wait_all_tasks_blocked()
            checks.states.append(owner.alive_state)
        await trio.sleep(100.0)  # dead: no more calls
    assert checks.states == [
        "failing 1/3",
        "failing 2/3",
        "ok",
        "failing 1/3",
        "failing 2/3",
        "dead",
    ]
    assert checks.deaths == ["3 times"]
    assert [round(t - start) for t in checks.calls] == [10, 20, 30, 40, 50, 60]


async def test_end_and_shutdown_stop_the_checks(autojump_clock: trio.testing.MockClock) -> None:
    owner = Owner()
    async with trio.open_nursery() as nursery:
        checks = Recorded(owner, nursery, [])
        checks.reset()
        checks.begin(run=None)  # type: ignore[arg-type]
        await trio.sleep(25.0)
        checks.end()  # the run ended
        await trio.sleep(100.0)
        assert len(checks.calls) == 2
        checks.reset()  # restarted: waiting until ready again
        assert owner.alive_state == "waiting"
        checks.begin(run=None)  # type: ignore[arg-type]
        owner.stopping = True  # the shutdown began
        await trio.sleep(100.0)
        assert len(checks.calls) == 2
        checks.begin(run=None)  # type: ignore[arg-type]  # nothing starts during the shutdown
        await trio.sleep(100.0)
    assert len(checks.calls) == 2


async def test_no_probe_no_task_no_state(autojump_clock: trio.testing.MockClock) -> None:
    owner = Owner()
    async with trio.open_nursery() as nursery:
        checks = Checks(None, owner, "sidecar x", nursery, Recorded.call)  # type: ignore[arg-type]
        checks.reset()
        checks.begin(run=None)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 0
    assert owner.alive_state is None


# --- running, as PID 1 --------------------------------------------------------------------


DEAD_LINE = "sidecar w failed its liveness check 2 times in a row (file:{}): restarting"


@needs_root
def test_a_sidecar_whose_check_fails_is_restarted_and_spends_its_budget(tmp_path: Path) -> None:
    up = tmp_path / "up"
    up.touch()
    pids = tmp_path / "pids"
    sidecar = (
        f"w alive=file:{up} alive-every=0.2 alive-failures=2 backoff=0.05:1 max-restarts=1/60"
        f" -- sh -c 'echo $$ >> {pids}; exec sleep 30'"
    )
    with Namespace(["--sidecar", sidecar, "--", "sleep", "30"]) as ns:
        assert ns.init_pid
        wait_for(lambda: len(lines(pids)) == 1, what="the sidecar's first start")
        up.unlink()  # the sidecar stops being alive, as far as its check can tell
        # Dead: stopped and restarted (a new pid); still dead after the restart: the
        # liveness kills spent its budget of one restart, and it gives up.
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err  # its last status: killed by its stop-signal
    first, second = (int(pid) for pid in lines(pids))
    assert first != second
    assert err.count(DEAD_LINE.format(up)) == 2, err
    assert "sidecar w exited (killed by SIGTERM): restarting in" in err
    assert (
        "sidecar w gave up (1 restarts within 60s used up; last killed by SIGTERM): stopping the"
        " container"
    ) in err


@needs_root
def test_a_liveness_kill_is_a_failure_even_when_the_sidecar_exits_0(tmp_path: Path) -> None:
    # restart=on-failure would leave a clean exit down; stopped for its liveness, it is
    # restarted, and under restart=never it gives up (exit 1: it last exited 0).
    up = tmp_path / "up"
    pids = tmp_path / "pids"
    script = f"trap 'exit 0' TERM; echo $$ >> {pids}; while :; do sleep 0.05; done"
    common = f"alive=file:{up} alive-every=0.2 alive-failures=2 backoff=0.05:1"
    code, _, err = run_pyinit(
        ["--sidecar", f'w {common} restart=never -- sh -c "{script}"', "--", "sleep", "30"]
    )
    assert code == 1, err
    assert "sidecar w failed its liveness check 2 times in a row" in err
    assert "stopping it (restart=never)" in err
    assert "sidecar w gave up (restart=never; last exit 0): stopping the container" in err
    assert len(lines(pids)) == 1

    up.touch()
    pids.unlink()
    main = f"while [ $(wc -l < {pids} 2>/dev/null || echo 0) -lt 2 ]; do sleep 0.05; done"
    with Namespace(
        [
            "--sidecar", f'w {common} restart=on-failure -- sh -c "{script}"',
            "--", "sh", "-c", f"sleep 0.3; rm {up}; {main}",
        ]
    ) as ns:  # fmt: skip
        code, _, err = ns.wait()
    assert code == 0, err
    assert len(set(lines(pids))) == 2, err
    assert "sidecar w exited (exit 0): restarting in" in err


@needs_root
def test_a_healthy_sidecar_is_checked_and_left_alone(tmp_path: Path) -> None:
    checks = tmp_path / "checks"
    pids = tmp_path / "pids"
    probe = f"exec:sh -c 'echo ok >> {checks}'"
    sidecar = f'w "alive={probe}" alive-every=0.2 -- sh -c "echo $$ >> {pids}; exec sleep 30"'
    main = f"while [ $(wc -l < {checks} 2>/dev/null || echo 0) -lt 4 ]; do sleep 0.05; done"
    code, _, err = run_pyinit(["-v", "--sidecar", sidecar, "--", "sh", "-c", main])
    assert code == 0, err
    assert len(lines(checks)) >= 4  # the exec: probe ran, every time with success
    assert len(lines(pids)) == 1
    assert "liveness" not in err
    assert "stopping sidecar w" in err  # only at the end, by the container's stop


@needs_root
def test_a_sidecars_ready_and_alive_exec_probes_each_run_their_own_command(tmp_path: Path) -> None:
    # Each probe's command is prepared once and reused at every call: the readiness
    # probe's must not stand in for the liveness probe's, nor the other way round.
    ready, alive = tmp_path / "ready", tmp_path / "alive"
    sidecar = (
        f"w \"ready=exec:sh -c 'echo $PPID >> {ready}'\""
        f" \"alive=exec:sh -c 'echo $PPID >> {alive}'\" alive-every=0.2 -- sleep 30"
    )
    main = f"while [ $(wc -l < {alive} 2>/dev/null || echo 0) -lt 3 ]; do sleep 0.05; done"
    code, _, err = run_pyinit(["--sidecar", sidecar, "--", "sh", "-c", main])
    assert code == 0, err
    # Readiness passed at its first call; the probe runner (one child of PID 1) forked both.
    assert len(lines(ready)) == 1 and lines(ready) != ["1"]
    assert len(lines(alive)) >= 3 and set(lines(alive)) == set(lines(ready))
    assert "liveness" not in err


@needs_root
def test_an_exec_probe_that_cannot_exec_is_a_failed_check(tmp_path: Path) -> None:
    # Its exec failure is not read from the child: its exit status (127) is the failure.
    missing = tmp_path / "no-such-probe"
    sidecar = f"w alive=exec:{missing} alive-every=0.2 alive-failures=2 restart=never -- sleep 30"
    code, _, err = run_pyinit(["--sidecar", sidecar, "--", "sleep", "30"])
    assert code == 128 + signal.SIGTERM, err  # it gave up: killed by its stop-signal
    assert (
        f"pyinit: warning: sidecar w failed its liveness check 2 times in a row (exec:{missing}):"
        " stopping it (restart=never)"
    ) in err
    assert "sidecar w gave up (restart=never; last killed by SIGTERM)" in err


LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
time.sleep(0.5)
s.close()  # the port closes: the main is no longer alive, as far as its check can tell
time.sleep(float(sys.argv[2]))
sys.exit(3)
"""


@needs_root
def test_a_dead_main_with_on_unhealthy_stop_stops_the_container_143(tmp_path: Path) -> None:
    port = _free_port()
    post = tmp_path / "post"
    code, _, err = run_pyinit(
        [
            "--ready", f"tcp:{port}",
            "--alive", f"tcp:{port}", "--alive-every", "0.2", "--on-unhealthy", "stop",
            "--success-exit", "143",  # pyinit's own code: never remapped
            "--post", f"echo $PYINIT_EXIT_CODE > {post}",
            "--", TARGET_PYTHON, "-c", LISTENER, str(port), "30",
        ]
    )  # fmt: skip
    assert code == 128 + signal.SIGTERM, err
    assert post.read_text() == "143\n"  # the post hooks ran
    assert (
        f"pyinit: main failed its liveness check 3 times in a row (tcp:{port}): stopping the "
        "container (--on-unhealthy stop)"
    ) in err


@needs_root
def test_a_dead_main_with_on_unhealthy_ignore_runs_on(tmp_path: Path) -> None:
    port = _free_port()
    code, _, err = run_pyinit(
        [
            "--ready", f"tcp:{port}",
            "--alive", f"tcp:{port}", "--alive-every", "0.2", "--alive-failures", "2",
            "--", TARGET_PYTHON, "-c", LISTENER, str(port), "2",
        ]
    )  # fmt: skip
    assert code == 3, err  # the main's own end, 2 s after its check said dead
    assert (
        f"pyinit: warning: main failed its liveness check 2 times in a row (tcp:{port}): "
        "unhealthy (--on-unhealthy ignore: the container runs on)"
    ) in err


@needs_root
def test_the_mains_exec_probes_run_as_the_mains_user() -> None:
    # Both pass only as nobody: run as root, readiness would never come and the
    # liveness check would stop the container with 143.
    probe = "exec:sh -c 'test $(id -u) = 65534'"
    code, _, err = run_pyinit(
        [
            "-v", "--user", "nobody",
            "--ready", probe,
            "--alive", probe, "--alive-every", "0.2", "--on-unhealthy", "stop",
            "--", "sh", "-c", "sleep 1.5; exit 4",
        ]
    )  # fmt: skip
    assert code == 4, err
    assert "pyinit: main is ready" in err
    assert "liveness" not in err


def test_check_instants_share_a_grid_so_close_readinesses_share_a_wake_up() -> None:
    from pyinit.run.liveness import next_check

    # Ready 3 ms apart, checked every 10 s: the same instant, on a 1 s grid.
    assert next_check(100.001, 10.0) == next_check(100.004, 10.0) == 111.0
    # Every 0.2 s (a grid of 0.05 s): never before alive-every has passed.
    first = next_check(5.01, 0.2)
    assert first >= 5.21 and abs(first - 5.25) < 1e-9
    assert abs(next_check(first, 0.2) - 5.45) < 1e-9  # on the grid, alive-every apart
