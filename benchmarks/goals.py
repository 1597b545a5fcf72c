"""Goal sections: issue 9 (stop latency, docker-stop, `-- /bin/true`, namespace gone), sidecars.

Each section is an entry of SECTIONS: name -> (measure(env, quick), render(result)).
run.py runs them after its own sections; render_goals() is the issue-9 goals table,
render_goals10() the issue-10 one (the sidecars section lives in sidecars.py),
render_goals17() the issue-17 one (the operate section lives in operate.py).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import operate
import plainrss
import sidecars
import standalone
from measure import mono_ns, wait_exit
from setup_env import BENCH_DIR, Environment, compile_c, ns_prefix
from summary import fmt, stats, table

Row = dict[str, Any]
STOP_SOURCE = BENCH_DIR / "stop_helper.c"
INITS = ("tini", "dumb-init", "pyinit")


def compile_stop_helper(workdir: Path) -> Path | None:
    """gcc -O2 stop_helper.c into workdir; None when gcc is missing or fails."""
    return compile_c(workdir, STOP_SOURCE)[0]


def stop_inits(env: Environment) -> list[tuple[str, list[str]]]:
    """(name, argv prefix before `-- TARGET`) of the inits compared; `none` = target is PID 1."""
    index = {i.name: i for i in env.inits if i.available}
    out: list[tuple[str, list[str]]] = [("none", [])]
    for name in INITS:
        if name in index:
            out.append((name, [*index[name].prefix, "--"]))
    return out


def stop_session(
    helper: Path, prefix: list[str], delay_us: int, leftovers: int, workdir: Path
) -> Row:
    """One run: start INIT -- target, send SIGTERM to PID 1 at start + delay, wait for exit."""
    fd, name = tempfile.mkstemp(dir=workdir, prefix="stop-")
    os.close(fd)
    os.unlink(name)
    target = [str(helper), "target", name, str(leftovers)]
    proc = subprocess.Popen([*ns_prefix(), *prefix, *target], stdin=subprocess.DEVNULL)
    try:
        sent = subprocess.run(
            [str(helper), "send", str(proc.pid), name, str(delay_us), str(int(signal.SIGTERM))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        rc = wait_exit(proc, 30)
        gone = mono_ns()
        if rc is None:
            raise subprocess.TimeoutExpired(proc.args, 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return {"error": "timed out"}
    if sent.returncode != 0 or not sent.stdout.startswith("sent "):
        return {"error": f"sender exited {sent.returncode}"}
    t_sent = int(sent.stdout.split()[1])
    handler = None
    for line in Path(name).read_text().splitlines():
        if line.startswith("handler "):
            handler = int(line.split()[1])
    os.unlink(name)
    return {
        "latency_us": (handler - t_sent) / 1000 if handler else None,
        "gone_ms": (gone - t_sent) / 1e6,
        "rc": rc,
    }


def run_cases(env: Environment, cases: dict[str, Callable[[], int]], reps: int, left: int) -> Row:
    """Interleaved sessions for every init and case; stats of latency and time to gone."""
    helper = compile_stop_helper(env.workdir)
    if helper is None:
        return {"error": "gcc missing or stop_helper.c failed to compile"}
    inits = stop_inits(env)
    raw: dict[str, dict[str, dict[str, list[float]]]] = {
        c: {n: {"latency_us": [], "gone_ms": []} for n, _ in inits} for c in cases
    }
    errors: dict[str, str] = {}
    for _ in range(reps):
        for case, delay in cases.items():
            for name, prefix in inits:
                row = stop_session(
                    helper, prefix, delay(), left if "leftover" in case else 0, env.workdir
                )
                if "error" in row:
                    errors[name] = row["error"]
                    continue
                for key in ("latency_us", "gone_ms"):
                    if row[key] is not None:
                        raw[case][name][key].append(row[key])
    out = {
        case: {n: {k: stats(v) for k, v in per.items()} for n, per in by.items()}
        for case, by in raw.items()
    }
    return {"cases": out, "reps": reps, "errors": errors, "load": os.getloadavg()[0]}


def measure_stop(env: Environment, quick: bool) -> Row:
    """(a) SIGTERM 20 ms after the target started, and at random 0-50 ms."""
    rng = random.Random(9)
    cases = {"20 ms": lambda: 20_000, "random 0-50 ms": lambda: rng.randrange(0, 50_000)}
    return run_cases(env, cases, 3 if quick else 40, 0)


def measure_idlestop(env: Environment, quick: bool) -> Row:
    """(b, d) one SIGTERM after 1 s idle; namespace gone, plain and with 20 leftovers."""
    cases = {"1 s idle": lambda: 1_000_000, "1 s idle, 20 leftovers": lambda: 1_000_000}
    return run_cases(env, cases, 1 if quick else 12, 20)


def measure_truerun(env: Environment, quick: bool) -> Row:
    """(c) whole run of `INIT -- /bin/true` as PID 1, interleaved, ms."""
    entry = env.interpreters[0].pyinit if env.interpreters else None
    cmds: dict[str, list[str]] = {"none": ["/bin/true"]}
    for name, prefix in stop_inits(env)[1:]:
        cmds[name if name != "pyinit" else "pyinit supervise"] = [*prefix, "/bin/true"]
    if entry:
        cmds["pyinit exec"] = [entry, "--mode", "exec", "--", "/bin/true"]
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(4 if quick else 40):
        for label, argv in cmds.items():
            # A blocking wait: subprocess.run(timeout=...) polls and rounds runs up.
            times[label].append(standalone.run_once([*ns_prefix(), *argv]))
    return {"times": {k: stats(v) for k, v in times.items()}, "load": os.getloadavg()[0]}


def sidecars_run(env: Environment, workdir: Path) -> str:
    """'' when `pyinit --sidecar` really starts a sidecar, else why not."""
    entry = env.interpreters[0].pyinit if env.interpreters else None
    if not entry:
        return "pyinit not available"
    helptext = subprocess.run([entry, "--help"], capture_output=True, text=True, timeout=30)
    if "--sidecar" not in helptext.stdout:
        return "`pyinit --help` has no --sidecar"
    mark = workdir / "sidecar-ran"
    item = f"s -- sh -c 'echo ran > {mark}; sleep 30'"
    subprocess.run(
        [*ns_prefix(), entry, "--sidecar", item, "--", "sh", "-c", "sleep 0.5"],
        capture_output=True,
        timeout=40,
        check=False,
    )
    if not mark.exists():
        return (
            "`pyinit --sidecar 's -- ...' -- CMD` accepts the flag but does not run the sidecar yet"
        )
    return ""


def measure_sidecars(env: Environment, quick: bool) -> Row:
    """(e) issue 10: benchmarks/sidecars.py when the runtime runs sidecars; else the reason."""
    why = sidecars_run(env, env.workdir)
    if why:
        return {"error": why}
    return sidecars.measure_sidecars(env, quick)


# --------------------------------------------------------------------------
# rendering


def ratio(a: float | None, b: float | None) -> str:
    """a / b as '1.2x'."""
    return "n/a" if a is None or not b else f"{a / b:.1f}x"


def get(res: Row, case: str, init: str, key: str, q: str) -> float | None:
    """One statistic from a stop result, or None."""
    s = res.get("cases", {}).get(case, {}).get(init, {}).get(key)
    return s[q] if s else None


def render_stop_table(res: Row, title: str, intro: str, key: str, unit: str) -> str:
    """A table per case: init, p50, p95, x tini."""
    head = f"## {title}\n\n{intro}\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    rows = []
    for case, by in res["cases"].items():
        for init in by:
            p50, p95 = get(res, case, init, key, "p50"), get(res, case, init, key, "p95")
            n = (by[init].get(key) or {}).get("n", 0)
            tini = get(res, case, "tini", key, "p50")
            rows.append(f"| {case} | {init} | {fmt(p50)} | {fmt(p95)} | {ratio(p50, tini)} | {n} |")
    errs = "".join(f"\n\n{n}: {e} in some runs" for n, e in res["errors"].items())
    return (
        head
        + f"| case | init | p50 {unit} | p95 {unit} | p50 x tini | n |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nload average (1 min) after the section: {res['load']:.2f}"
        + errs
    )


def render_stop(res: Row) -> str:
    """(a) section."""
    return render_stop_table(
        res,
        "g1. SIGTERM soon after the target started -> target's handler",
        "`unshare --pid --fork --mount-proc --kill-child INIT -- stop_helper target`; a C sender "
        "kills the namespace's PID 1 at the target's start stamp + delay (CLOCK_MONOTONIC); "
        "latency = handler entry - kill(). `none` = the target is PID 1 itself.",
        "latency_us",
        "us",
    )


def render_idlestop(res: Row) -> str:
    """(b) and (d) sections."""
    lat = render_stop_table(
        res,
        "g2. One SIGTERM after 1 s idle (docker stop) -> target's handler",
        "As g1 with the kill 1 s after the target started; in the leftovers case the target "
        "forks 20 children that die on TERM and stay behind when it exits.",
        "latency_us",
        "us",
    )
    gone = render_stop_table(
        res,
        "g4. SIGTERM -> namespace gone (unshare returned)",
        "Same runs as g2: from kill() to the harness's waitpid() of unshare.",
        "gone_ms",
        "ms",
    )
    return lat + "\n\n" + gone


def render_truerun(res: Row) -> str:
    """(c) section."""
    head = (
        "## g3. Whole run of `INIT -- /bin/true` as PID 1\n\n"
        "`unshare --pid --fork --mount-proc --kill-child INIT -- /bin/true`, all commands "
        "interleaved, from fork to waitpid in the harness; ms.\n\n"
    )
    t = res["times"]
    ex = (t.get("pyinit exec") or {}).get("p50")
    ti = (t.get("tini") or {}).get("p50")
    rows = [
        f"| {k} | {fmt(v['p50'] if v else None)} | {fmt(v['p95'] if v else None)} | "
        f"{ratio(v['p50'] if v else None, ti)} | {ratio(v['p50'] if v else None, ex)} |"
        for k, v in t.items()
    ]
    return (
        head
        + "| command | p50 | p95 | x tini | x pyinit exec |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nload average (1 min) after the section: {res['load']:.2f}"
    )


render_sidecars = sidecars.render_sidecars
render_goals10 = sidecars.render_goals10


SECTIONS: dict[str, tuple[Callable[[Environment, bool], Row], Callable[[Row], str]]] = {
    "stop": (measure_stop, render_stop),
    "idlestop": (measure_idlestop, render_idlestop),
    "truerun": (measure_truerun, render_truerun),
    "sidecars": (measure_sidecars, render_sidecars),
    "standalone": (standalone.measure_standalone, standalone.render_standalone),
    "plainrss": (plainrss.measure_plainrss, plainrss.render_plainrss),
    "operate": (operate.measure_operate, operate.render_operate),
}


def verdict(ok: bool | None) -> str:
    """met / NOT met / n/a."""
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def render_goals(results: dict[str, Any]) -> str:
    """The issue-9 goals table: goal, measured, met or not."""
    rows: list[list[str]] = []

    def cmp(a: float | None, b: float | None, limit: float) -> tuple[str, bool | None]:
        if a is None or not b:
            return "n/a", None
        return f"{fmt(a)} vs {fmt(b)} ({a / b:.1f}x)", a / b <= limit

    stop = results.get("stop")
    if stop and "cases" in stop:
        for case in stop["cases"]:
            p50 = get(stop, case, "pyinit", "latency_us", "p50")
            p95 = get(stop, case, "pyinit", "latency_us", "p95")
            text, ok = cmp(p50, get(stop, case, "tini", "latency_us", "p50"), 3)
            rows.append([f"SIGTERM at {case}: p50 <= 3x tini (us)", text, verdict(ok)])
            rows.append(
                [
                    f"SIGTERM at {case}: p95 <= 1 ms",
                    f"{fmt(p95)} us",
                    verdict(None if p95 is None else p95 <= 1000),
                ]
            )
    idle = results.get("idlestop")
    if idle and "cases" in idle:
        c = "1 s idle"
        text, ok = cmp(
            get(idle, c, "pyinit", "latency_us", "p50"),
            get(idle, c, "tini", "latency_us", "p50"),
            3,
        )
        rows.append(["one SIGTERM after 1 s idle: p50 <= 3x tini (us)", text, verdict(ok)])
        for case, limit in ((c, 6), ("1 s idle, 20 leftovers", 10)):
            text, ok = cmp(
                get(idle, case, "pyinit", "gone_ms", "p50"),
                get(idle, case, "tini", "gone_ms", "p50"),
                limit,
            )
            what = "plain target" if case == c else "20 leftovers"
            rows.append(
                [f"SIGTERM -> namespace gone, {what}: <= {limit}x tini (ms)", text, verdict(ok)]
            )
    true = results.get("truerun")
    if true and "times" in true:
        t = true["times"]
        sup, ex = t.get("pyinit supervise"), t.get("pyinit exec")
        text, ok = cmp(sup["p50"] if sup else None, ex["p50"] if ex else None, 1.5)
        rows.append(["`--mode supervise -- /bin/true` <= 1.5x exec mode (ms)", text, verdict(ok)])
    if not rows:
        return ""
    return (
        "## Issue 9 goals\n\n| goal | measured (pyinit vs reference) | verdict |\n|---|---|---|\n"
        + "\n".join("| " + " | ".join(r) + " |" for r in rows)
    )


def render_goals17(results: dict[str, Any]) -> str:
    """The issue-17 goals table (operate.py): goal, measured, met or not."""
    res = results.get("operate")
    if not res or "error" in res:
        return ""
    goal = operate.GOALS
    rows: list[list[str]] = []
    req = res["requests"]

    def times(label: str, reference: str, limit: float, what: str) -> None:
        a, b = operate.p50(req, label), operate.p50(req, reference)
        text = "n/a" if a is None or not b else f"{fmt(a)} vs {fmt(b)} ({a / b:.2f}x)"
        rows.append([what, text, verdict(None if a is None or not b else a / b <= limit)])

    times(
        "pyinitctl status",
        "supervisorctl status",
        goal["status_x_supervisorctl"],
        f"`pyinitctl status`, {operate.N_SIDECARS} sidecars: <= "
        f"{goal['status_x_supervisorctl']}x `supervisorctl status` (ms)",
    )
    times(
        "pyinitctl health",
        "python3 -c pass",
        goal["health_x_python"],
        f"`pyinitctl health` <= {goal['health_x_python']}x `python3 -c pass` (ms)",
    )
    idle = res["idle"]["configs"]
    for label in ("plain target, socket", f"{operate.N_SIDECARS} sidecars, socket"):
        r = idle.get(label, {})
        seen = [r[k] for k in ("per_s", "per_s_after") if k in r]
        rows.append(
            [
                f"PID 1 idle wake-ups, {label} open, no liveness: 0/s (before / after requests)",
                " / ".join(fmt(v) for v in seen) if seen else "n/a",
                verdict(None if not seen else all(v == 0 for v in seen)),
            ]
        )
    live = res["liveness"]
    for label, r in live.get("configs", {}).items():
        if label not in operate.LIVENESS_PROBES:
            continue
        cost, base = r.get("cost_ms_per_s"), live["configs"].get("no liveness", {})
        rows.append(
            [
                f"{operate.N_SIDECARS} sidecars, `{label}` every 10 s: PID 1 CPU "
                f"<= {goal['cpu_ms_per_s']:g} ms/s (with - without liveness, schedstat)",
                "n/a"
                if cost is None
                else f"{r['cpu_ms_per_s']:.3f} - {base['cpu_ms_per_s']:.3f} = {cost:.3f} ms/s",
                verdict(None if cost is None else cost <= goal["cpu_ms_per_s"]),
            ]
        )
    if "error" in live:
        rows.append(["liveness: PID 1 CPU <= 1 ms/s", f"not available: {live['error']}", "n/a"])
    on, off = idle.get("plain target, socket", {}), idle.get("plain target, --control none", {})
    for key, when in (
        ("rss_kb", "idle"),
        ("rss_kb_health", "after one health"),
        ("rss_kb_after", "after one status"),
    ):
        added = on[key] - off[key] if key in on and key in off else None
        rows.append(
            [
                f"control server's PID 1 RSS, plain target, {when}: <= 1 MB (socket - none, kB)",
                "n/a" if added is None else f"{fmt(on[key])} - {fmt(off[key])} = {fmt(added)} kB",
                verdict(None if added is None else added <= goal["rss_kb"]),
            ]
        )
    return "## Issue 17 goals\n\n" + table(
        ["goal", "measured (pyinit vs reference)", "verdict"], rows
    )
