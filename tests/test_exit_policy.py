"""``--success-exit``: which of the main's exit codes pyinit reports as 0 (tini's ``-e``).

In-process planning tests, then pyinit as PID 1 of a namespace: a JVM-like
main that exits 143 on SIGTERM, a main killed by SIGTERM, codes not listed,
a sidecar's give-up and a stop before the main (pyinit's own codes, never
remapped), the post hooks' ``PYINIT_EXIT_CODE`` (the real code), exec mode.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pidns import Namespace, run_pyinit, wait_for
from plan_helpers import plan_for

from pyinit.errors import UsageError
from pyinit.plan.render import render_plan

# --- the plan ---------------------------------------------------------------------------


def error_of(argv: list[str]) -> str:
    """The one-line message planning ``argv`` is refused with."""
    with pytest.raises(UsageError) as info:
        plan_for(argv)
    return info.value.message


def test_codes_and_signal_names_are_one_sorted_set() -> None:
    plan = plan_for(
        ["--success-exit", "143", "--success-exit", "SIGTERM", "--success-exit", "1", "--", "java"]
    )
    assert plan.success_exits == (1, 143)
    assert plan.mode == "supervise"  # a supervise-only option: auto supervises
    assert "--success-exit needs supervise" in plan.mode_reason


def test_only_the_listed_codes_become_0() -> None:
    plan = plan_for(["--success-exit", "TERM", "--success-exit", "0", "--", "java"])
    assert [plan.exit_code_for_main(c) for c in (0, 1, 143, 137, 255)] == [0, 1, 0, 137, 255]


def test_without_the_flag_every_code_is_the_main_s() -> None:
    plan = plan_for(["--mode", "supervise", "--", "java"])
    assert plan.success_exits == ()
    assert plan.exit_code_for_main(143) == 143


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("125", "125 is pyinit's own status"),
        ("126", "126 is pyinit's own status"),
        ("127", "127 is pyinit's own status"),
        ("256", "an exit code is 0-255"),
        ("-1", "expected an exit code 0-255 or a signal name"),
        ("FOO", "expected an exit code 0-255 or a signal name"),
        ("\u00b2", "expected an exit code 0-255 or a signal name"),
        ("", "expected an exit code 0-255 or a signal name"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(value: str, why: str) -> None:
    message = error_of(["--success-exit", value, "--", "java"])
    assert message.startswith(f"--success-exit {value!r}: ")
    assert why in message


def test_exec_mode_cannot_carry_it_out() -> None:
    message = error_of(["--mode", "exec", "--success-exit", "143", "--", "java"])
    assert message.startswith("--success-exit needs --mode supervise, not --mode exec")


def test_the_config_file_key(tmp_path: Path) -> None:
    path = tmp_path / "pyinit.toml"
    path.write_text('success-exit = [143, "HUP"]\n')
    plan = plan_for(["--config", str(path), "--success-exit", "3", "--", "java"])
    assert plan.success_exits == (3, 129, 143)


def test_a_bad_config_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "pyinit.toml"
    path.write_text("success-exit = [127]\n")
    message = error_of(["--config", str(path), "--", "java"])
    assert message.startswith(f"{path}: key 'success-exit': --success-exit '127': 127 is")


def test_dry_run_shows_it() -> None:
    plan = plan_for(["--success-exit", "143", "--success-exit", "3", "--", "java"])
    text = render_plan(plan, {}, as_json=False)
    line = "  success: the main's exit 3 or 143 (128+SIGTERM) -> pyinit exits 0 (--success-exit)"
    assert line in text.splitlines()
    assert '"success_exits": [\n    3,\n    143\n  ]' in render_plan(plan, {}, as_json=True)


# --- as PID 1 ---------------------------------------------------------------------------


def stop_after_start(
    tmp_path: Path, args: list[str], script: str, marker: str = "started"
) -> tuple[int, str]:
    """Run pyinit as PID 1 with main ``sh -c SCRIPT`` (which touches $STARTED), SIGTERM it."""
    started = tmp_path / marker
    argv = [*args, "--", "sh", "-c", script.replace("$STARTED", str(started))]
    with Namespace(argv) as ns:
        wait_for(started.exists, what="the main to start")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    return code, err


def test_a_jvm_like_main_exiting_143_on_sigterm_exits_0(tmp_path: Path) -> None:
    script = "trap 'exit 143' TERM; touch $STARTED; while :; do sleep 0.01; done"
    assert stop_after_start(tmp_path, ["--success-exit", "143"], script)[0] == 0
    # Without the flag, the same main's 143 is pyinit's.
    assert stop_after_start(tmp_path, [], script, "again")[0] == 143


def test_a_main_killed_by_sigterm_exits_0_when_listed(tmp_path: Path) -> None:
    code, err = stop_after_start(
        tmp_path, ["--success-exit", "143"], "touch $STARTED; exec sleep 60"
    )
    assert code == 0, err


def test_a_main_killed_by_sigterm_keeps_128_plus_n_when_another_code_is_listed(
    tmp_path: Path,
) -> None:
    code, err = stop_after_start(tmp_path, ["--success-exit", "1"], "touch $STARTED; exec sleep 60")
    assert code == 143, err


@pytest.mark.parametrize(("listed", "exit", "expected"), [("3", 3, 0), ("3", 4, 4), ("TERM", 1, 1)])
def test_a_plain_main_s_own_exit(listed: str, exit: int, expected: int) -> None:
    # No items or hooks: the intake ends pyinit itself, without the loop.
    code, _, err = run_pyinit(["--success-exit", listed, "--", "sh", "-c", f"exit {exit}"])
    assert code == expected, err


def test_a_main_beside_a_sidecar(tmp_path: Path) -> None:
    # The event loop's path: it stops the sidecar, then exits with the mapped code.
    args = ["--success-exit", "3", "--sidecar", "side -- sleep 60", "--", "sh", "-c", "exit 3"]
    code, _, err = run_pyinit(args)
    assert code == 0, err


def test_post_hooks_see_the_real_code(tmp_path: Path) -> None:
    out = tmp_path / "hook"
    args = ["--success-exit", "5", "--post", f"echo $PYINIT_EXIT_CODE > {out}"]
    code, _, err = run_pyinit([*args, "--", "sh", "-c", "exit 5"])
    assert code == 0, err
    assert out.read_text() == "5\n"


def test_a_sidecar_s_give_up_is_not_remapped() -> None:
    # The sidecar gives up with 7 (on-giveup=stop): pyinit exits 7 although 7
    # is listed, and although the main, stopped with SIGTERM, ends with a listed 143.
    args = ["--success-exit", "7", "--success-exit", "143"]
    side = "crash restart=never on-giveup=stop -- sh -c 'sleep 0.2; exit 7'"
    code, _, err = run_pyinit([*args, "--sidecar", side, "--", "sleep", "60"])
    assert code == 7, err
    assert "sidecar crash gave up" in err


def test_a_stop_before_the_main_started_is_not_remapped(tmp_path: Path) -> None:
    # 143 here is pyinit's own report (stopped during a task), not the main's status.
    started = tmp_path / "started"
    task = f"slow -- sh -c 'touch {started}; exec sleep 60'"
    with Namespace(["--success-exit", "TERM", "--task", task, "--", "true"]) as ns:
        wait_for(started.exists, what="the task to start")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 143, err


def test_exec_mode_is_refused_as_pid1() -> None:
    code, _, err = run_pyinit(["--mode", "exec", "--success-exit", "143", "--", "true"])
    assert code == 125
    assert err == (
        "pyinit: --success-exit needs --mode supervise, not --mode exec: "
        "in exec mode pyinit is replaced by the target\n"
    )
