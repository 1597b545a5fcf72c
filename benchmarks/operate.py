"""Issue-17 goal section g8: operating a running container (pyinitctl, the control socket).

Every init is PID 1 of its own pid namespace (`unshare --pid --fork --mount-proc
--kill-child`, which also gives it a private mount namespace). The control socket is either
a path in the run's temporary directory (`--control PATH`) or the default
/run/pyinit/control.sock on a tmpfs mounted over /run inside that mount namespace: the
host's /run is never touched.

  requests   `pyinitctl status` against pyinit with 10 sidecars, `supervisorctl status`
             against supervisord with 10 programs (its unix socket in the temporary
             directory), `pyinitctl health` and `python3 -c pass` on the same interpreter;
             interleaved whole runs (fork to waitpid), ms
  idle       PID 1 wake-ups (context switches of all its threads) and VmRSS with the socket
             open and with `--control none`, for a plain target and for 10 sidecars; a
             window before any request, then `pyinitctl status` and `health` once, then a
             second window: the server must not keep waking up after it answered
  liveness   10 sidecars with `alive=PROBE alive-every=1` (file:, tcp: to a listener of the
             harness, exec:), PID 1's CPU time (utime+stime of
             /proc/PID/stat) over a window, minus the same without liveness, divided by 10:
             the cost at the default `alive-every=10` (probes run 10x as often at 1 s)

The targets are benchmarks/sidecar_helper.c (`pause`), compiled into the temporary
directory. Whatever pyinit refuses (no pyinitctl, no --control, no alive=) becomes
"not available" with pyinit's own line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from measure import SessionError, find_ns_init
from setup_env import Environment, imports_this_checkout, installed_entry, write_entry_script
from sidecars import (
    N_SIDECARS,
    Program,
    compile_sidecar_helper,
    counters,
    cpu_seconds,
    descendants,
    pyinit_argv,
    session,
    supervisord_argv,
    wait_for,
)
from standalone import run_once
from summary import fmt, stats, table

Row = dict[str, Any]
DEFAULT_SOCKET = "/run/pyinit/control.sock"
# PID 1 is sh for one instruction: a tmpfs over /run in the namespace's own mount
# namespace, then exec pyinit (which stays PID 1).
PRIVATE_RUN = ["sh", "-c", 'mount -t tmpfs -o mode=755 tmpfs /run && exec "$@"', "sh"]
# label -> the probe; PORT is a listener of the harness (the namespaces share its network).
LIVENESS_PROBES = {
    "alive=file:/proc/1/status": "file:/proc/1/status",
    "alive=tcp:127.0.0.1:PORT": "tcp:127.0.0.1:{port}",
    "alive=exec:/bin/true": "exec:/bin/true",
}

PARAMS: dict[bool, dict[str, Any]] = {
    False: {"request_reps": 40, "idle_reps": 3, "settle": 2.0, "window": 5.0, "live_window": 10.0},
    True: {"request_reps": 10, "idle_reps": 1, "settle": 1.0, "window": 2.0, "live_window": 5.0},
}
GOALS = {"status_x_supervisorctl": 0.3, "health_x_python": 1.5, "cpu_ms_per_s": 1.0, "rss_kb": 1024}


# --------------------------------------------------------------------------
# what is there to measure


def ctl_entry(python: str, workdir: Path) -> tuple[str | None, str]:
    """(pyinitctl entry on python, '') or (None, why): installed beside python, else generated."""
    check = subprocess.run(
        [python, "-c", "import pyinit.ctl"], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        return None, "pyinitctl missing (pyinit.ctl is not importable)"
    entry = installed_entry(python, "pyinitctl")
    if entry is None or not imports_this_checkout(entry):
        entry = str(write_entry_script(workdir / "pyinitctl-primary", python, "pyinit.ctl"))
    return entry, ""


def refused(entry: str, flags: list[str]) -> str:
    """'' when `pyinit FLAGS --dry-run -- true` is accepted, else pyinit's first line on stderr."""
    proc = subprocess.run(
        [entry, *flags, "--dry-run", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode == 0:
        return ""
    lines = proc.stderr.strip().splitlines()
    return lines[0] if lines else f"exit {proc.returncode}"


def programs(helper: Path, sidecars: int, options: str = "") -> list[Program]:
    """SIDECARS sidecars (each with OPTIONS) and a main, every one `sidecar_helper pause`."""
    names = [f"s{i:02d}{' ' + options if options else ''}" for i in range(sidecars)]
    return [(n, [str(helper), "pause"]) for n in [*names, "main"]]


def pyinit_cmd(entry: str, control: str | None, progs: list[Program]) -> list[str]:
    """pyinit with the control socket at CONTROL ('none' to disable; None: the default
    path, on a private tmpfs over /run) running PROGS (the last one the main).

    The path is always given with --control: the harness's environment may hold a
    PYINIT_CONTROL of its own, which would otherwise win over the default.
    """
    argv = pyinit_argv(entry, progs)
    if control is None:
        return [*PRIVATE_RUN, argv[0], "--control", DEFAULT_SOCKET, *argv[1:]]
    return [argv[0], "--control", control, *argv[1:]]


@contextlib.contextmanager
def running(argv: list[str], workdir: Path, processes: int) -> Iterator[int]:
    """ARGV as PID 1 of a new namespace, once it has PROCESSES descendants; its host pid."""
    workdir.mkdir(parents=True, exist_ok=True)
    with session(argv, workdir / "stderr") as proc:
        pid = find_ns_init(proc.pid)
        if not wait_for(lambda: len(descendants(pid)) >= processes, 30):
            err = (workdir / "stderr").read_text(errors="replace").strip()[-300:]
            raise SessionError(f"{len(descendants(pid))} of {processes} processes up; {err}")
        yield pid


def in_namespace(pid: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """ARGV run in the mount namespace of PID (where its /run tmpfs is), bounded."""
    return subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", "--", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_socket(pid: int, path: str) -> bool:
    """True once PATH is a socket in PID's mount namespace (within 10 s)."""
    sock = Path(f"/proc/{pid}/root{path}")
    return wait_for(lambda: sock.is_socket(), 10)


# --------------------------------------------------------------------------
# (a, b) request latency


def measure_requests(
    entry: str, ctl: str, python: str, helper: Path, workdir: Path, reps: int
) -> Row:
    """Interleaved whole runs of pyinitctl status/health, supervisorctl status, python3 -c pass."""
    sock = workdir / "ctl" / "control.sock"
    cmds: dict[str, list[str]] = {
        "pyinitctl status": [ctl, "--control", str(sock), "status"],
        "pyinitctl health": [ctl, "--control", str(sock), "health"],
        "python3 -c pass": [python, "-c", "pass"],
    }
    checks: Row = {}
    supervisord, supervisorctl = shutil.which("supervisord"), shutil.which("supervisorctl")
    sup_argv: list[str] = []
    if supervisord and supervisorctl:
        sup_dir = workdir / "supervisord"
        sup_argv = supervisord_argv(
            supervisord, sup_dir, programs(helper, N_SIDECARS)[:-1], False, sup_dir / "sup.sock"
        )
        cmds["supervisorctl status"] = [supervisorctl, "-c", sup_argv[-1], "status"]
    else:
        checks["supervisorctl"] = "supervisor not installed (apt-get install supervisor)"
    pyinit = pyinit_cmd(entry, str(sock), programs(helper, N_SIDECARS))
    times: dict[str, list[float]] = {k: [] for k in cmds}
    with contextlib.ExitStack() as stack:
        try:
            pid = stack.enter_context(running(pyinit, workdir / "pyinit", N_SIDECARS + 1))
            if sup_argv:
                stack.enter_context(running(sup_argv, workdir / "sup", N_SIDECARS))
        except SessionError as e:
            return {"error": str(e)}
        if not wait_socket(pid, str(sock)):
            return {"error": f"no control socket at {sock} within 10 s"}
        checks.update(sanity(cmds))
        for _ in range(reps):
            for label, argv in cmds.items():
                times[label].append(run_once(argv))
    return {"times": {k: stats(v) for k, v in times.items()}, "checks": checks, "reps": reps}


def sanity(cmds: dict[str, list[str]]) -> Row:
    """What each control command answered once (exit code, lines): the timed runs did work."""
    out: Row = {}
    for label, argv in cmds.items():
        if label.startswith("python3"):
            continue
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        lines = proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines()
        out[label] = f"exit {proc.returncode}, {len(lines)} line(s), first `{(lines or [''])[0]}`"
    return out


# --------------------------------------------------------------------------
# (c, e) idle wake-ups and RSS, socket open vs --control none


def idle_configs(entry: str, helper: Path) -> dict[str, tuple[list[str], int]]:
    """label -> (argv, processes to wait for)."""
    plain = programs(helper, 0)
    ten = programs(helper, N_SIDECARS)
    return {
        "plain target, --control none": (pyinit_cmd(entry, "none", plain), 1),
        "plain target, socket": (pyinit_cmd(entry, None, plain), 1),
        f"{N_SIDECARS} sidecars, --control none": (pyinit_cmd(entry, "none", ten), N_SIDECARS + 1),
        f"{N_SIDECARS} sidecars, socket": (pyinit_cmd(entry, None, ten), N_SIDECARS + 1),
    }


def window(pids: dict[str, int], seconds: float) -> dict[str, Row]:
    """Switches per second over SECONDS and VmRSS at the end, per PID 1."""
    before = {label: counters(pid) for label, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    out: dict[str, Row] = {}
    for label, pid in pids.items():
        b, a = before[label], counters(pid)
        if a is None or b is None:
            out[label] = {"error": "PID 1 is gone"}
            continue
        out[label] = {"per_s": (a["switches"] - b["switches"]) / elapsed, "rss_kb": a["rss_kb"]}
    return out


def ask_all(pids: dict[str, int], ctl: str | None, command: str) -> dict[str, int]:
    """`pyinitctl COMMAND` once in each socket configuration's namespace: its exit code."""
    codes: dict[str, int] = {}
    for label, pid in pids.items():
        if "socket" in label and ctl and wait_socket(pid, DEFAULT_SOCKET):
            argv = [ctl, "--control", DEFAULT_SOCKET, command]
            codes[label] = in_namespace(pid, argv).returncode
    return codes


def rss_now(pids: dict[str, int]) -> dict[str, int | None]:
    """VmRSS (kB) of each PID 1, None when gone."""
    return {
        label: (c or {}).get("rss_kb") for label, c in ((k, counters(v)) for k, v in pids.items())
    }


def idle_once(entry: str, ctl: str | None, helper: Path, workdir: Path, p: Row) -> dict[str, Row]:
    """All configurations at once: a window; one `health`, RSS; one `status`, a window."""
    configs = idle_configs(entry, helper)
    pids: dict[str, int] = {}
    rows: dict[str, Row] = {}
    with contextlib.ExitStack() as stack:
        for i, (label, (argv, n)) in enumerate(configs.items()):
            try:
                pids[label] = stack.enter_context(running(argv, workdir / f"c{i}", n))
            except SessionError as e:
                rows[label] = {"error": str(e)}
        time.sleep(p["settle"])
        first = window(pids, p["window"])
        health = ask_all(pids, ctl, "health")
        time.sleep(0.3)
        after_health = rss_now(pids)
        status = ask_all(pids, ctl, "status")
        time.sleep(p["settle"] / 2)
        second = window(pids, p["window"])
    for label in pids:
        a, b = first[label], second[label]
        if "error" in a or "error" in b or after_health[label] is None:
            rows[label] = {"error": a.get("error") or b.get("error") or "PID 1 is gone"}
            continue
        rows[label] = {
            "per_s": a["per_s"],
            "rss_kb": a["rss_kb"],
            "rss_kb_health": after_health[label],
            "per_s_after": b["per_s"],
            "rss_kb_after": b["rss_kb"],
            "answers": [health[label], status[label]] if label in health else None,
        }
    return rows


def measure_idle(entry: str, ctl: str | None, helper: Path, workdir: Path, p: Row) -> Row:
    """Medians over the repetitions, per configuration."""
    runs: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    for rep in range(p["idle_reps"]):
        for label, row in idle_once(entry, ctl, helper, workdir / f"idle{rep}", p).items():
            if "error" in row:
                errors[label] = row["error"]
            else:
                runs.setdefault(label, []).append(row)
    configs: dict[str, Row] = {}
    for label, rows in runs.items():
        keys = ("per_s", "rss_kb", "rss_kb_health", "per_s_after", "rss_kb_after")
        configs[label] = {k: statistics.median(r[k] for r in rows) for k in keys}
        configs[label]["n"] = len(rows)
        configs[label]["answers"] = rows[-1]["answers"]
    for label, why in errors.items():
        configs.setdefault(label, {})["error"] = why
    return {"configs": configs, "window": p["window"], "reps": p["idle_reps"]}


# --------------------------------------------------------------------------
# (d) liveness CPU


@contextlib.contextmanager
def listener() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts and closes every connection; its port."""
    server = socket.create_server(("127.0.0.1", 0), backlog=128)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                server.accept()[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)


def measure_liveness(entry: str, helper: Path, workdir: Path, p: Row) -> Row:
    """PID 1 CPU ms/s with 10 sidecars probed every second, and without probes; all at once."""
    why = refused(entry, ["--sidecar", "s alive=file:/ alive-every=1 -- true"])
    if why:
        return {"error": why}
    sock = workdir / "ctl{}" / "control.sock"
    pids: dict[str, int] = {}
    rows: dict[str, Row] = {}
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(listener())
        configs = {"no liveness": ""} | {
            label: f"alive={probe.format(port=port)} alive-every=1"
            for label, probe in LIVENESS_PROBES.items()
        }
        for i, (label, options) in enumerate(configs.items()):
            argv = pyinit_cmd(entry, str(sock).format(i), programs(helper, N_SIDECARS, options))
            try:
                pids[label] = stack.enter_context(running(argv, workdir / f"l{i}", N_SIDECARS + 1))
            except SessionError as e:
                rows[label] = {"error": str(e)}
        time.sleep(p["settle"] + 1)  # liveness starts at readiness, then every second
        before = {label: (cpu_seconds(pid), counters(pid)) for label, pid in pids.items()}
        started = time.monotonic()
        time.sleep(p["live_window"])
        elapsed = time.monotonic() - started
        for label, pid in pids.items():
            cpu0, c0 = before[label]
            cpu1, c1 = cpu_seconds(pid), counters(pid)
            if None in (cpu0, cpu1, c0, c1):
                rows[label] = {"error": "PID 1 is gone"}
                continue
            assert cpu0 is not None and cpu1 is not None and c0 is not None and c1 is not None
            rows[label] = {
                "cpu_ms_per_s": (cpu1 - cpu0) * 1000 / elapsed,
                "per_s": (c1["switches"] - c0["switches"]) / elapsed,
                "rss_kb": c1["rss_kb"],
            }
    base = rows.get("no liveness", {}).get("cpu_ms_per_s")
    for label, row in rows.items():
        if "cpu_ms_per_s" in row and base is not None and label != "no liveness":
            row["at_10s_ms_per_s"] = max(0.0, row["cpu_ms_per_s"] - base) / 10
    return {"configs": rows, "window": p["live_window"], "tick_ms": 1000 / os.sysconf("SC_CLK_TCK")}


# --------------------------------------------------------------------------
# the section


def measure_operate(env: Environment, quick: bool) -> Row:
    """g8 (issue 17): requests, idle/RSS and liveness; what cannot run says why."""
    p = PARAMS[quick]
    helper = compile_sidecar_helper(env.workdir)
    interp = env.interpreters[0] if env.interpreters else None
    if helper is None or interp is None or interp.pyinit is None:
        return {"error": "sidecar_helper.c did not compile or pyinit is not importable"}
    entry = interp.pyinit
    why = refused(entry, ["--control", "none"])
    if why:
        return {"error": f"`pyinit --control none` refused: {why}"}
    base = env.workdir / "operate"
    ctl, ctl_why = ctl_entry(interp.python, env.workdir)
    res: Row = {"quick": quick}
    if ctl is None:
        res["requests"] = {"error": ctl_why}
    else:
        res["requests"] = measure_requests(
            entry, ctl, interp.python, helper, base / "requests", p["request_reps"]
        )
    res["idle"] = measure_idle(entry, ctl, helper, base / "idle", p)
    if ctl is None:
        res["idle"]["note"] = ctl_why
    res["liveness"] = measure_liveness(entry, helper, base / "liveness", p)
    res["load"] = os.getloadavg()[0]
    return res


# --------------------------------------------------------------------------
# rendering


def p50(res: Row, label: str) -> float | None:
    """The median of one timed command, or None."""
    s = res.get("times", {}).get(label)
    return s["p50"] if s else None


def ratio(a: float | None, b: float | None) -> str:
    """a / b as '0.25x', or 'n/a'."""
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def render_requests(res: Row) -> str:
    """Table of the timed commands."""
    head = (
        f"### Requests: whole runs, ms ({N_SIDECARS} sidecars / programs)\n\n"
        "Fork to waitpid of each command, all interleaved, against pyinit (PID 1, "
        f"{N_SIDECARS} sidecars + a main, `--control` in the temporary directory) and "
        f"supervisord (PID 1, {N_SIDECARS} programs, `[unix_http_server]` in the temporary "
        "directory); every program is `sidecar_helper pause`.\n\n"
    )
    if "error" in res:
        return head + f"not available: {res['error']}"
    sup, py = p50(res, "supervisorctl status"), p50(res, "python3 -c pass")
    rows = [
        [
            f"`{label}`",
            fmt(s["p50"] if s else None),
            fmt(s["p95"] if s else None),
            fmt(s["min"] if s else None),
            ratio(s["p50"] if s else None, sup),
            ratio(s["p50"] if s else None, py),
            str(s["n"] if s else 0),
        ]
        for label, s in res["times"].items()
    ]
    checks = "; ".join(f"{k}: {v}" for k, v in res["checks"].items())
    return (
        head
        + table(["command", "p50", "p95", "min", "x supervisorctl", "x python3 -c pass", "n"], rows)
        + f"\n\nOne run of each, answered: {checks}."
    )


def render_idle(res: Row) -> str:
    """Table of wake-ups and RSS, socket vs --control none."""
    rows = []
    for label, r in res["configs"].items():
        if "per_s" not in r:
            rows.append([label, f"not available: {r.get('error')}", "", "", "", "", ""])
            continue
        rows.append(
            [
                label,
                fmt(r["per_s"]),
                fmt(r["rss_kb"]),
                fmt(r["rss_kb_health"]),
                fmt(r["rss_kb_after"]),
                fmt(r["per_s_after"]),
                "n/a" if r["answers"] is None else ",".join(map(str, r["answers"])),
            ]
        )
    note = f"\n\n{res['note']}: no requests were made." if res.get("note") else ""
    return (
        "### PID 1 idle wake-ups and VmRSS, control socket open vs `--control none`\n\n"
        "All configurations at once, each PID 1 of its own namespace; the socket is the "
        "default /run/pyinit/control.sock on a tmpfs over the namespace's own /run. "
        f"Context switches of all threads of PID 1 over {res['window']:g} s, and VmRSS (kB); "
        "then `pyinitctl health` once (through `nsenter --mount`), VmRSS; then "
        "`pyinitctl status` once, and a second window with VmRSS at its end. Medians of "
        f"{res['reps']} run(s).\n\n"
        + table(
            [
                "configuration",
                "wake-ups/s",
                "VmRSS kB",
                "after health",
                "after status",
                "wake-ups/s after",
                "health,status exit",
            ],
            rows,
        )
        + note
    )


def render_liveness(res: Row) -> str:
    """Table of PID 1 CPU with liveness probes."""
    head = f"### PID 1 CPU with liveness probes on {N_SIDECARS} sidecars\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    rows = []
    for label, r in res["configs"].items():
        if "cpu_ms_per_s" not in r:
            rows.append([label, f"not available: {r.get('error')}", "", "", ""])
            continue
        rows.append(
            [
                label,
                fmt(r["cpu_ms_per_s"]),
                fmt(r.get("at_10s_ms_per_s")),
                fmt(r["per_s"]),
                fmt(r["rss_kb"]),
            ]
        )
    return (
        head + f"All at once; every sidecar probed every second (`alive-every=1`); PID 1's utime+"
        f"stime (`/proc/PID/stat`, {res['tick_ms']:g} ms ticks) over {res['window']:g} s. "
        "`at alive-every=10` = (ms/s - the same without liveness) / 10: probes run ten times "
        "less often at the default interval.\n\n"
        + table(
            ["configuration", "CPU ms/s at 1 s", "at alive-every=10", "wake-ups/s", "VmRSS kB"],
            rows,
        )
    )


def render_operate(res: Row) -> str:
    """The g8 section."""
    head = "## g8. Operating a running container (issue 17)\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    return (
        head
        + "\n\n".join(
            [
                render_requests(res["requests"]),
                render_idle(res["idle"]),
                render_liveness(res["liveness"]),
            ]
        )
        + f"\n\nload average (1 min) after the section: {res['load']:.2f}"
    )
