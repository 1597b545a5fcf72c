"""Issue-18 goal section: the standalone bundle against the pip install, side by side.

Section ``standalone`` of benchmarks/run.py.  The bundle is built with
packaging/standalone.sh into ``~/.cache/pyinit-bench-standalone`` (a rebuild
takes seconds once its venv is there; the script apt-gets its build tools if
they are missing); ``PYINIT_BUNDLE=FOLDER`` measures a folder built already.
The pip install is the harness's Debian-Python venv when there is one (not with
--no-venv), else the harness's own interpreter.

- start-up: ``pyinit --mode exec --user nobody -- /bin/true``, whole run, interleaved;
- the signal window: from just before the fork to the instant SIGTERM shows as
  blocked in ``/proc/PID/status`` (``SigBlk``, read in a tight loop by this
  process): the time in which a signal to a starting pyinit is not yet held
  back, i.e. what runs before pyinit's first statement (the launcher and
  Python's start-up for the bundle; Python's start-up for the pip install);
- PID 1 RSS while supervising ``sleep`` in a new pid namespace, after 1 s;
- the bundle's size (sum of its files' sizes).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from setup_env import DEBIAN_PYTHON, REPO_ROOT, Environment, ns_prefix
from summary import fmt, stats

Row = dict[str, Any]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyinit-bench-standalone"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def bundle_entry(log: list[str]) -> tuple[str | None, str]:
    """(path of the bundle's pyinit, why not): PYINIT_BUNDLE, else built into CACHE."""
    given = os.environ.get("PYINIT_BUNDLE")
    folder = Path(given) if given else CACHE / "pyinit"
    if not given:
        log.append(f"building the bundle with packaging/standalone.sh {CACHE}")
        try:
            proc = subprocess.run(
                ["bash", str(REPO_ROOT / "packaging" / "standalone.sh"), str(CACHE)],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as e:
            return None, f"packaging/standalone.sh failed: {type(e).__name__}"
        if proc.returncode != 0:
            return None, f"packaging/standalone.sh exited {proc.returncode}"
        log.append(proc.stdout.strip().splitlines()[-1])
    entry = folder / "pyinit"
    return (str(entry), "") if entry.is_file() else (None, f"no {entry}")


def blocked_sigterm(pid: int) -> bool | None:
    """True once PID's SigBlk has SIGTERM; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    mask = text.split(b"SigBlk:\t", 1)[1].split(b"\n", 1)[0]
    return bool(int(mask, 16) & SIGTERM_BIT)


def window_once(argv: list[str]) -> float | None:
    """ms from before the fork until ARGV's process blocks SIGTERM; None if never seen."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen = None
    deadline = started + 10
    while time.perf_counter() < deadline:
        state = blocked_sigterm(proc.pid)
        if state:
            seen = (time.perf_counter() - started) * 1000
            break
        if state is None or proc.poll() is not None:
            break
    proc.wait(timeout=30)
    return seen


def run_once(argv: list[str]) -> float:
    """ms for one whole run of ARGV.

    The wait blocks in waitpid and returns the instant the child exits.  (A wait with a
    timeout, as ``subprocess.run(timeout=...)`` does, polls with doubling sleeps of 1, 2,
    4 ... 32 ms, which rounds a run up to 31 or 63 ms: a run of 25 ms read 31 ms and one
    of 33 ms read 63 ms, a 2x that was not there.)  The timer bounds a run that hangs.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killer = threading.Timer(30, proc.kill)
    killer.start()
    try:
        proc.wait()
    finally:
        killer.cancel()
    return (time.perf_counter() - started) * 1000


def pid1_rss_kb(entry: str) -> float | None:
    """VmRSS of ENTRY as PID 1 supervising ``sleep 30`` as nobody, after 1 s."""
    argv = [*ns_prefix(), entry, "--mode", "supervise", "--user", "nobody", "--", "sleep", "30"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if not children:
            return None
        for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1])
        return None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def folder_mib(folder: Path) -> float:
    """Sum of the sizes of the files under FOLDER, MiB."""
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


def measure_standalone(env: Environment, quick: bool) -> Row:
    """Start-up, signal window, PID 1 RSS and size: bundle vs pip install, interleaved."""
    available = [i for i in env.interpreters if i.available]
    debian = [i for i in available if i.label.startswith(DEBIAN_PYTHON)]
    chosen = debian or available
    pip = chosen[0] if chosen else None
    if pip is None or pip.pyinit is None:
        return {"error": "pyinit not importable"}
    log: list[str] = []
    bundle, why = bundle_entry(log)
    if bundle is None:
        return {"error": why, "log": log}
    installs = {"bundle": bundle, "pip install": pip.pyinit}
    exec_args = ["--mode", "exec", "--user", "nobody", "--", "/bin/true"]
    startup: dict[str, list[float]] = {k: [] for k in installs}
    window: dict[str, list[float]] = {k: [] for k in installs}
    rss: dict[str, list[float]] = {k: [] for k in installs}
    for _ in range(5 if quick else 40):
        for name, entry in installs.items():
            startup[name].append(run_once([entry, *exec_args]))
            seen = window_once([entry, *exec_args])
            if seen is not None:
                window[name].append(seen)
    for _ in range(1 if quick else 3):
        for name, entry in installs.items():
            kb = pid1_rss_kb(entry)
            if kb is not None:
                rss[name].append(kb)
    return {
        "pip_python": pip.label,
        "log": log,
        "startup_ms": {k: stats(v) for k, v in startup.items()},
        "window_ms": {k: stats(v) for k, v in window.items()},
        "rss_kb": {k: statistics.median(v) if v else None for k, v in rss.items()},
        "size_mib": folder_mib(Path(bundle).parent),
        "load": os.getloadavg()[0],
    }


def q(row: Row | None, key: str) -> float | None:
    """row[key] or None."""
    return None if row is None else row.get(key)


def render_standalone(res: Row) -> str:
    """The standalone section: one table, then the goals with their verdicts."""
    head = "## g6. Standalone bundle vs pip install (issue 18)\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    su, win, rss = res["startup_ms"], res["window_ms"], res["rss_kb"]
    rows = [
        f"| {name} | {fmt(q(su[name], 'p50'))} | {fmt(q(su[name], 'p95'))} | "
        f"{fmt(q(win[name], 'p50'))} | {fmt(q(win[name], 'p95'))} | {fmt(rss[name])} |"
        for name in su
    ]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    start = ratio(q(su["bundle"], "p50"), q(su["pip install"], "p50"))
    extra = (
        None
        if rss["bundle"] is None or rss["pip install"] is None
        else (rss["bundle"] - rss["pip install"]) / 1024
    )
    size = res["size_mib"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    goals = [
        f"| start-up (exec, /bin/true): bundle <= 1.5x pip install | {fmt(start)}x | "
        f"{verdict(None if start is None else start <= 1.5)} |",
        f"| bundle size <= 20 MiB | {size:.1f} MiB | {verdict(size <= 20)} |",
        f"| PID 1 RSS supervising: bundle <= pip install + 2 MB | {fmt(extra)} MB more | "
        f"{verdict(None if extra is None else extra <= 2)} |",
        f"| signal window before pyinit's first statement: measured | bundle "
        f"{fmt(q(win['bundle'], 'p50'))} ms, pip install {fmt(q(win['pip install'], 'p50'))} ms "
        "(p50) | measured |",
    ]
    return (
        head + f"pip install: pyinit on {res['pip_python']}. `start-up` = whole run of "
        "`pyinit --mode exec --user nobody -- /bin/true`; `window` = from before the fork until "
        "SIGTERM shows as blocked in `/proc/PID/status` (pyinit's first statement; polled by "
        "the harness, so a few tens of us coarse); `RSS` = VmRSS of PID 1 supervising `sleep` "
        "as nobody in a new pid namespace, after 1 s. Interleaved runs.\n\n"
        "| install | start-up p50 ms | p95 | window p50 ms | p95 | PID 1 RSS kB |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n### Issue 18 goals\n\n"
        "| goal | measured | verdict |\n|---|---|---|\n"
        + "\n".join(goals)
        + f"\n\nload average (1 min) after the section: {res['load']:.2f}"
    )
