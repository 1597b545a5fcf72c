"""Signals at random instants in pyinit's first 300 ms, under CPU load: none may be lost.

Each run starts ``pyinit --mode supervise [PATH FLAGS] -- sleep 100`` (not
PID 1: a subreaper, as tini's own test suite runs it), sends SIGUSR2 at a
random instant in its first ``--window`` seconds while CPU burners load
every core, and waits for pyinit's end.  A signal is handled when pyinit
exits 140 (forwarded: the target died of SIGUSR2) or dies of SIGUSR2 itself
(it arrived before pyinit's first statement blocked it: nothing was started
yet).  Anything else, or no end within ``--bound`` seconds, is a lost signal.

Two paths: ``plain`` (the synchronous driver, no trio) and ``loop`` (a
sidecar, so the event loop and the import-time handlers).

    python3 benchmarks/signal_stress.py --runs 2000 --json out.json

Exits 1 if any signal was lost.  tests/test_supervise.py runs a small count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from control_env import private_control_socket

ROOT = Path(__file__).resolve().parent.parent
#: Extra flags per path: a sidecar puts the main under the event loop.
PATHS = {"plain": [], "loop": ["--sidecar", "s -- sleep 100"]}
FORWARDED = 128 + signal.SIGUSR2


def one_run(python: str, flags: list[str], delay: float, bound: float) -> str:
    """``forwarded``, ``early`` (pyinit itself died of it) or ``lost: ...``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [python, "-m", "pyinit", "--mode", "supervise", *flags, "--", "sleep", "100"]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGUSR2)
    try:
        code = proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        return f"lost: still running {bound:g}s later (sent at {delay * 1000:.0f} ms)"
    if code == FORWARDED:
        return "forwarded"
    if code == -signal.SIGUSR2:
        return "early"
    return f"lost: exit {code} (sent at {delay * 1000:.0f} ms)"


def burners(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` busy loops, one per core: the load the signals arrive under."""
    loop = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


def _worker(
    python: str,
    flags: list[str],
    delays: list[float],
    bound: float,
    outcomes: list[str],
    lock: threading.Lock,
) -> None:
    for delay in delays:
        outcome = one_run(python, flags, delay, bound)
        with lock:
            outcomes.append(outcome)


def stress(
    runs: int, window: float, concurrency: int, bound: float, seed: int, python: str
) -> dict[str, dict[str, object]]:
    """``runs`` runs per path, ``concurrency`` at a time, under load; counts per path."""
    rng = random.Random(seed)
    load = burners(os.cpu_count() or 1)
    results: dict[str, dict[str, object]] = {}
    try:
        for path, flags in PATHS.items():
            outcomes: list[str] = []
            lock = threading.Lock()
            delays = [rng.uniform(0, window) for _ in range(runs)]

            threads = [
                threading.Thread(
                    target=_worker,
                    args=(python, flags, delays[i::concurrency], bound, outcomes, lock),
                )
                for i in range(concurrency)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            lost = [o for o in outcomes if o.startswith("lost")]
            results[path] = {
                "runs": len(outcomes),
                "forwarded": outcomes.count("forwarded"),
                "early": outcomes.count("early"),
                "lost": len(lost),
                "lost_detail": lost[:20],
            }
    finally:
        for p in load:
            p.kill()
            p.wait()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the stress and print the counts; 1 if any signal was lost."""
    private_control_socket()  # never the host's /run/pyinit
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000, help="runs per path (default 1000)")
    p.add_argument("--window", type=float, default=0.3, help="signal within this many seconds")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--bound", type=float, default=15.0, help="seconds before a run counts lost")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    started = time.monotonic()
    results = stress(args.runs, args.window, args.concurrency, args.bound, args.seed, args.python)
    for path, r in results.items():
        print(
            f"{path}: {r['runs']} runs, {r['forwarded']} forwarded, {r['early']} early, "
            f"{r['lost']} lost"
        )
        for detail in r["lost_detail"]:  # type: ignore[attr-defined]
            print(f"  {detail}")
    print(f"{time.monotonic() - started:.1f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any(r["lost"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
