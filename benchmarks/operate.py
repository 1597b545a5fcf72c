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
  liveness   10 sidecars with `alive=PROBE` at the default interval (every 10 s; file:,
             tcp: to a listener of the harness, exec:) beside the same 10 sidecars without
             liveness and two sleeping processes that are not pyinit (`sleep`, a Python
             loop asleep 10 s at a time), all in one window of whole 10 s rounds: PID 1's
             CPU time in ns (/proc/PID/task/*/schedstat, all threads) and context switches
             (voluntary + nonvoluntary, all threads), per second; the cost of the checks is
             each configuration minus the one without liveness

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
import sys
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

#: pyinit's default alive-every (docs/services.md): the liveness runs use it, and their
#: window is a whole number of it, so that every sidecar's checks fall in it equally often.
ALIVE_EVERY = 10.0

PARAMS: dict[bool, dict[str, Any]] = {
    False: {"request_reps": 40, "idle_reps": 3, "settle": 2.0, "window": 5.0, "live_window": 60.0},
    True: {"request_reps": 10, "idle_reps": 1, "settle": 1.0, "window": 2.0, "live_window": 10.0},
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


def schedstat(pid: int) -> dict[int, tuple[int, int]]:
    """{tid: (ns on a CPU, context switches)} for every live thread of pid; {} when gone.

    The first field of /proc/PID/task/TID/schedstat is the thread's run time in ns
    (utime+stime of /proc/PID/stat count whole 10 ms ticks); the switches are its
    voluntary + nonvoluntary ones (each wake-up of a sleeping thread is one).
    """
    out: dict[int, tuple[int, int]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        with contextlib.suppress(OSError, IndexError, ValueError):
            ns = int((task / "schedstat").read_text().split()[0])
            switches = sum(
                int(line.split()[1])
                for line in (task / "status").read_text().splitlines()
                if "ctxt_switches:" in line
            )
            out[int(task.name)] = (ns, switches)
    return out


def over_window(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> Row:
    """CPU ns and switches spent between two :func:`schedstat` readings, threads counted.

    A thread that ended inside the window took its last share with it (only live
    threads can be read): ``threads_gone`` says how many did.
    """
    ns = sum(a[0] - before.get(tid, (0, 0))[0] for tid, a in after.items())
    switches = sum(a[1] - before.get(tid, (0, 0))[1] for tid, a in after.items())
    return {
        "ns": ns,
        "switches": switches,
        "threads": len(after),
        "threads_gone": len(set(before) - set(after)),
    }


def helper_children(pid: int) -> list[int]:
    """PID 1's own helper children (the probe runner): children still running its program.

    A helper is forked without exec, so its command line is pyinit's own.
    """
    try:
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        with contextlib.suppress(OSError):
            for kid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{kid}/cmdline").read_bytes() == own:
                        found.append(int(kid))
    return found


@contextlib.contextmanager
def references() -> Iterator[dict[str, int]]:
    """Two processes that are not pyinit, asleep beside it: what this VM charges for nothing.

    `sleep` (never wakes) and a Python loop asleep 10 s at a time (one wake-up every 10 s).
    """
    argvs = {
        "reference: `sleep`": ["sleep", "100000"],
        "reference: python3 `while 1: time.sleep(10)`": [
            sys.executable,
            "-c",
            "import time\nwhile 1: time.sleep(10)",
        ],
    }
    procs = {label: subprocess.Popen(argv) for label, argv in argvs.items()}
    try:
        yield {label: proc.pid for label, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=15)


def measure_liveness(entry: str, helper: Path, workdir: Path, p: Row) -> Row:
    """PID 1 CPU (schedstat, all threads) with 10 sidecars probed at the default interval,
    beside the same without probes and two sleeping non-pyinit processes; one shared window."""
    why = refused(entry, ["--sidecar", "s alive=file:/ -- true"])
    if why:
        return {"error": why}
    sock = workdir / "ctl{}" / "control.sock"
    pids: dict[str, int] = {}
    rows: dict[str, Row] = {}
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(listener())
        configs = {"no liveness": ""} | {
            label: f"alive={probe.format(port=port)}" for label, probe in LIVENESS_PROBES.items()
        }
        for i, (label, options) in enumerate(configs.items()):
            argv = pyinit_cmd(entry, str(sock).format(i), programs(helper, N_SIDECARS, options))
            try:
                pids[label] = stack.enter_context(running(argv, workdir / f"l{i}", N_SIDECARS + 1))
            except SessionError as e:
                rows[label] = {"error": str(e)}
        pids |= stack.enter_context(references())
        # The first round of checks comes one interval after readiness: the window opens
        # after it, so that it holds whole rounds of every sidecar.
        time.sleep(ALIVE_EVERY + p["settle"])
        load_before = os.getloadavg()[0]
        helpers = {label: helper_children(pid) for label, pid in pids.items()}
        before = {label: schedstat(pid) for label, pid in pids.items()}
        helpers_before = {label: [schedstat(h) for h in helpers[label]] for label in pids}
        started = time.monotonic()
        time.sleep(p["live_window"])
        after = {label: schedstat(pid) for label, pid in pids.items()}
        helpers_after = {label: [schedstat(h) for h in helpers[label]] for label in pids}
        elapsed = time.monotonic() - started
        load_after = os.getloadavg()[0]
        for label, pid in pids.items():
            if not before[label] or not after[label]:
                rows[label] = {"error": "PID 1 is gone"}
                continue
            spent = over_window(before[label], after[label])
            helper_ns = sum(
                over_window(b, a)["ns"]
                for b, a in zip(helpers_before[label], helpers_after[label], strict=True)
                if b and a
            )
            rows[label] = {
                "cpu_ms_per_s": spent["ns"] / 1e6 / elapsed,
                "helper_ms_per_s": helper_ns / 1e6 / elapsed,
                "helpers": len(helpers[label]),
                "per_s": spent["switches"] / elapsed,
                "threads": spent["threads"],
                "threads_gone": spent["threads_gone"],
                "rss_kb": (counters(pid) or {}).get("rss_kb"),
            }
    base = rows.get("no liveness", {})
    for label, row in rows.items():
        if label in LIVENESS_PROBES and "cpu_ms_per_s" in row and "cpu_ms_per_s" in base:
            row["cost_ms_per_s"] = row["cpu_ms_per_s"] - base["cpu_ms_per_s"]
            row["total_cost_ms_per_s"] = (
                row["cost_ms_per_s"] + row["helper_ms_per_s"] - base.get("helper_ms_per_s", 0.0)
            )
            row["cost_per_s"] = row["per_s"] - base["per_s"]
    return {
        "configs": rows,
        "window": p["live_window"],
        "every": ALIVE_EVERY,
        "load": [load_before, load_after],
    }


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
    """Table of PID 1 CPU with liveness probes, beside none and two non-pyinit sleepers."""
    head = f"### PID 1 CPU with liveness probes on {N_SIDECARS} sidecars\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    rows = []
    for label, r in res["configs"].items():
        if "cpu_ms_per_s" not in r:
            rows.append([label, f"not available: {r.get('error')}", "", "", "", "", "", "", ""])
            continue
        gone = f" ({r['threads_gone']} ended)" if r["threads_gone"] else ""
        helper = "" if not r.get("helpers") else f"{r['helper_ms_per_s']:.3f}"
        rows.append(
            [
                label,
                f"{r['cpu_ms_per_s']:.3f}",
                "" if "cost_ms_per_s" not in r else f"{r['cost_ms_per_s']:+.3f}",
                helper,
                "" if "total_cost_ms_per_s" not in r else f"{r['total_cost_ms_per_s']:+.3f}",
                f"{r['per_s']:.2f}",
                "" if "cost_per_s" not in r else f"{r['cost_per_s']:+.2f}",
                f"{r['threads']}{gone}",
                fmt(r["rss_kb"]),
            ]
        )
    before, after = res["load"]
    return (
        head + f"All at once, one window of {res['window']:g} s: {N_SIDECARS} sidecars with "
        f"`alive=PROBE` at the default `alive-every={res['every']:g}` (one check a second in "
        "all), the same without liveness, and two processes that are not pyinit, asleep. "
        "CPU = run time of all threads (`/proc/PID/task/*/schedstat`, ns), wake-ups = their "
        "voluntary + nonvoluntary context switches, both per second; cost = the row minus "
        "`no liveness`. Threads whose time ended with them inside the window are counted in "
        "brackets (their share is lost). helper = the run time of PID 1's own helper child "
        "(the probe runner, which forks the `exec:` probes; no other config has one), "
        "total cost = cost + helper: all the CPU pyinit spends on the checks (the probes' "
        f"own run time is theirs, in no column). Load average (1 min): {before:.2f} before the "
        f"window, {after:.2f} after.\n\n"
        + table(
            [
                "configuration",
                "CPU ms/s",
                "cost ms/s",
                "helper ms/s",
                "total cost ms/s",
                "wake-ups/s",
                "cost wake-ups/s",
                "threads",
                "VmRSS kB",
            ],
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
