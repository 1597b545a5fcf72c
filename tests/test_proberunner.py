"""The probe runner (docs/design.md, "The probe runner"): PID 1's helper child that forks
the ``exec:`` probes.  Its protocol in-process; the rest from outside, pyinit PID 1 of a
namespace."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import sandbox
from pidns import Namespace, wait_for, zombies_in
from plan_helpers import plan_for
from sandbox import children, scratch_dir
from test_services import lines

from pyinit.run.proberunner import parse_answer, parse_request, probe_table, split_lines

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")


# --- in-process: the table and the line protocol --------------------------------------


def test_the_table_has_every_exec_probe_once_ready_and_alive_items_and_main() -> None:
    plan = plan_for(
        [
            "--sidecar", "a ready=exec:true alive=exec:true -- sleep 1",  # one command: one entry
            "--sidecar", "b ready=tcp:80 alive=exec:check -- sleep 1",
            "--sidecar", "c alive=file:/x -- sleep 1",
            "--ready", "exec:probe one", "--alive", "exec:probe two",
            "--", "sleep", "1",
        ]
    )  # fmt: skip
    keys = [key for key, _launch in probe_table(plan)]
    assert keys == [
        ("a", ("true",)),
        ("b", ("check",)),
        ("", ("probe", "one")),
        ("", ("probe", "two")),
    ]
    launches = [launch for _key, launch in probe_table(plan)]
    assert launches[0].command == ("true",)
    assert launches[3].command == ("probe", "two") and launches[3].keep_fds == ()


def test_no_exec_probe_no_table() -> None:
    assert probe_table(plan_for(["--sidecar", "a ready=tcp:80 -- x", "--", "y"])) == []
    assert probe_table(plan_for(["--", "sleep", "1"])) == []


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"1 0 1", (1, 0, 1.0)),
        (b"17 3 0.5", (17, 3, 0.5)),
        (b"1 0", None),
        (b"1 0 1 2", None),
        (b"x 0 1", None),
        (b"1 -1 1", None),
        (b"1 0 nan", None),
        (b"1 0 0", None),
        (b"1 0 inf", None),
        (b"", None),
    ],
)
def test_a_request_is_three_numbers_anything_else_is_ignored(
    line: bytes, parsed: tuple[int, int, float] | None
) -> None:
    assert parse_request(line) == parsed


def test_an_answer_is_seq_and_code_with_an_optional_message() -> None:
    assert parse_answer(b"4 0") == (4, 0, "")
    assert parse_answer(b"4 -1") == (4, -1, "")
    assert parse_answer(b"5 125 probe not run: fork failed: Resource temporarily unavailable") == (
        5,
        125,
        "probe not run: fork failed: Resource temporarily unavailable",
    )
    assert parse_answer(b"5") is None
    assert parse_answer(b"five 0") is None


def test_lines_are_split_and_an_overlong_one_is_dropped() -> None:
    assert split_lines(b"1 0 1\n2 0 1\n3 0") == ([b"1 0 1", b"2 0 1"], b"3 0")
    assert split_lines(b"x" * 300) == ([], b"")
    assert split_lines(b"x" * 300 + b"\n1 0 1\n") == ([b"1 0 1"], b"")


# --- from outside -----------------------------------------------------------------------


def runner_of(init_pid: int) -> int:
    """The host pid of the probe runner: PID 1's child running pyinit's own command line."""
    found: list[int] = []

    def look() -> bool:
        own = _read(f"/proc/{init_pid}/cmdline")
        if own.startswith(b"/bin/sh\0"):
            return False  # still the shell before it (UNSHARE_PID): its fork of mount looks alike
        found[:] = [
            kid
            for kid in children(init_pid)
            if _read(f"/proc/{kid}/cmdline") == own and kid not in zombies_in([kid])
        ]
        return len(found) == 1

    wait_for(look, what="the probe runner")
    return found[0]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def ns_pid(host_pid: int) -> int:
    """The pid of ``host_pid`` inside its (innermost) PID namespace."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


PROBE = "sh -c 'read a b c d group e < /proc/$$/stat; echo $(id -u) $PPID $$ $group >> {}'"


@needs_root
def test_exec_probes_are_children_of_the_runner_as_the_items_user_in_their_own_group() -> None:
    with scratch_dir("pyinit-runner-", 0o777) as tmp:
        side, main = tmp / "side", tmp / "main"
        sidecar = f'w user=nobody "ready=exec:{PROBE.format(side)}" -- sleep 30'
        with Namespace(
            [
                "--sidecar", sidecar,
                "--user", "daemon", "--ready", f"exec:{PROBE.format(main)}",
                "--alive", f"exec:{PROBE.format(main)}", "--alive-every", "0.2",
                "--", "sh", "-c", "while :; do sleep 0.05; done",
            ]
        ) as ns:  # fmt: skip
            runner = runner_of(ns.init_pid)
            runner_in_ns = str(ns_pid(runner))
            wait_for(lambda: len(lines(main)) >= 3, what="the main's probes")
            ns.signal(signal.SIGTERM)
            code, _, err = ns.wait()
        assert code == 128 + signal.SIGTERM, err
        for path, uid in ((side, "65534"), (main, "1")):  # nobody; daemon (the fixture's)
            assert lines(path), path
            for line in lines(path):
                probe_uid, ppid, pid, pgid = line.split()
                assert probe_uid == uid, (path, line)
                assert ppid == runner_in_ns, line  # forked by the runner, not by PID 1
                assert pgid == pid, line  # in its own group
        assert "leftover" not in err


@needs_root
def test_a_hung_probe_is_killed_at_its_bound_while_another_sidecars_probe_answers(
    tmp_path: Path,
) -> None:
    hung, quick = tmp_path / "hung", tmp_path / "quick"
    stuck = f"exec:sh -c 'echo $$ >> {hung}; exec sleep 30'"
    fine = f"exec:sh -c 'echo ok >> {quick}'"
    with Namespace(
        [
            "--sidecar", f'a "alive={stuck}" alive-every=0.2 alive-failures=1000 -- sleep 30',
            "--sidecar", f'b "alive={fine}" alive-every=0.2 -- sleep 30',
            "--", "sleep", "30",
        ]
    ) as ns:  # fmt: skip
        runner = runner_of(ns.init_pid)
        wait_for(lambda: lines(hung), what="the hung probe")
        in_ns = int(lines(hung)[0])  # its pid in the namespace ($$, kept by exec sleep)
        stuck = [kid for kid in children(runner) if ns_pid(kid) == in_ns]
        assert len(stuck) == 1  # the runner's child (b's probe may be running beside it)
        before = len(lines(quick))
        wait_for(lambda: len(lines(quick)) > before, what="b's probe meanwhile")
        # b's check answered while a's probe hung: it is still running, the runner's child.
        assert stuck[0] in children(runner)
        # Killed at its bound and reaped by the runner: gone, no zombie.
        wait_for(lambda: not Path(f"/proc/{stuck[0]}").exists(), what="the hung probe's end")
        wait_for(lambda: len(lines(hung)) >= 2, what="the next call of the hung probe")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    assert "sidecar b failed" not in err


@needs_root
def test_a_killed_runner_leaves_no_zombie_checks_go_on_and_the_stop_is_clean(
    tmp_path: Path,
) -> None:
    checks, done = tmp_path / "checks", tmp_path / "done"
    probe = f"exec:sh -c 'echo $PPID >> {checks}'"
    main = f"while [ ! -e {done} ]; do sleep 0.05; done; exit 7"
    with Namespace(
        [
            "--sidecar", f'w "alive={probe}" alive-every=0.2 alive-failures=1 -- sleep 30',
            "--", "sh", "-c", main,
        ]
    ) as ns:  # fmt: skip
        runner = runner_of(ns.init_pid)
        runner_in_ns = str(ns_pid(runner))
        wait_for(lambda: runner_in_ns in lines(checks), what="a check through the runner")
        os.kill(runner, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{runner}").exists(), what="the runner reaped")
        wait_for(lambda: lines(checks)[-3:] == ["1"] * 3, what="checks forked by PID 1")
        done.touch()
        code, _, err = ns.wait()
    assert code == 7, err
    assert err.count(f"pyinit: probe runner pid {runner_in_ns}: ") == 1, err
    assert f"probe runner pid {runner_in_ns}: it is gone; exec: probes forked by pyinit" in err
    assert "liveness" not in err  # no check failed on the way
    assert "leftover" not in err


@needs_root
def test_a_silent_runner_is_killed_and_the_checks_go_on_without_it(tmp_path: Path) -> None:
    checks, done = tmp_path / "checks", tmp_path / "done"
    probe = f"exec:sh -c 'echo $PPID >> {checks}'"
    main = f"while [ ! -e {done} ]; do sleep 0.05; done; exit 5"
    with Namespace(
        [
            "--sidecar", f'w "alive={probe}" alive-every=0.2 alive-failures=20 -- sleep 30',
            "--", "sh", "-c", main,
        ]
    ) as ns:  # fmt: skip
        runner = runner_of(ns.init_pid)
        runner_in_ns = str(ns_pid(runner))
        wait_for(lambda: runner_in_ns in lines(checks), what="a check through the runner")
        os.kill(runner, signal.SIGSTOP)  # alive, but it answers nothing any more
        wait_for(lambda: lines(checks)[-3:] == ["1"] * 3, what="checks forked by PID 1")
        wait_for(lambda: not Path(f"/proc/{runner}").exists(), what="the silent runner killed")
        done.touch()
        code, _, err = ns.wait()
    assert code == 5, err
    assert (
        f"probe runner pid {runner_in_ns}: it stopped answering; exec: probes forked by pyinit"
    ) in err
    assert "liveness" not in err  # one failed call at most, of 20 allowed


@needs_root
def test_at_the_stop_the_runner_ends_by_eof_and_is_no_leftover(tmp_path: Path) -> None:
    probe = "exec:true"
    for pid1 in (True, False):
        with Namespace(
            [
                "-v", "--sidecar", f'w "alive={probe}" alive-every=0.2 -- sleep 30',
                "--", "sh", "-c", "sleep 0.5; exit 3",
            ],
            pid1=pid1,
        ) as ns:  # fmt: skip
            runner = runner_of(ns.init_pid)
            runner_in_ns = ns_pid(runner)
            code, _, err = ns.wait()
        assert code == 3, err
        assert f"reaped {runner_in_ns} (exit 0)" in err  # it ended before pyinit, by EOF
        assert "leftover" not in err
        assert not Path(f"/proc/{runner}").exists()


@needs_root
@pytest.mark.parametrize("sidecar", [None, "w ready=file:/ alive=tcp:1 -- sleep 30"])
def test_no_exec_probe_no_runner(sidecar: str | None) -> None:
    argv = ["--sidecar", sidecar] if sidecar else []
    sleeps = [b"sleep\x0030\x00"] * (2 if sidecar else 1)
    with Namespace([*argv, "--", "sleep", "30"]) as ns:
        # Every child of PID 1 exec'd its command: nothing else (no runner) among them.
        wait_for(
            lambda: [_read(f"/proc/{kid}/cmdline") for kid in all_children(ns.init_pid)] == sleeps,
            what="the main and the sidecar alone",
        )
        ns.signal(signal.SIGTERM)
        ns.wait()


def all_children(pid: int) -> list[int]:
    """The children of every thread of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(kid) for kid in _read(f"{task}/children").split())
    return found


@needs_root
def test_exec_probes_start_where_pyinit_was_started_as_items_do(tmp_path: Path) -> None:
    # The runner leaves the start directory (the image's WORKDIR) as PID 1 does,
    # and its probes go back to it, as a sidecar's restart does.
    workdir = tmp_path / "app"
    workdir.mkdir()
    log = tmp_path / "cwd.log"
    probe = f"exec:sh -c 'pwd >> {log}'"
    two_checks = f'until [ "$(cat {log} 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.02; done'
    code, _, err = sandbox.run_pyinit(
        "--sidecar", f'w "alive={probe}" alive-every=0.1 -- sleep 30',
        "--", "sh", "-c", two_checks,
        pid1=True,
        cwd=str(workdir),
    )  # fmt: skip
    assert code == 0, err
    assert set(lines(log)) == {str(workdir)}
