"""The main's exit at random points of a sidecar's restarts, under load: every stop ends in time.

Each run starts pyinit as PID 1 of a PID namespace (a tmpfs on /run, as the
tests do) with a sidecar that restarts back to back (``restart=always``; each
run appends a line to a file and exits; a backoff of 0 is ``backoff=0:0.001``,
which stays 0) and a main that exits as soon as the file has N lines (N drawn
from ``--lines``): its exit lands in a backoff, a fork, an exec or a reap,
whichever the timing gives.  Every backoff of ``--backoffs`` is tried, busy
loops (``--burners``, signal_stress's) load the machine, and ``--stop-timeout``
is short, so that a stop that outlives its one deadline (docs/design.md, the
stop timeline) stands out.

A run that has not ended ``--slack`` seconds after the deadline counts as
a stall.  Its state is kept in ``--keep``/stall-BACKOFF-I: PID 1's threads
(stat, wchan, kernel stack) and its children at that moment, its log
(``-v --log-time``), and every Python thread's stack at that moment, dumped
by the interpreter's faulthandler from inside pyinit: pyinit forwards
signals, so the dump is armed by a timer at the start (its thread blocks
every signal: it takes none of pyinit's).  The run then has ``--linger``
seconds to end by itself (its duration says how long a stall lasts) before
it is killed.

    python3 benchmarks/stop_stress.py --runs 500 --keep /tmp/stop-stress

Exits 1 if any run stalled.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from signal_stress import burners

ROOT = Path(__file__).resolve().parent.parent
#: PID 1 of a new PID namespace with a private /run (tests/sandbox.py's UNSHARE_PID).
UNSHARE = [
    "unshare", "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private",
    "sh", "-c", 'mount -t tmpfs tmpfs /run && exec "$@"', "sh",
]  # fmt: skip
#: Runs pyinit's ``__main__`` with faulthandler's timer armed: every thread's stack at T.
ARMED = (
    "import faulthandler, runpy, sys; "
    "faulthandler.dump_traceback_later(float(sys.argv[1]), file=open(sys.argv[2], 'w')); "
    "sys.argv = ['pyinit', *sys.argv[3:]]; "
    "runpy.run_module('pyinit', run_name='__main__', alter_sys=True)"
)


def pyinit_argv(
    python: str, work: Path, backoff: float, lines: int, stop_timeout: float, dump_at: float
) -> list[str]:
    """The namespace's command: pyinit, its sidecar restarting every ``backoff`` s, the main."""
    runs = work / "runs"
    wait = f'until [ "$(cat {runs} 2>/dev/null | wc -l)" -ge {lines} ]; do sleep 0.005; done'
    delays = f"{backoff:g}:{backoff:g}" if backoff else "0:0.001"  # MAX > 0; 0 doubles to 0
    sidecar = f'w restart=always backoff={delays} max-restarts=100000 -- sh -c "echo >> {runs}"'
    return [
        *UNSHARE, python, "-c", ARMED, str(dump_at), str(work / "threads"),
        "-v", "--log-time", "--stop-timeout", f"{stop_timeout:g}",
        "--sidecar", sidecar, "--", "sh", "-c", wait,
    ]  # fmt: skip


def pid1_state(unshare_pid: int) -> str:
    """PID 1's threads (stat, wchan, kernel stack) and its children, as /proc shows them now."""
    out = []
    try:
        pid1 = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError as e:
        return f"unshare {unshare_pid}: {e}\n"
    for pid in pid1:
        for task in sorted(glob.glob(f"/proc/{pid}/task/*")):
            for name in ("stat", "wchan", "stack"):
                try:
                    out.append(f"{task}/{name}: {Path(task, name).read_text().strip()}")
                except OSError as e:
                    out.append(f"{task}/{name}: {e.strerror}")
        ps = ["ps", "-o", "pid,ppid,stat,wchan:30,etime,cmd", "--ppid", pid]
        out.append(subprocess.run(ps, capture_output=True, text=True, check=False).stdout)
    return "\n".join(out) + "\n"


def one_run(python: str, work: Path, backoff: float, lines: int, stop_timeout: float,
            slack: float, linger: float) -> tuple[float, bool]:  # fmt: skip
    """One run: (seconds it took, whether it stalled: its state is then in ``work``)."""
    (work / "runs").unlink(missing_ok=True)
    bound = stop_timeout + slack
    argv = pyinit_argv(python, work, backoff, lines, stop_timeout, bound)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with open(work / "log", "w") as log:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=work
        )
        try:
            proc.wait(timeout=bound + 1.0)  # the main's own wait is well under a second
            return time.monotonic() - started, False
        except subprocess.TimeoutExpired:
            (work / "pid1").write_text(pid1_state(proc.pid))
            try:
                proc.wait(timeout=linger)  # how long it takes on its own, if it ends
            except subprocess.TimeoutExpired:
                subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
                proc.wait()
            return time.monotonic() - started, True


def stress(args: argparse.Namespace) -> dict[str, object]:
    """``args.runs`` runs per backoff under load; durations and the stalls' directories."""
    rng = random.Random(args.seed)
    args.keep.mkdir(parents=True, exist_ok=True)
    load = burners(args.burners)
    results: dict[str, object] = {}
    try:
        for backoff in args.backoffs:
            took, stalls = [], []
            for i in range(args.runs):
                work = args.keep / f"run-{backoff:g}"
                work.mkdir(exist_ok=True)
                lines = rng.choice(args.lines)
                seconds, stalled = one_run(
                    args.python, work, backoff, lines, args.stop_timeout, args.slack, args.linger
                )
                took.append(seconds)
                if stalled:
                    kept = args.keep / f"stall-{backoff:g}-{i}"
                    work.rename(kept)
                    stalls.append(f"{kept}: {seconds:.1f}s, main after {lines} line(s)")
            took.sort()
            results[f"backoff {backoff:g}"] = {
                "runs": len(took),
                "median_s": round(took[len(took) // 2], 3),
                "max_s": round(took[-1], 3),
                "stalls": stalls,
            }
    finally:
        for p in load:
            p.kill()
            p.wait()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the stress and print the counts; 1 if any run stalled."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200, help="runs per backoff (default 200)")
    p.add_argument("--backoffs", type=float, nargs="+", default=[0, 0.01, 0.05, 0.1])
    p.add_argument("--lines", type=int, nargs="+", default=[1, 2, 3], help="main exits after")
    p.add_argument("--stop-timeout", type=float, default=2.0)
    p.add_argument("--slack", type=float, default=2.0, help="past the deadline: a stall")
    p.add_argument("--linger", type=float, default=60.0, help="a stall's time to end itself")
    p.add_argument("--burners", type=int, default=3, help="CPU busy loops (default 3)")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--keep", type=Path, default=Path("/tmp/pyinit-stop-stress"))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    started = time.monotonic()
    results = stress(args)
    stalled = False
    for name, r in results.items():
        assert isinstance(r, dict)
        stalled = stalled or bool(r["stalls"])
        print(f"{name}: {r['runs']} runs, median {r['median_s']}s, max {r['max_s']}s, "
              f"{len(r['stalls'])} stalls")  # fmt: skip
        for stall in r["stalls"]:
            print(f"  {stall}")
    print(f"{time.monotonic() - started:.1f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if stalled else 0


if __name__ == "__main__":
    sys.exit(main())
