"""The issue-17 goal section of benchmarks/run.py (benchmarks/operate.py) runs and reports.

One quick run of `--only operate` (about 30 s); the report carries the g8 section and,
when pyinit has a control socket, the goals table with a row per goal, every measure
either a number or "not available" with the reason. No timing assertions. Skipped where
gcc or unshare are missing, or when not root (pid namespaces).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for pid namespaces"),
]


@pytest.mark.timeout(150)
def test_operate_section_reports_every_goal(tmp_path: Path) -> None:
    """g8's three tables and the issue-17 goals, or one line saying why not."""
    raw = tmp_path / "operate.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--no-venv", "--only", "operate", "--json", str(raw)],
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report, res = proc.stdout, json.loads(raw.read_text())["results"]["operate"]
    assert "## g8. Operating a running container (issue 17)" in report
    assert "error" not in res, res["error"]
    for title in ("### Requests", "### PID 1 idle wake-ups", "### PID 1 CPU with liveness"):
        assert title in report
    assert "## Issue 17 goals" in report
    goals = report[report.index("## Issue 17 goals") :].split("\n\n")[1].splitlines()[2:]
    assert len(goals) >= 8, goals
    times = res["requests"]["times"]
    assert times["pyinitctl status"]["n"] >= 1 and times["pyinitctl health"]["n"] >= 1
    checks = res["requests"]["checks"]
    assert checks["pyinitctl status"].startswith("exit 0"), checks
    assert checks["pyinitctl health"] == "exit 0, 1 line(s), first `healthy`", checks
    idle = res["idle"]["configs"]
    assert idle["plain target, socket"]["answers"] == [0, 0], idle
    assert idle["10 sidecars, socket"]["answers"] == [0, 0], idle
    live = res["liveness"]
    assert "error" in live or "cost_ms_per_s" in live["configs"]["alive=file:/proc/1/status"]
