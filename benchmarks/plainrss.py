"""Issue 16: PID 1's memory with a plain target, against a sleeping Python on the same interpreter.

For each interpreter with a pyinit entry, interleaved: ``python3 -c 'import time;
time.sleep(60)'`` and ``pyinit --mode supervise -- sleep 60`` (a plain target: no
sidecars, tasks, --ready or NOTIFY_SOCKET, so no trio), each as PID 1 of its own
namespace; after a settle, VmRSS and RssAnon of PID 1 from /proc/PID/status.
Goal: pyinit <= 1.35x the sleeping Python.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from measure import SessionError, ns_session
from setup_env import Environment

Row = dict[str, Any]
SLEEP = "import time; time.sleep(60)"
GOAL = 1.35


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon (kB) of pid."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            found[key] = int(value.split()[0])
    return found


def _one(argv: list[str], settle: float) -> dict[str, int]:
    with ns_session(argv) as (_proc, pid):
        time.sleep(settle)
        return _memory(pid)


def measure_plainrss(env: Environment, quick: bool) -> Row:
    """Median VmRSS/RssAnon (kB) per interpreter: sleeping Python and pyinit with a plain target."""
    reps, settle = (3, 0.5) if quick else (9, 1.0)
    rows: list[Row] = []
    for interp in env.interpreters:
        if interp.pyinit is None:
            rows.append({"interpreter": interp.label, "error": interp.note or "no pyinit"})
            continue
        cmds = {
            "python": [interp.python, "-c", SLEEP],
            "pyinit": [interp.pyinit, "--mode", "supervise", "--", "sleep", "60"],
        }
        seen: dict[str, list[dict[str, int]]] = {k: [] for k in cmds}
        try:
            for _ in range(reps):
                for name, argv in cmds.items():
                    seen[name].append(_one(argv, settle))
        except (SessionError, OSError) as e:
            rows.append({"interpreter": interp.label, "error": str(e)})
            continue
        row: Row = {"interpreter": interp.label, "n": reps}
        for name, samples in seen.items():
            for key in ("VmRSS", "RssAnon"):
                row[f"{name}_{key}"] = statistics.median(s.get(key, 0) for s in samples)
        rows.append(row)
    return {"rows": rows}


def render_plainrss(res: Row) -> str:
    """The section: per interpreter, both medians (MiB) and the ratio against the goal."""
    lines = [
        "## g7. PID 1 memory, plain target (issue 16)",
        "",
        "Each as PID 1 of its own namespace, interleaved; medians of VmRSS and RssAnon (MiB) "
        f"after a settle. Goal: pyinit <= {GOAL}x `python3 -c '{SLEEP}'` on the same interpreter.",
        "",
        "| interpreter | python sleep VmRSS | pyinit VmRSS | ratio | python sleep RssAnon "
        "| pyinit RssAnon | verdict | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("rows", []):
        if "error" in r:
            lines.append(f"| {r['interpreter']} | {r['error']} |  |  |  |  |  |  |")
            continue
        ratio = r["pyinit_VmRSS"] / r["python_VmRSS"]
        verdict = "met" if ratio <= GOAL else "**not met**"
        mib = [f"{r[k] / 1024:.1f}" for k in ("python_VmRSS", "pyinit_VmRSS")]
        anon = [f"{r[k] / 1024:.1f}" for k in ("python_RssAnon", "pyinit_RssAnon")]
        lines.append(
            f"| {r['interpreter']} | {mib[0]} | {mib[1]} | {ratio:.2f}x | {anon[0]} | {anon[1]} "
            f"| {verdict} | {r['n']} |"
        )
    return "\n".join(lines)
