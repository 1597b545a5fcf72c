"""benchmarks/relay_memory.py runs and reports (its quick mode: about 20 s). No memory assertions.

The numbers themselves go to docs/benchmarks.md ("Relay memory"); this only checks that both
measures produce their rows, and that the soak's reader saw every line intact.
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
SCRIPT = ROOT / "benchmarks" / "relay_memory.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for pid namespaces"),
]


@pytest.mark.timeout(120)
def test_quick_mode_reports_every_flood_and_the_soak(tmp_path: Path) -> None:
    raw = tmp_path / "relay.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "quick", "--json", str(raw)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for row in ("| idle (one line) |", "| empty lines, 32-char name |", "| 1 MiB lines |"):
        assert row in proc.stdout
    assert "| no newline |" in proc.stdout
    assert "| CR-heavy (99 CRs a line) |" in proc.stdout
    assert "| RssAnon |" in proc.stdout
    result = json.loads(raw.read_text())
    assert all("VmHWM" in row for row in result["flood"].values())
    soak = result["soak"]
    assert soak["lines"] > 0
    assert soak["bad_lines"] == 0, soak["bad_sample"]
    assert len(soak["samples"]) >= 2
