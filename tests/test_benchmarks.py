"""Smoke test for the benchmark harness (benchmarks/run.py): it runs and reports.

No timing assertions: the harness is a measuring tool, and this machine's numbers
vary with load. Skipped where hyperfine is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

pytestmark = pytest.mark.skipif(shutil.which("hyperfine") is None, reason="needs hyperfine")


def test_quick_exec_section_produces_a_report(tmp_path: Path) -> None:
    """``run.py --quick --only exec`` prints a Markdown report with the gosu and pyinit rows."""
    if shutil.which("gosu") is None:
        pytest.skip("needs gosu")
    out = tmp_path / "bench.md"
    raw = tmp_path / "bench.json"
    args = ["--quick", "--only", "exec", "--no-venv", "--output", str(out), "--json", str(raw)]
    proc = subprocess.run(
        [sys.executable, str(RUN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = proc.stdout
    assert "## a. Exec-mode start-up" in report
    assert "`gosu nobody /bin/true`" in report
    assert "python3 -I -c pass" in report
    assert "## Machine" in report
    assert "kernel" in report
    assert out.read_text().startswith("# pyinit benchmarks")
    assert '"exec"' in raw.read_text()


def test_unknown_section_is_rejected() -> None:
    """A typo in --only fails fast with argparse's exit 2, before measuring anything."""
    proc = subprocess.run(
        [sys.executable, str(RUN), "--only", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown section" in proc.stderr
