"""PID 1 duties and identity edge cases, run with podman from the redis image, CMD replaced.

``container("redis", cmd=[...])`` is ``podman run redis-pyinit CMD...``: the
ENTRYPOINT (``pyinit --user redis --chown /data --``) stays, the command changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ContainerFactory
from .helpers import Proc, processes, zombies
from .podman import wait_for

# Generous: the first test of a session also waits for the images to be built.
pytestmark = pytest.mark.timeout(600)

# Leaves orphans behind: short sleepers (backgrounded subshells, a double fork)
# that exit while the target still runs, and one long sleeper still alive when
# the target exits 7.  Waits for the test's go-ahead (/data/release) in between.
ORPHAN_SCRIPT = """
for i in 1 2 3; do (sleep 2 &); done
(sh -c 'sleep 2 & sleep 2 &')
(sleep 600 &)
touch /data/started
i=0
while [ ! -e /data/release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
exit 7
"""


def sleepers(procs: list[Proc], seconds: str) -> list[Proc]:
    """Live (not zombie) ``sleep SECONDS`` processes."""
    return [p for p in procs if p.args == f"sleep {seconds}" and not p.stat.startswith("Z")]


@pytest.mark.e2e
def test_orphans_are_reaped_and_exit_code_passes_through(
    container: ContainerFactory, data_dir: Path
) -> None:
    """Orphans are re-parented to pyinit and reaped; the target's exit code 7 comes out."""
    ctr = container("redis", cmd=["/bin/sh", "-c", ORPHAN_SCRIPT])
    wait_for((data_dir / "started").exists, 30, "the script to start its orphans", details=ctr.logs)

    early = processes(ctr)
    orphans = sleepers(early, "2")
    assert orphans and all(p.ppid == 1 for p in orphans), early
    assert all(p.user == "redis" for p in orphans), early
    assert [p.ppid for p in sleepers(early, "600")] == [1], early

    wait_for(lambda: not sleepers(processes(ctr), "2"), 15, "the short orphans to exit")
    wait_for(lambda: not zombies(processes(ctr)), 3, "pyinit to reap the orphans")
    assert not zombies(processes(ctr))

    started = time.monotonic()
    (data_dir / "release").touch()
    assert ctr.wait(30) == 7, ctr.logs()
    # The leftover `sleep 600` dies of pyinit's SIGTERM, well before the stop timeout.
    assert time.monotonic() - started < 8, ctr.logs()


@pytest.mark.e2e
def test_non_root_container_skips_root_setup(container: ContainerFactory, data_dir: Path) -> None:
    """podman run --user 1000:1000 (k8s runAsUser): notice, no chown, command runs."""
    ctr = container("redis", cmd=["/bin/sh", "-c", "id -u; id -g; echo ran"], user="1000:1000")
    assert ctr.wait(30) == 0, ctr.logs()
    assert ctr.stdout.split() == ["1000", "1000", "ran"], ctr.logs()
    notices = [line for line in ctr.stderr.splitlines() if line.startswith("pyinit: ")]
    assert len(notices) == 1, f"expected one pyinit notice about skipping setup\n{ctr.logs()}"
    assert "skipping root setup" in notices[0], ctr.logs()
    assert data_dir.stat().st_uid == 0, "root setup must be skipped when not root"


@pytest.mark.e2e
def test_runs_as_the_target_user_already(
    container: ContainerFactory, data_dir: Path, image_ids: Callable[[str, str], tuple[int, int]]
) -> None:
    """podman run --user redis's uid (k8s runAsUser): pyinit carries on."""
    uid, gid = image_ids("redis", "redis")
    ctr = container("redis", cmd=["/bin/sh", "-c", "id -u; id -g"], user=f"{uid}:{gid}")
    assert ctr.wait(30) == 0, ctr.logs()
    assert ctr.stdout.split() == [str(uid), str(gid)], ctr.logs()


@pytest.mark.e2e
def test_missing_cap_setuid_fails_with_125(container: ContainerFactory, data_dir: Path) -> None:
    """podman run --cap-drop SETUID: one error line naming it, exit 125."""
    ctr = container("redis", cmd=["/bin/true"], cap_drop=("SETUID",))
    assert ctr.wait(30) == 125, ctr.logs()
    errors = [line for line in ctr.stderr.splitlines() if "CAP_SETUID" in line]
    assert len(errors) == 1 and errors[0].startswith("pyinit: "), ctr.logs()
    assert data_dir.stat().st_uid == 0, "nothing may be changed before the check"


@pytest.mark.e2e
def test_exec_failures_give_126_and_127(container: ContainerFactory) -> None:
    """Command not found: 127; found but not executable: 126 (podman inspect's ExitCode)."""
    missing = container("redis", cmd=["no-such-command"])
    assert missing.wait(30) == 127, missing.logs()
    not_exec = container("redis", cmd=["/etc/passwd"])
    assert not_exec.wait(30) == 126, not_exec.logs()
