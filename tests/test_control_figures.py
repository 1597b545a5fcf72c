"""``pyinitctl status``'s CPU and RSS come from psutil in a short-lived child of PID 1.

PID 1 never maps psutil (docs/operate.md, "status"; docs/design.md, "The
control server"): the figures are computed in a forked child, reaped like
any child, never left behind, never taken for a leftover; a refused fork
or a child that does not answer gives a status without them, at once or
within the bound.  pyinit runs as PID 1 of a namespace (:mod:`test_control`'s
:class:`Container`); what is checked is what a user sees: the answer,
``/proc/PID/maps``, the children of PID 1, pyinit's lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pidns import wait_for, zombies_in
from sandbox import Sandbox, base_environment, run, scratch_dir
from test_control import (
    CTL,
    WAIT,
    Container,
    all_children,
    container,
    ns_pid,
    socket_env,
    status_json,
)

#: psutil's C extension: in a process's maps once psutil is imported.
PSUTIL_SO = "_psutil_linux"
#: What status waits for the figures at most (pyinit.run.control.FIGURES_SECONDS), and spare.
FIGURES_BOUND = 2.0 + 3.0


def maps_psutil(host_pid: int) -> bool:
    """Whether psutil's extension is mapped in the process."""
    return PSUTIL_SO in Path(f"/proc/{host_pid}/maps").read_text()


def maps_json(host_pid: int) -> bool:
    """Whether json's C accelerator (a shared object in most builds) is mapped in the process."""
    return "/_json." in Path(f"/proc/{host_pid}/maps").read_text()


def only_children(c: Container, expected: set[int]) -> bool:
    """True once PID 1's children are exactly ``expected`` (no figures child, no zombie)."""
    return set(all_children(c.pid)) == expected


def test_plain_target_status_has_figures_and_pid1_never_maps_psutil(sandbox: Sandbox) -> None:
    with container(sandbox, "--", "sleep", "30") as c:
        c.wait_listening()
        main = c.main_host_pid()
        for _ in range(3):  # every status forks its own child: all are collected
            (entry,) = status_json(c)
            assert isinstance(entry["rss_bytes"], int) and entry["rss_bytes"] > 0
            assert isinstance(entry["cpu_seconds"], float)
            assert isinstance(entry["uptime"], float) and entry["uptime"] >= 0
            assert entry["pid"] == ns_pid(main)
        assert not maps_psutil(c.pid)
        assert not maps_json(c.pid)  # the JSON body is the child's work too
        wait_for(lambda: only_children(c, {main}), WAIT, "only the main left below PID 1")
        assert not zombies_in(all_children(c.pid))
        code, _, err = c.stop()
    assert code == 143
    assert "status without CPU and RSS" not in err
    assert "leftover" not in err


def test_loop_status_has_every_groups_figures_and_pid1_never_maps_psutil(
    sandbox: Sandbox,
) -> None:
    # db's group holds two processes: its RSS is the sum of both.
    with container(
        sandbox,
        "--sidecar",
        "db -- sh -c 'sleep 60 & exec sleep 61'",
        "--sidecar",
        "web -- sleep 60",
        "--",
        "sleep",
        "60",
    ) as c:
        c.wait_listening()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "healthy")
        before = set(all_children(c.pid))
        main, db, web = status_json(c)
        for entry in (main, db, web):
            assert entry["state"] == "running"
            assert isinstance(entry["rss_bytes"], int) and entry["rss_bytes"] > 0
            assert isinstance(entry["cpu_seconds"], float)
        assert db["rss_bytes"] > web["rss_bytes"]  # two sleeps vs one
        assert not maps_psutil(c.pid)
        wait_for(lambda: only_children(c, before), WAIT, "no child left by status")
        code, _, err = c.stop()
    assert code == 143
    assert "status without CPU and RSS" not in err


def test_a_figures_child_never_answering_is_killed_and_status_answers_without(
    sandbox: Sandbox,
) -> None:
    with container(sandbox, "--", "sleep", "60") as c:
        c.wait_listening()
        main = c.main_host_pid()
        stopped = None
        for _ in range(10):  # the child lives a few ms: catch it, else try again
            ctl = subprocess.Popen(
                ["nsenter", "-t", str(c.pid), "-p", "-m", "--", *CTL, "status", "--json"],
                env=socket_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            stopped = _stop_the_figures_child(c, {main}, ctl)
            out, err = ctl.communicate(timeout=WAIT)
            if stopped is not None:
                break
        if stopped is None:
            pytest.skip("the figures child was never caught running")
        assert ctl.returncode == 0, err
        (entry,) = json.loads(out)
        assert (entry["uptime"], entry["cpu_seconds"], entry["rss_bytes"]) == (None, None, None)
        assert entry["state"] == "running" and entry["pid"] == ns_pid(main)
        # Killed (SIGKILL reaches a stopped process) and reaped: nothing left.
        wait_for(lambda: only_children(c, {main}), WAIT, "the stopped child gone")
        assert not maps_psutil(c.pid)
        (entry,) = status_json(c)  # the next status has its figures again
        assert isinstance(entry["rss_bytes"], int)
        code, _, err = c.stop()
    assert code == 143
    assert err.count("pyinit: status without CPU and RSS: no answer within 2s") == 1, err


def _stop_the_figures_child(
    c: Container, known: set[int], ctl: subprocess.Popen[str]
) -> int | None:
    """SIGSTOP the first child of PID 1 that is not in ``known``, while ``ctl`` runs."""
    deadline = time.monotonic() + WAIT
    while ctl.poll() is None and time.monotonic() < deadline:
        for pid in all_children(c.pid):
            if pid not in known:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    return pid
    return None


def test_a_refused_fork_gives_a_status_without_figures(tmp_path: Path, pids_cgroup: Path) -> None:
    from test_fork_refused import _start, _wait

    errors = tmp_path / "stderr"
    group = pids_cgroup
    with scratch_dir("pyinit-ctl-", 0o700) as tmp:
        path = str(tmp / "control.sock")
        done = tmp / "done"
        wait = f"while [ ! -e {done} ]; do sleep 0.05; done; exit 3"
        proc = _start(group, errors, "--control", path, "--", "sh", "-c", wait)
        try:
            wait_for(lambda: os.path.exists(path), WAIT, "the control socket")
            ctl = [*CTL, "--control", path, "status", "--json"]
            # One pid to spare: the client's thread, and no fork for the figures.
            current = int((group / "pids.current").read_text())
            (group / "pids.max").write_text(str(current + 1))
            refused = run(ctl, env=base_environment(), timeout=FIGURES_BOUND + WAIT)
            assert refused.returncode == 0, refused
            (entry,) = json.loads(refused.stdout)
            assert (entry["cpu_seconds"], entry["rss_bytes"]) == (None, None)
            assert entry["state"] == "running"
            (group / "pids.max").write_text("max")
            again = run(ctl, env=base_environment())
            (entry,) = json.loads(again.stdout)
            assert isinstance(entry["rss_bytes"], int) and entry["rss_bytes"] > 0
            done.touch()
            code = _wait(proc, errors)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    err = errors.read_text()
    assert code == 3, err
    line = "pyinit: status without CPU and RSS: fork failed: Resource temporarily unavailable"
    assert err.count(line) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err


@pytest.mark.parametrize("items", [(), ("--sidecar", "side -- sleep 60")], ids=["plain", "loop"])
def test_a_status_during_the_leftovers_turn_is_no_leftover(
    sandbox: Sandbox, items: tuple[str, ...]
) -> None:
    # The main exits on SIGTERM and leaves an orphan that ignores it: the
    # leftovers' turn lasts until SIGKILL at the deadline; a status then
    # forks its figures child, which must not be reported or signalled as one.
    script = "(trap '' TERM; exec sleep 30) & trap 'exit 0' TERM; while :; do sleep 0.05; done"
    args = ("--verbose", "--stop-timeout", "4", *items, "--", "sh", "-c", script)
    with container(sandbox, *args) as c:
        c.wait_listening()
        wait_for(lambda: c.ctl("health").returncode == 0, WAIT, "healthy")
        os.kill(c.pid, signal.SIGTERM)
        wait_for(lambda: c.ctl("health").returncode == 1, WAIT, "the stop")
        time.sleep(0.3)  # the main (and the sidecar) gone, the orphan is the one leftover
        for _ in range(3):
            status = c.ctl("status", "--json")
            assert status.returncode == 0, status
            assert json.loads(status.stdout)[0]["state"] == "stopped"
        code, _, err = c.wait()
    assert code == 0, err
    assert "stopping 1 leftover process(es) with SIGTERM" in err, err
    assert err.count("leftover process(es)") == 2, err  # that one line, and its SIGKILL
    assert "status without CPU and RSS" not in err
