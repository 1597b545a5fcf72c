"""``has_children``: whether the leftovers' scan can find anything at all (docs/design.md).

In a forked process of its own, so that the test runner's other children
cannot answer for it.
"""

from __future__ import annotations

import os
import time

from pyinit.run.descendants import descendants, has_children


def _in_fresh_process(check: str) -> int:
    """Run ``check`` (the name of a function below) in a child with no children; its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = CHECKS[check]()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _zombie_counts_and_is_not_reaped() -> int:
    if has_children():
        return 1  # a fresh process has no child
    child = os.fork()
    if child == 0:
        os._exit(7)
    deadline = time.monotonic() + 10
    while os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.001)
    if not has_children():
        return 3  # a zombie is still a child
    if descendants() != [child]:
        return 4
    pid, status = os.waitpid(child, 0)  # still ours to reap: has_children reaped nothing
    if (pid, os.waitstatus_to_exitcode(status)) != (child, 7):
        return 5
    return 0 if not has_children() else 6


def _running_child_counts() -> int:
    child = os.fork()
    if child == 0:
        time.sleep(5)
        os._exit(0)
    try:
        return 0 if has_children() else 1
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


CHECKS = {
    "zombie": _zombie_counts_and_is_not_reaped,
    "running": _running_child_counts,
}


def test_a_zombie_is_a_child_and_stays_to_be_reaped() -> None:
    assert _in_fresh_process("zombie") == 0


def test_a_running_child_is_a_child() -> None:
    assert _in_fresh_process("running") == 0
