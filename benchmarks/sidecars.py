"""Issue-10 goal section g5: pyinit's sidecars vs supervisord, s6-svscan and honcho.

Five measures, each interleaved across the tools in one run, every init PID 1 of its own pid
namespace (`unshare --pid --fork --mount-proc --kill-child`):

  launch/stop  launch -> 10 sidecars running and the main exec'd (last CLOCK_MONOTONIC start
               stamp minus the instant before unshare was started); then SIGTERM to PID 1 ->
               unshare reaped (the namespace is gone)
  idle         VmRSS of PID 1 with 0, 1 and 10 sidecars; context switches of PID 1 over a
               window after a settle time
  relay        one sidecar writes N lines of 100 bytes; lines/s through the init's stdout pipe
               and PID 1 CPU per MB; every line checked (once, prefixed, whole)
  signals      SIGUSR1 -> the main's handler (bench_helper send/sigtarget) while 2 sidecars
               flood their logs, vs the same quiet and vs tini

The targets are benchmarks/sidecar_helper.c, compiled into the run's temporary directory.
Everything is bounded by timeouts; a tool that is missing becomes a row saying why.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from measure import SessionError, find_ns_init, mono_ns, signal_session, wait_exit
from setup_env import BENCH_DIR, Environment, Init, compile_c, ns_prefix
from summary import fmt, stats, table

Row = dict[str, Any]
SOURCE = BENCH_DIR / "sidecar_helper.c"
N_SIDECARS = 10
LINE_BYTES = 100
HONCHO_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "pyinit-bench-honcho/venv"
)
TOOLS = ("pyinit", "supervisord", "s6-svscan", "honcho")

PARAMS: dict[bool, dict[str, Any]] = {
    False: {
        "launch_reps": 15,
        "stop_settle": 0.3,
        "idle_reps": 2,
        "idle_settle": 2.0,
        "idle_seconds": 5.0,
        "relay_lines": 500_000,
        "relay_reps": 2,
        "signal_samples": 200,
        "signal_rounds": 4,
    },
    True: {
        "launch_reps": 2,
        "stop_settle": 0.2,
        "idle_reps": 1,
        "idle_settle": 1.0,
        "idle_seconds": 2.0,
        "relay_lines": 50_000,
        "relay_reps": 1,
        "signal_samples": 30,
        "signal_rounds": 1,
    },
}


# --------------------------------------------------------------------------
# tools and their configurations


def compile_sidecar_helper(workdir: Path) -> Path | None:
    """gcc -O2 sidecar_helper.c into workdir; None when gcc is missing or fails."""
    return compile_c(workdir, SOURCE)[0]


def honcho_command(log: list[str]) -> tuple[str | None, str]:
    """honcho from a venv under ~/.cache/pyinit-bench-honcho/ (built once); (path, why not)."""
    exe = HONCHO_VENV / "bin" / "honcho"
    if exe.exists():
        return str(exe), ""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
    log.append(f"installing honcho into {HONCHO_VENV} (one-time)")
    try:
        subprocess.run(
            [python, "-m", "venv", str(HONCHO_VENV)], capture_output=True, timeout=120, check=True
        )
        pip = str(HONCHO_VENV / "bin" / "pip")
        subprocess.run(
            [pip, "install", "-q", "--disable-pip-version-check", "honcho"],
            capture_output=True,
            timeout=240,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"could not install honcho into {HONCHO_VENV}: {type(e).__name__}"
    return (str(exe), "") if exe.exists() else (None, "honcho install produced no honcho")


def tool_paths(env: Environment, log: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(available tool -> executable, missing tool -> why)."""
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    entry = env.interpreters[0].pyinit if env.interpreters else None
    if entry:
        found["pyinit"] = entry
    else:
        missing["pyinit"] = "pyinit not importable"
    for name, package in (("supervisord", "supervisor"), ("s6-svscan", "s6")):
        path = shutil.which(name)
        if path:
            found[name] = path
        else:
            missing[name] = f"{name} not installed (Debian package `{package}`)"
    honcho, why = honcho_command(log)
    if honcho:
        found["honcho"] = honcho
    else:
        missing["honcho"] = why
    return found, missing


def tool_version(tool: str, path: str) -> str:
    """A short version string of a tool, '' when unknown."""
    argv = {
        "supervisord": [path, "--version"],
        "honcho": [path, "--version"],
        "s6-svscan": ["dpkg-query", "-W", "-f", "${Version}", "s6"],
    }.get(tool)
    if argv is None:
        return ""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout or out.stderr).strip()
    first = text.splitlines()[0] if text else ""
    return first.removeprefix(tool).strip()


Program = tuple[str, list[str]]  # (name, argv); the last one is the main


def pyinit_argv(entry: str, programs: list[Program]) -> list[str]:
    """`pyinit --sidecar 'NAME -- ARGV' ... -- MAIN`."""
    argv = [entry]
    for name, cmd in programs[:-1]:
        argv += ["--sidecar", f"{name} -- {shlex.join(cmd)}"]
    return [*argv, "--", *programs[-1][1]]


def supervisord_argv(
    path: str, workdir: Path, programs: list[Program], stdout: bool, control: Path | None = None
) -> list[str]:
    """supervisord -n -c CONF, one [program:x] per program (startsecs=0).

    stdout=True: each program's output to supervisord's stdout (stdout_logfile=/dev/stdout,
    stdout_logfile_maxbytes=0, redirect_stderr), the documented way; else no log files.
    control: a unix socket for `supervisorctl -c CONF` (its [unix_http_server], the RPC
    interface and [supervisorctl] serverurl), as an image that uses supervisorctl has.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "user=root",
        f"logfile={workdir / 'supervisord.log'}",
        f"pidfile={workdir / 'supervisord.pid'}",
        f"childlogdir={workdir}",
    ]
    if control is not None:
        lines += [
            "[unix_http_server]",
            f"file={control}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{control}",
        ]
    for name, cmd in programs:
        lines += [
            f"[program:{name}]",
            f"command={shlex.join(cmd)}",
            "startsecs=0",
            "redirect_stderr=true",
            f"stdout_logfile={'/dev/stdout' if stdout else 'NONE'}",
            "stdout_logfile_maxbytes=0",
        ]
    conf = workdir / "supervisord.conf"
    conf.write_text("\n".join(lines) + "\n")
    return [path, "-n", "-c", str(conf)]


def s6_argv(path: str, helper: Path, workdir: Path, programs: list[Program]) -> list[str]:
    """s6-svscan SCANDIR with one service directory per program.

    Each `run` is a symlink to sidecar_helper, which (invoked as `run`) reads its arguments
    from the service directory's `argv` file: no shell between s6-supervise and the target.
    """
    scan = workdir / "scan"
    for name, cmd in programs:
        if cmd[0] != str(helper):
            raise ValueError("s6 services must run sidecar_helper")
        svc = scan / name
        svc.mkdir(parents=True)
        (svc / "run").symlink_to(helper)
        (svc / "argv").write_text(" ".join(cmd[1:]) + "\n")
    return [path, str(scan)]


def honcho_argv(path: str, workdir: Path, programs: list[Program]) -> list[str]:
    """honcho start -f PROCFILE (honcho runs each line with /bin/sh -c)."""
    workdir.mkdir(parents=True, exist_ok=True)
    procfile = workdir / "Procfile"
    procfile.write_text("".join(f"{name}: {shlex.join(cmd)}\n" for name, cmd in programs))
    return [path, "start", "--no-colour", "-f", str(procfile), "-d", str(workdir)]


def init_argv(
    tool: str, path: str, helper: Path, workdir: Path, programs: list[Program], stdout: bool
) -> list[str]:
    """The command line that runs programs (the last one the main) under tool."""
    if tool == "pyinit":
        return pyinit_argv(path, programs)
    if tool == "supervisord":
        return supervisord_argv(path, workdir, programs, stdout)
    if tool == "s6-svscan":
        return s6_argv(path, helper, workdir, programs)
    return honcho_argv(path, workdir, programs)


# --------------------------------------------------------------------------
# /proc helpers


def children(pid: int) -> list[int]:
    """Children of every thread of pid."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (task / "children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    """All descendants of pid (breadth first)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def has_descendants(pid: int, n: int) -> bool:
    """True once pid has at least n descendants."""
    return len(descendants(pid)) >= n


def comm(pid: int) -> str:
    """/proc/PID/comm, '' when gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all threads, dead ones too), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(pid: int) -> Row | None:
    """Context switches summed over the threads of pid, threads, VmRSS (kB); None when gone."""
    vol = invol = threads = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                        threads += 1
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        rss = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    except (OSError, StopIteration):
        return None
    return {"switches": vol + invol, "threads": threads, "rss_kb": rss}


@contextlib.contextmanager
def session(
    argv: list[str], errlog: Path, stdout: int | None = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """argv as PID 1 of a new pid namespace; killed (with the namespace) on leaving."""
    with errlog.open("ab") as err:
        proc = subprocess.Popen(
            [*ns_prefix(), *argv], stdin=subprocess.DEVNULL, stdout=stdout, stderr=err
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Poll cond until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# --------------------------------------------------------------------------
# 1+2. launch with 10 sidecars, then SIGTERM -> gone


def svc_programs(helper: Path, stamps: Path) -> list[Program]:
    """10 sidecars and a main, each `sidecar_helper svc STAMPS NAME`."""
    names = [f"s{i:02d}" for i in range(N_SIDECARS)] + ["main"]
    return [(n, [str(helper), "svc", str(stamps), n]) for n in names]


def read_stamps(path: Path) -> tuple[list[int], int]:
    """(start stamps, number of term stamps) in a stamps file."""
    starts: list[int] = []
    terms = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "start":
                starts.append(int(parts[2]))
            elif len(parts) == 3 and parts[0] == "term":
                terms += 1
    return starts, terms


def launch_stop_once(tool: str, path: str, helper: Path, workdir: Path, settle: float) -> Row:
    """One session: time to 11 start stamps; then kill(PID 1, TERM) -> unshare reaped."""
    workdir.mkdir(parents=True)
    stamps = workdir / "stamps"
    argv = init_argv(tool, path, helper, workdir, svc_programs(helper, stamps), False)
    t0 = mono_ns()
    with session(argv, workdir / "stderr") as proc:
        expected = N_SIDECARS + 1
        if not wait_for(lambda: len(read_stamps(stamps)[0]) >= expected, 30):
            got = len(read_stamps(stamps)[0])
            return {"error": f"only {got} of {expected} processes started within 30 s"}
        starts = read_stamps(stamps)[0]
        launch_ms = (max(starts) - t0) / 1e6
        first_ms = (min(starts) - t0) / 1e6
        time.sleep(settle)
        sent = subprocess.run(
            [str(helper), "kill", str(proc.pid), str(int(signal.SIGTERM))],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        rc = wait_exit(proc, 30)
        if rc is None:
            return {
                "launch_ms": launch_ms,
                "first_ms": first_ms,
                "error": "did not exit within 30 s of SIGTERM",
            }
        gone = mono_ns()
    if sent.returncode != 0 or not sent.stdout.startswith("sent "):
        return {
            "launch_ms": launch_ms,
            "first_ms": first_ms,
            "error": f"sender exited {sent.returncode}",
        }
    t_sent = int(sent.stdout.split()[1])
    return {
        "launch_ms": launch_ms,
        "first_ms": first_ms,
        "stop_ms": (gone - t_sent) / 1e6,
        "terms": read_stamps(stamps)[1],
        "rc": rc,
    }


def measure_launch_stop(
    tools: dict[str, str], helper: Path, workdir: Path, reps: int, settle: float
) -> Row:
    """Interleaved launch/stop sessions of pyinit, supervisord and s6-svscan."""
    names = [t for t in ("pyinit", "supervisord", "s6-svscan") if t in tools]
    keys = ("launch_ms", "first_ms", "stop_ms")
    raw: dict[str, dict[str, list[float]]] = {t: {k: [] for k in keys} for t in names}
    terms: dict[str, set[int]] = {t: set() for t in names}
    codes: dict[str, set[int]] = {t: set() for t in names}
    errors: dict[str, str] = {}
    for rep in range(reps):
        for tool in names:
            row = launch_stop_once(tool, tools[tool], helper, workdir / f"ls-{tool}-{rep}", settle)
            if "launch_ms" in row:
                raw[tool]["launch_ms"].append(row["launch_ms"])
                raw[tool]["first_ms"].append(row["first_ms"])
            if "error" in row:
                errors[tool] = row["error"]
                continue
            raw[tool]["stop_ms"].append(row["stop_ms"])
            terms[tool].add(row["terms"])
            codes[tool].add(row["rc"])
    return {
        "tools": {
            t: {
                "launch_ms": stats(raw[t]["launch_ms"]),
                "first_ms": stats(raw[t]["first_ms"]),
                "stop_ms": stats(raw[t]["stop_ms"]),
                "terms": sorted(terms[t]),
                "exit": sorted(codes[t]),
                "error": errors.get(t),
            }
            for t in names
        },
        "reps": reps,
    }


# --------------------------------------------------------------------------
# 3+4. memory per sidecar and idle wake-ups


def idle_configs(tools: dict[str, str], helper: Path) -> list[tuple[str, str, list[Program]]]:
    """(label, tool, programs): pyinit with 0, 1 and 10 sidecars, the others with 10."""
    pause = [str(helper), "pause"]
    ten = [(f"s{i:02d}", pause) for i in range(N_SIDECARS)] + [("main", pause)]
    out: list[tuple[str, str, list[Program]]] = []
    if "pyinit" in tools:
        out += [
            ("pyinit, 0 sidecars", "pyinit", [("main", pause)]),
            ("pyinit, 1 sidecar", "pyinit", [("s00", pause), ("main", pause)]),
            ("pyinit, 10 sidecars", "pyinit", ten),
        ]
    for tool in ("supervisord", "s6-svscan"):
        if tool in tools:
            out.append((f"{tool}, 10 sidecars", tool, ten))
    return out


def idle_once(
    tools: dict[str, str], helper: Path, workdir: Path, settle: float, seconds: float
) -> dict[str, Row]:
    """All configurations at once: settle, then count PID 1's context switches; RSS."""
    out: dict[str, Row] = {}
    with contextlib.ExitStack() as stack:
        live: list[tuple[str, str, int, int]] = []  # label, tool, pid 1, expected processes
        for n, (label, tool, programs) in enumerate(idle_configs(tools, helper)):
            d = workdir / f"cfg{n}"
            d.mkdir(parents=True)
            argv = init_argv(tool, tools[tool], helper, d, programs, False)
            proc = stack.enter_context(session(argv, d / "stderr"))
            try:
                pid1 = find_ns_init(proc.pid)
            except SessionError as e:
                out[label] = {"error": str(e)}
                continue
            # s6: an s6-supervise per service plus the service itself
            expected = len(programs) * (2 if tool == "s6-svscan" else 1)
            live.append((label, tool, pid1, expected))
        for label, _tool, pid1, expected in live:
            if not wait_for(functools.partial(has_descendants, pid1, expected), 30, 0.05):
                out[label] = {"error": f"fewer than {expected} processes after 30 s"}
        time.sleep(settle)
        before = {pid1: counters(pid1) for _l, _t, pid1, _e in live}
        supers_before = {
            pid1: [counters(p) for p in children(pid1) if comm(p) == "s6-supervise"]
            for _l, tool, pid1, _e in live
            if tool == "s6-svscan"
        }
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        for label, tool, pid1, _e in live:
            if label in out:
                continue
            b, a = before[pid1], counters(pid1)
            if b is None or a is None:
                out[label] = {"error": "PID 1 went away"}
                continue
            row: Row = {
                "rss_kb": a["rss_kb"],
                "switches": a["switches"] - b["switches"],
                "per_s": (a["switches"] - b["switches"]) / elapsed,
                "threads": a["threads"],
            }
            if tool == "s6-svscan":
                sup_a = [counters(p) for p in children(pid1) if comm(p) == "s6-supervise"]
                good_a = [c for c in sup_a if c]
                good_b = [c for c in supers_before[pid1] if c]
                row["supervise_rss_kb"] = sum(c["rss_kb"] for c in good_a)
                row["supervise_switches"] = sum(c["switches"] for c in good_a) - sum(
                    c["switches"] for c in good_b
                )
                row["supervise_n"] = len(good_a)
            out[label] = row
    return out


def measure_idle(
    tools: dict[str, str], helper: Path, workdir: Path, reps: int, settle: float, seconds: float
) -> Row:
    """Medians over reps of RSS and wake-ups per configuration."""
    runs: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    for rep in range(reps):
        for label, row in idle_once(tools, helper, workdir / f"idle{rep}", settle, seconds).items():
            if "error" in row:
                errors[label] = row["error"]
            else:
                runs.setdefault(label, []).append(row)
    configs: dict[str, Row] = {}
    for label, rows in runs.items():
        configs[label] = {
            k: statistics.median(r[k] for r in rows)
            for k in rows[0]
            if isinstance(rows[0][k], int | float)
        }
        configs[label]["n"] = len(rows)
    for label, why in errors.items():
        configs.setdefault(label, {})["error"] = why
    return {"configs": configs, "seconds": seconds, "settle": settle, "reps": reps}


# --------------------------------------------------------------------------
# 5. log relay throughput


PAYLOAD = re.compile(rb"L(\d{9}):x{88}")
PREFIX = {
    "pyinit": re.compile(rb"w \| "),
    "honcho": re.compile(rb"\d\d:\d\d:\d\d w\.1 +\| "),
    "supervisord": re.compile(rb""),  # supervisord relays bytes as they are: no prefix
}


def check_lines(tool: str, data: bytes, n: int) -> Row:
    """Every payload line 0..n-1 exactly once, whole, with the tool's prefix."""
    seen = bytearray(n)
    dup = bad = other = ok = 0
    prefix = PREFIX[tool]
    for line in data.split(b"\n"):
        if not line:
            continue
        m = prefix.match(line)
        payload = line[m.end() :] if m else b""
        p = PAYLOAD.fullmatch(payload) if m else None
        if p is None:
            if b"xxxxxxxx" in line:
                bad += 1  # unprefixed, split or merged
            else:
                other += 1  # the tool's own messages
            continue
        seq = int(p.group(1))
        if seq >= n:
            bad += 1
        elif seen[seq]:
            dup += 1
        else:
            seen[seq] = 1
            ok += 1
    return {"ok": ok, "missing": n - ok, "dup": dup, "bad": bad, "other": other}


def open_go(fifo: Path, timeout: float) -> int | None:
    """Open the writer's go FIFO for writing once the writer has opened it; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        time.sleep(0.005)
    return None


def relay_once(tool: str, path: str, helper: Path, workdir: Path, n: int) -> Row:
    """One writer sidecar, n lines; the harness reads the init's stdout pipe."""
    workdir.mkdir(parents=True)
    fifo = workdir / "go"
    os.mkfifo(fifo)
    programs = [
        ("w", [str(helper), "writer", str(n), str(fifo)]),
        ("main", [str(helper), "pause"]),
    ]
    argv = init_argv(tool, path, helper, workdir, programs, True)
    last = b"L%09d:" % (n - 1)
    chunks: list[bytes] = []
    timeout = 30 + n / 2000  # honcho relays a few 10^4 lines/s
    with session(argv, workdir / "stderr", stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            pid1 = find_ns_init(proc.pid)
        except SessionError as e:
            return {"error": str(e)}
        go = open_go(fifo, 30)
        if go is None:
            return {"error": "the writer never opened its go FIFO"}
        os.set_blocking(fd, False)
        time.sleep(0.3)  # the init has started both programs and is idle
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 1 << 20):  # the tools' own start-up messages
                pass
        os.set_blocking(fd, True)
        cpu0 = cpu_seconds(pid1)
        helpers0 = {p: cpu_seconds(p) for p in descendants(pid1)}
        t0 = mono_ns()
        os.write(go, b"g")
        os.close(go)
        tail = b""
        deadline = time.monotonic() + timeout
        finished = False
        while time.monotonic() < deadline:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            window = tail + chunk[:200]
            if last in window or last in chunk:
                finished = True
                break
            tail = chunk[-200:]
        t_end = mono_ns()
        cpu1 = cpu_seconds(pid1)
        # the init's own helper processes (honcho forks one reader per program)
        helper_cpu = 0.0
        for p in descendants(pid1):
            if comm(p) not in ("sidecar_helper", "sh"):
                now = cpu_seconds(p) or 0.0
                helper_cpu += now - (helpers0.get(p) or 0.0)
        # drain the rest until the end of the line, then stop the init and read to EOF
        os.kill(pid1, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            rest, _ = proc.communicate(timeout=20)
            chunks.append(rest or b"")
    if not finished:
        return {"error": f"the last line did not arrive within {timeout:.0f} s"}
    seconds = (t_end - t0) / 1e9
    mb = n * LINE_BYTES / 1e6
    check = check_lines(tool, b"".join(chunks), n)
    pid1_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {
        "lines_per_s": n / seconds,
        "mb_per_s": mb / seconds,
        "seconds": seconds,
        "cpu_ms_per_mb": None if pid1_cpu is None else pid1_cpu * 1000 / mb,
        "all_cpu_ms_per_mb": None if pid1_cpu is None else (pid1_cpu + helper_cpu) * 1000 / mb,
        **check,
    }


def measure_relay(tools: dict[str, str], helper: Path, workdir: Path, n: int, reps: int) -> Row:
    """Interleaved relay runs of pyinit, supervisord and honcho; medians and worst checks."""
    names = [t for t in ("pyinit", "supervisord", "honcho") if t in tools]
    runs: dict[str, list[Row]] = {t: [] for t in names}
    errors: dict[str, str] = {}
    for rep in range(reps):
        for tool in names:
            row = relay_once(tool, tools[tool], helper, workdir / f"relay-{tool}-{rep}", n)
            if "error" in row:
                errors[tool] = row["error"]
            else:
                runs[tool].append(row)
    out: dict[str, Row] = {}
    for tool in names:
        rows = runs[tool]
        if not rows:
            out[tool] = {"error": errors.get(tool, "no run")}
            continue
        med: Row = {}
        for key in ("lines_per_s", "mb_per_s", "cpu_ms_per_mb", "all_cpu_ms_per_mb"):
            vals = [r[key] for r in rows if r[key] is not None]
            med[key] = statistics.median(vals) if vals else None
        for key in ("missing", "dup", "bad"):
            med[key] = max(r[key] for r in rows)
        med["ok"] = min(r["ok"] for r in rows)
        med["other"] = max(r["other"] for r in rows)
        med["n"] = len(rows)
        med["error"] = errors.get(tool)
        out[tool] = med
    return {"tools": out, "lines": n, "mb": n * LINE_BYTES / 1e6, "reps": reps}


# --------------------------------------------------------------------------
# 6. signal forwarding while sidecars flood


def measure_flood_signals(
    env: Environment, tools: dict[str, str], helper: Path, samples: int, rounds: int
) -> Row:
    """SIGUSR1 -> main's handler: pyinit quiet/flooding, pyinit alone, tini (no sidecars)."""
    configs: list[Init] = []
    tini = shutil.which("tini")
    if tini:
        configs.append(Init("tini, no sidecars", [tini], "reference"))
    if "pyinit" in tools:
        entry = tools["pyinit"]
        flood = shlex.join([str(helper), "flood"])
        quiet = shlex.join([str(helper), "pause"])
        configs += [
            Init("pyinit, no sidecars", [entry], "pyinit"),
            Init(
                "pyinit, 2 quiet sidecars",
                [entry, "--sidecar", f"q1 -- {quiet}", "--sidecar", f"q2 -- {quiet}"],
                "pyinit",
            ),
            Init(
                "pyinit, 2 flooding sidecars",
                [entry, "--sidecar", f"f1 -- {flood}", "--sidecar", f"f2 -- {flood}"],
                "pyinit",
            ),
        ]
    per = max(1, samples // rounds)
    raw: dict[str, list[float]] = {c.name: [] for c in configs}
    lost: dict[str, int] = {c.name: 0 for c in configs}
    errors: dict[str, str] = {}
    for r in range(rounds):
        for i, init in enumerate(configs):
            row = signal_session(env, init, per, 500, 2000, 9000 + 10 * r + i)
            if "error" in row:
                errors[init.name] = row["error"]
                continue
            raw[init.name] += row["usr1"]
            lost[init.name] += row["lost"]
    return {
        "configs": {
            c.name: {
                "usr1_us": stats(raw[c.name]),
                "lost": lost[c.name],
                "error": errors.get(c.name),
            }
            for c in configs
        },
        "samples": samples,
        "missing": "" if tini else "tini not installed",
    }


# --------------------------------------------------------------------------
# the section


def measure_sidecars(env: Environment, quick: bool) -> Row:
    """g5 (issue 10): all five measures; tools that are missing are named with the reason."""
    p = PARAMS[quick]
    helper = compile_sidecar_helper(env.workdir)
    if helper is None:
        return {"error": "gcc missing or sidecar_helper.c failed to compile"}
    if env.helper is None:
        return {"error": "bench_helper.c did not compile"}
    log: list[str] = []
    tools, missing = tool_paths(env, log)
    if "pyinit" not in tools:
        return {"error": missing["pyinit"]}
    base = env.workdir / "sidecars"
    res: Row = {
        "missing": missing,
        "versions": {t: tool_version(t, path) for t, path in tools.items()},
        "log": log,
        "quick": quick,
    }
    res["launch"] = measure_launch_stop(
        tools, helper, base / "launch", p["launch_reps"], p["stop_settle"]
    )
    res["idle"] = measure_idle(
        tools, helper, base / "idle", p["idle_reps"], p["idle_settle"], p["idle_seconds"]
    )
    res["relay"] = measure_relay(tools, helper, base / "relay", p["relay_lines"], p["relay_reps"])
    res["signals"] = measure_flood_signals(
        env, tools, helper, p["signal_samples"], p["signal_rounds"]
    )
    res["load"] = os.getloadavg()[0]
    return res


# --------------------------------------------------------------------------
# rendering


def ratio(a: float | None, b: float | None) -> str:
    """a / b as '1.2x', or 'n/a'."""
    if a is None or not b:
        return "n/a"
    r = a / b
    return f"{r:.2f}x" if r < 0.1 else f"{r:.1f}x"


def verdict(ok: bool | None) -> str:
    """met / **not met** / n/a."""
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def q(s: Row | None, key: str) -> float | None:
    """s[key] when s is a stats dict, else None."""
    return s[key] if s else None


def render_launch(res: Row) -> str:
    """Tables for launch and stop."""
    tools = res["tools"]
    sup = tools.get("supervisord", {})
    s6 = tools.get("s6-svscan", {})
    launch_rows, stop_rows = [], []
    for t, r in tools.items():
        lm, sm, fm = r["launch_ms"], r["stop_ms"], r["first_ms"]
        note = f"error in some runs: {r['error']}" if r["error"] else ""
        launch_rows.append(
            [
                t,
                fmt(q(lm, "p50")),
                fmt(q(lm, "p95")),
                ratio(q(lm, "p50"), q(sup.get("launch_ms"), "p50")),
                ratio(q(lm, "p50"), q(s6.get("launch_ms"), "p50")),
                fmt(q(fm, "p50")),
                fmt(None if lm is None or fm is None else (lm["p50"] - fm["p50"]) / N_SIDECARS),
                str(q(lm, "n") or 0),
                note,
            ]
        )
        stop_rows.append(
            [
                t,
                fmt(q(sm, "p50")),
                fmt(q(sm, "p95")),
                ratio(q(sm, "p50"), q(sup.get("stop_ms"), "p50")),
                ratio(q(sm, "p50"), q(s6.get("stop_ms"), "p50")),
                ",".join(map(str, r["terms"])),
                ",".join(map(str, r["exit"])),
                str(q(sm, "n") or 0),
            ]
        )
    return (
        f"### Launch -> {N_SIDECARS} sidecars running and the main exec'd (ms)\n\n"
        "Last of the 11 start stamps minus the instant before unshare was started; `first` = "
        "the first stamp (the init's own start-up), `per item` = (p50 last - p50 first) / 10.\n\n"
        + table(
            ["init", "p50", "p95", "x supervisord", "x s6-svscan", "first", "per item", "n", ""],
            launch_rows,
        )
        + f"\n\n### SIGTERM to PID 1 -> init gone, {N_SIDECARS} sidecars + main exit on TERM "
        "(ms)\n\nFrom kill() to the harness's waitpid() of unshare returning; `TERM seen` = "
        "how many of the 11 processes ran their TERM handler (the rest were killed by the "
        "kernel when PID 1 exited).\n\n"
        + table(
            ["init", "p50", "p95", "x supervisord", "x s6-svscan", "TERM seen", "exit", "n"],
            stop_rows,
        )
    )


def render_idle(res: Row) -> str:
    """Tables for memory and wake-ups."""
    c = res["configs"]
    rows = []
    for label, r in c.items():
        if "error" in r and "rss_kb" not in r:
            rows.append([label, f"not available: {r['error']}", "", "", "", ""])
            continue
        extra = ""
        if "supervise_rss_kb" in r:
            extra = (
                f"+ {int(r['supervise_n'])} s6-supervise: {fmt(r['supervise_rss_kb'])} kB RSS, "
                f"{fmt(r['supervise_switches'])} switches"
            )
        rows.append(
            [
                label,
                fmt(r["rss_kb"]),
                fmt(r["switches"]),
                fmt(r["per_s"]),
                str(int(r["threads"])),
                extra,
            ]
        )
    per = per_sidecar_kb(res)
    per1 = per_sidecar_kb(res, "pyinit, 1 sidecar", N_SIDECARS - 1)
    return (
        f"### PID 1 memory and idle wake-ups with {N_SIDECARS} sidecars\n\n"
        "All configurations at once, every program `sidecar_helper pause`; "
        f"after {res['settle']:g} s, "
        "context switches (voluntary + involuntary, all threads of PID 1, "
        f"`/proc/PID/task/*/status`) over {res['seconds']:g} s, then VmRSS of PID 1. "
        f"Medians of {res['reps']} run(s).\n\n"
        + table(["configuration", "VmRSS kB", "switches", "per s", "threads", "also"], rows)
        + f"\n\npyinit per sidecar: (RSS10 - RSS0) / 10 = {fmt(per)} kB; "
        f"(RSS10 - RSS1) / 9 = {fmt(per1)} kB."
    )


def per_sidecar_kb(
    res: Row, base: str = "pyinit, 0 sidecars", div: int = N_SIDECARS
) -> float | None:
    """(RSS with 10 sidecars - RSS of base) / div, kB."""
    c = res["configs"]
    ten, zero = c.get("pyinit, 10 sidecars", {}), c.get(base, {})
    if "rss_kb" not in ten or "rss_kb" not in zero:
        return None
    return float(ten["rss_kb"] - zero["rss_kb"]) / div


def render_relay(res: Row) -> str:
    """Table for the log relay."""
    t = res["tools"]
    sup = t.get("supervisord", {}).get("lines_per_s")
    hon = t.get("honcho", {}).get("lines_per_s")
    rows = []
    for tool, r in t.items():
        if "lines_per_s" not in r:
            rows.append([tool, f"not available: {r['error']}"] + [""] * 8)
            continue
        rows.append(
            [
                tool,
                fmt(r["lines_per_s"]),
                fmt(r["mb_per_s"]),
                ratio(r["lines_per_s"], sup),
                ratio(r["lines_per_s"], hon),
                fmt(r["cpu_ms_per_mb"]),
                fmt(r["all_cpu_ms_per_mb"]),
                f"{r['ok']:,}",
                f"{r['missing']}/{r['dup']}/{r['bad']}",
                str(r["n"]),
            ]
        )
    return (
        f"### Log relay: one sidecar writes {res['lines']:,} lines of {LINE_BYTES} bytes "
        f"({res['mb']:g} MB)\n\n"
        "The writer (a C sidecar, 64 KiB writes of whole lines) waits on a FIFO until the "
        "init is idle, writes as fast as it can, then stays alive (no exit/restart handling "
        "inside the measurement); a main `pause` process runs beside it. The init's stdout is "
        "a pipe the harness reads; lines/s = lines / (last line read - go). PID 1 CPU = "
        "utime+stime of PID 1 (`/proc/PID/stat`, all threads, clock-tick resolution) from go "
        "to the last line; `incl. helpers` adds the init's own non-service child processes "
        "(honcho forks one reader per program). pyinit: `--sidecar 'w -- WRITER'` (prefix "
        "`w | `); supervisord: `stdout_logfile=/dev/stdout`, `stdout_logfile_maxbytes=0`, "
        "`redirect_stderr=true` (relays bytes unprefixed); honcho: a Procfile (prefix "
        "`HH:MM:SS w.1 | `). Every line is checked: each sequence number exactly once, the "
        "whole 99-byte payload, the tool's prefix. s6 has no prefixing relay (services "
        "inherit its stdout or use s6-log): not compared.\n\n"
        + table(
            [
                "init",
                "lines/s",
                "MB/s",
                "x supervisord",
                "x honcho",
                "PID 1 CPU ms/MB",
                "incl. helpers",
                "lines ok",
                "missing/dup/bad",
                "n",
            ],
            rows,
        )
    )


def render_signals(res: Row) -> str:
    """Table for signal latency under a log flood."""
    c = res["configs"]
    tini = q(c.get("tini, no sidecars", {}).get("usr1_us"), "p50")
    rows = []
    for label, r in c.items():
        s = r["usr1_us"]
        if s is None:
            rows.append([label, f"not available: {r['error']}", "", "", "", "", ""])
            continue
        rows.append(
            [
                label,
                fmt(s["p50"]),
                fmt(s["p95"]),
                fmt(s["max"]),
                ratio(s["p50"], tini),
                str(r["lost"]),
                str(s["n"]),
            ]
        )
    return (
        "### SIGUSR1 -> main's handler while sidecars flood their logs (us)\n\n"
        "`bench_helper send/sigtarget` as in section c: kill(PID 1, SIGUSR1) to the handler "
        "entry in the main, one at a time with a 2 ms gap, after 500 ms settle. The flooding "
        "sidecars are `sidecar_helper flood` (100-byte lines in 64 KiB writes, forever); the "
        "init's stdout is /dev/null. tini has no sidecars: it forwards to its target alone.\n\n"
        + table(["configuration", "p50", "p95", "max", "p50 x tini", "lost", "n"], rows)
        + (f"\n\ntini not compared: {res['missing']}" if res.get("missing") else "")
    )


def render_sidecars(res: Row) -> str:
    """The g5 section."""
    head = "## g5. Sidecars (issue 10)\n\n"
    if "error" in res:
        return head + f"not available: {res['error']}"
    versions = "; ".join(f"{t} {v}" for t, v in res["versions"].items() if v)
    missing = "".join(f"\n\n{t} not compared: {why}" for t, why in res["missing"].items())
    return (
        head + f"Every init is PID 1 of its own pid namespace; tools interleaved in each measure. "
        f"Versions: {versions}.{missing}\n\n"
        + "\n\n".join(
            [
                render_launch(res["launch"]),
                render_idle(res["idle"]),
                render_relay(res["relay"]),
                render_signals(res["signals"]),
            ]
        )
        + f"\n\nload average (1 min) after the section: {res['load']:.2f}"
    )


def render_goals10(results: dict[str, Any]) -> str:
    """The issue-10 goals table: goal, measured, met or not."""
    res = results.get("sidecars")
    if not res or "error" in res:
        return ""
    rows: list[list[str]] = []

    def cmp(label: str, a: float | None, b: float | None, ok: Callable[[float], bool]) -> None:
        if a is None or not b:
            rows.append([label, "n/a", "n/a"])
        else:
            rows.append([label, f"{fmt(a)} vs {fmt(b)} ({ratio(a, b)})", verdict(ok(a / b))])

    lt = res["launch"]["tools"]

    def p50(tool: str, key: str) -> float | None:
        return q(lt.get(tool, {}).get(key), "p50")

    cmp(
        f"launch -> {N_SIDECARS} sidecars + main: <= 1/10 of supervisord (ms)",
        p50("pyinit", "launch_ms"),
        p50("supervisord", "launch_ms"),
        lambda r: r <= 0.1,
    )
    cmp(
        "SIGTERM -> gone: <= 1/10 of supervisord (ms)",
        p50("pyinit", "stop_ms"),
        p50("supervisord", "stop_ms"),
        lambda r: r <= 0.1,
    )
    cmp(
        "SIGTERM -> gone: <= 2x s6-svscan (ms)",
        p50("pyinit", "stop_ms"),
        p50("s6-svscan", "stop_ms"),
        lambda r: r <= 2,
    )
    # The marginal cost from the first sidecar on: since issue 16 a target without items
    # never loads trio, so RSS0 lacks the event loop that any sidecar brings once.
    per = per_sidecar_kb(res["idle"], "pyinit, 1 sidecar", N_SIDECARS - 1)
    rows.append(
        [
            "PID 1 RSS per sidecar (RSS10 - RSS1) / 9 <= 150 kB",
            f"{fmt(per)} kB",
            verdict(None if per is None else per <= 150),
        ]
    )
    ten = res["idle"]["configs"].get("pyinit, 10 sidecars", {})
    sw = ten.get("switches")
    rows.append(
        [
            f"idle wake-ups of PID 1, {N_SIDECARS} sidecars, over {res['idle']['seconds']:g} s: 0",
            "n/a" if sw is None else f"{fmt(sw)}",
            verdict(None if sw is None else sw == 0),
        ]
    )
    rt = res["relay"]["tools"]

    def lps(tool: str) -> float | None:
        value = rt.get(tool, {}).get("lines_per_s")
        return None if value is None else float(value)

    cmp("relay lines/s >= 10x honcho", lps("pyinit"), lps("honcho"), lambda r: r >= 10)
    cmp(
        "relay lines/s >= 1/5 of supervisord", lps("pyinit"), lps("supervisord"), lambda r: r >= 0.2
    )
    cpu = rt.get("pyinit", {}).get("cpu_ms_per_mb")
    rows.append(
        [
            "relay: PID 1 CPU <= 10 ms/MB",
            f"{fmt(cpu)} ms/MB",
            verdict(None if cpu is None else cpu <= 10),
        ]
    )
    py = rt.get("pyinit", {})
    if "ok" in py:
        clean = py["missing"] == 0 and py["dup"] == 0 and py["bad"] == 0
        rows.append(
            [
                "relay: no line lost, duplicated, merged, split or unprefixed",
                f"{py['ok']:,} ok; missing {py['missing']}, dup {py['dup']}, bad {py['bad']}",
                verdict(clean),
            ]
        )
    sc = res["signals"]["configs"]
    cmp(
        "SIGUSR1 p50 with 2 flooding sidecars <= 3x tini (us)",
        q(sc.get("pyinit, 2 flooding sidecars", {}).get("usr1_us"), "p50"),
        q(sc.get("tini, no sidecars", {}).get("usr1_us"), "p50"),
        lambda r: r <= 3,
    )
    return "## Issue 10 goals\n\n" + table(
        ["goal", "measured (pyinit vs reference)", "verdict"], rows
    )
