"""The measurements: each returns plain data (dicts/lists) that run.py renders.

Every subprocess has a timeout; a measurement that fails for one init records
the reason in that init's row instead of aborting the run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from setup_env import Environment, Init, ns_prefix
from summary import percentile

Row = dict[str, Any]


def summarize(values: list[float]) -> dict[str, float]:
    """n, min, median, p99, max and mean of values."""
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def mono_ns() -> int:
    """CLOCK_MONOTONIC in ns, the clock the C helper uses."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# --------------------------------------------------------------------------
# a. exec mode: hyperfine


def exec_commands(env: Environment) -> list[tuple[str, list[str]]]:
    """(label, argv) for the exec-mode start-up comparison."""
    cmds: list[tuple[str, list[str]]] = [("gosu nobody /bin/true", ["gosu", "nobody", "/bin/true"])]
    for i, interp in enumerate(env.interpreters):
        tag = "pyenv" if i == 0 else "Debian"
        base = "/usr/bin/python3" if tag == "Debian" else interp.python
        cmds.append((f"[{tag}] python3 -I -S -c pass", [base, "-I", "-S", "-c", "pass"]))
        cmds.append((f"[{tag}] python3 -I -c pass", [base, "-I", "-c", "pass"]))
        cmds.append((f"[{tag}] python3 -c pass", [interp.python, "-c", "pass"]))
        if interp.pyinit:
            cmds.append(
                (
                    f"[{tag}] pyinit --user nobody -- /bin/true",
                    [interp.pyinit, "--user", "nobody", "--", "/bin/true"],
                )
            )
    return cmds


def exec_startup(env: Environment, runs: int, warmup: int, rounds: int = 1) -> dict[str, Any]:
    """Wall time of each exec-mode command with ``hyperfine -N`` (ms).

    The runs are split into `rounds` hyperfine invocations whose samples are
    merged, so a burst of load from elsewhere on the machine hits every command
    rather than the one that happened to be running.
    """
    cmds = exec_commands(env)
    per_round = max(1, runs // rounds)
    times: dict[str, list[float]] = {label: [] for label, _ in cmds}
    for r in range(rounds):
        out = env.workdir / f"hyperfine{r}.json"
        argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup)]
        argv += ["--runs", str(per_round), "--export-json", str(out)]
        for label, cmd in cmds:
            argv += ["--command-name", label, " ".join(cmd)]
        timeout = 30 + len(cmds) * (per_round + warmup) * 0.5
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            return {"error": "hyperfine not installed"}
        except subprocess.TimeoutExpired:
            return {"error": f"hyperfine timed out after {timeout:.0f} s"}
        if proc.returncode != 0:
            return {"error": f"hyperfine exited {proc.returncode}: {proc.stderr.strip()[-400:]}"}
        for res in json.loads(out.read_text())["results"]:
            times[res["command"]] += [t * 1000 for t in res["times"]]
    rows: list[Row] = [
        {"label": label, "argv": cmd, **summarize(times[label])} for label, cmd in cmds
    ]
    return {"rows": rows, "runs": per_round * rounds, "rounds": rounds, "warmup": warmup}


# --------------------------------------------------------------------------
# a'. python -X importtime of the exec path


def parse_importtime(text: str) -> list[tuple[str, int, int, int]]:
    """(module, self_us, cumulative_us, depth) for each ``import time:`` line."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            self_us, cum_us = int(parts[0]), int(parts[1])
        except ValueError:  # the header line
            continue
        name = parts[2]
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((name.strip(), self_us, cum_us, depth))
    return rows


def importtime(env: Environment, reps: int) -> list[Row]:
    """Per interpreter: the fastest of reps ``-X importtime`` runs of the exec path."""
    results: list[Row] = []
    for i, interp in enumerate(env.interpreters):
        tag = "pyenv" if i == 0 else "Debian"
        if not interp.pyinit:
            results.append({"interpreter": tag, "error": interp.note})
            continue
        best: list[tuple[str, int, int, int]] | None = None
        for _ in range(reps):
            try:
                proc = subprocess.run(
                    [
                        interp.python,
                        "-X",
                        "importtime",
                        interp.pyinit,
                        "--user",
                        "nobody",
                        "--",
                        "/bin/true",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                continue
            rows = parse_importtime(proc.stderr)
            if rows and (best is None or sum(r[1] for r in rows) < sum(r[1] for r in best)):
                best = rows
        if best is None:
            results.append({"interpreter": tag, "error": "no importtime output"})
            continue
        top = sorted((r for r in best if r[3] == 0), key=lambda r: -r[2])
        results.append(
            {
                "interpreter": tag,
                "python": interp.python,
                "modules": len(best),
                "total_ms": sum(r[1] for r in best) / 1000,
                "top_level": [(name, cum / 1000) for name, _s, cum, _d in top[:10]],
                "top_self": [
                    (name, s / 1000) for name, s, _c, _d in sorted(best, key=lambda r: -r[1])[:8]
                ],
                "pyinit_ms": sum(r[1] for r in best if r[0].startswith("pyinit")) / 1000,
            }
        )
    return results


# --------------------------------------------------------------------------
# namespace sessions


class SessionError(RuntimeError):
    """The init or its namespace did not come up as expected."""


def find_ns_init(unshare_pid: int, timeout: float = 10.0) -> int:
    """Host pid of the namespace's PID 1: the only child of ``unshare --fork``."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children")
    while time.monotonic() < deadline:
        try:
            kids = path.read_text().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.001)
    raise SessionError("the namespace's PID 1 did not appear")


@contextmanager
def ns_session(
    argv: list[str], timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run argv as PID 1 of a new pid namespace; yield (unshare process, host pid of PID 1).

    On leaving, whatever is still running is killed (unshare --kill-child takes
    the namespace down with it).
    """
    proc = subprocess.Popen(
        [*ns_prefix(), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        yield proc, find_ns_init(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


def wait_exit(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """The process's exit code, or None if it did not exit within timeout.

    Woken by the exit itself (a pidfd turns readable), not by ``Popen.wait(timeout=)``,
    which polls after sleeping 1, 2, 4, 8, 16 ms...: a duration measured with it is
    rounded up to its next poll (7 or 15 ms after the wait began, say).
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # reaped already, or no pidfds here: Popen's own wait
        pidfd = None
    if pidfd is not None:
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(timeout * 1000):
                return None
        finally:
            os.close(pidfd)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------
# b. supervise mode: launch to target exec, and the whole ``INIT -- true`` run


def supervise_startup(env: Environment, reps: int) -> list[Row]:
    """Per init: launch of ``unshare ... INIT -- stamp`` to the target's first instruction."""
    assert env.helper is not None
    helper = str(env.helper)
    stamp = env.workdir / "stamp"
    candidates = [("none (target is PID 1)", None), *[(i.name, i) for i in env.inits]]
    to_exec: dict[str, list[float]] = {name: [] for name, _ in candidates}
    whole: dict[str, list[float]] = {name: [] for name, _ in candidates}
    codes: dict[str, set[int]] = {name: set() for name, _ in candidates}
    for _ in range(reps):  # interleaved: load bursts hit every init alike
        for name, init in candidates:
            if init is not None and not init.available:
                continue
            target = [helper, "stamp", str(stamp)]
            argv = [*ns_prefix(), *(init.argv(target) if init else target)]
            stamp.unlink(missing_ok=True)
            t0 = mono_ns()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            code = wait_exit(proc, 30)
            t_end = mono_ns()
            if code is None:
                proc.kill()
                proc.wait(5)
            codes[name].add(-1 if code is None else code)
            try:
                t_exec = int(stamp.read_text())
            except (OSError, ValueError):
                continue
            to_exec[name].append((t_exec - t0) / 1e6)
            whole[name].append((t_end - t0) / 1e6)
    rows: list[Row] = []
    for name, init in candidates:
        if init is not None and not init.available:
            rows.append({"init": name, "error": init.note})
        elif not to_exec[name]:
            rows.append({"init": name, "error": f"target never ran (exit codes {codes[name]})"})
        else:
            rows.append(
                {
                    "init": name,
                    "to_exec": summarize(to_exec[name]),
                    "whole": summarize(whole[name]),
                    "exit_codes": sorted(codes[name]),
                }
            )
    return rows


# --------------------------------------------------------------------------
# c. signal forwarding latency


def _parse_send(text: str) -> tuple[list[float], float | None, int]:
    usr1: list[float] = []
    term: float | None = None
    lost = 0
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["usr1"] and len(parts) == 2:
            usr1.append(int(parts[1]) / 1000)
        elif parts[:1] == ["term"] and len(parts) == 2:
            term = int(parts[1]) / 1000
        elif parts[:1] == ["lost"]:
            lost += 1
    return usr1, term, lost


def signal_session(
    env: Environment, init: Init | None, samples: int, settle_ms: int, gap_us: int, n: int
) -> Row:
    """One signal-latency session: the helper's target under ``init`` (or alone, for None).

    The helper sends ``samples`` SIGUSR1, ``gap_us`` apart after ``settle_ms``,
    to PID 1 of the session (or the bare target), then SIGTERM.  Returns the
    raw latencies in microseconds, kill() to the target's handler:
    ``{"usr1": [...], "term": us or None, "lost": count, "exit_code": code}``,
    or ``{"error": why}``.  ``n`` names this session's FIFO in the workdir.
    Used by :func:`signal_latency` and by the sidecars section's signal goal.
    """
    assert env.helper is not None
    helper = str(env.helper)
    fifo = env.workdir / f"sig{n}.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    target = [helper, "sigtarget", str(fifo)]
    send_argv = [helper, "send", "PID", str(fifo), str(samples), str(settle_ms), str(gap_us)]
    send_timeout = 30 + samples * (gap_us / 1e6 + 0.01) + settle_ms / 1000
    try:
        if init is None:
            proc = subprocess.Popen(target, stdin=subprocess.DEVNULL)
            try:
                send_argv[2] = str(proc.pid)
                send = subprocess.run(
                    send_argv, capture_output=True, text=True, timeout=send_timeout, check=False
                )
                code = wait_exit(proc, 15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        else:
            with ns_session(init.argv(target)) as (proc, pid):
                send_argv[2] = str(pid)
                send = subprocess.run(
                    send_argv, capture_output=True, text=True, timeout=send_timeout, check=False
                )
                code = wait_exit(proc, 15)
    except (SessionError, subprocess.TimeoutExpired) as e:
        return {"error": str(e) or type(e).__name__}
    usr1, term, lost = _parse_send(send.stdout)
    if not usr1:
        return {"error": f"no samples; {send.stderr.strip()[:200]}"}
    return {"usr1": usr1, "term": term, "lost": lost, "exit_code": code}


def signal_latency(
    env: Environment, samples: int, settle_ms: int, gap_us: int, rounds: int = 1
) -> list[Row]:
    """Per init: kill(PID 1, USR1) to the target's handler entry (us), then SIGTERM.

    The samples are split over `rounds` sessions per init, run interleaved
    across the inits so that load from elsewhere hits them alike.
    """
    candidates = [("none (kill the target directly)", None), *[(i.name, i) for i in env.inits]]
    per_round = max(1, samples // rounds)
    sessions: dict[str, list[Row]] = {name: [] for name, _ in candidates}
    for r in range(rounds):
        for n, (name, init) in enumerate(candidates):
            if init is not None and not init.available:
                continue
            sessions[name].append(
                signal_session(env, init, per_round, settle_ms, gap_us, n * 100 + r)
            )
    rows: list[Row] = []
    for name, init in candidates:
        if init is not None and not init.available:
            rows.append({"init": name, "error": init.note})
            continue
        good = [x for x in sessions[name] if "error" not in x]
        if not good:
            rows.append({"init": name, "error": "; ".join(x["error"] for x in sessions[name])})
            continue
        terms = [x["term"] for x in good if x["term"] is not None]
        rows.append(
            {
                "init": name,
                "usr1": summarize([v for x in good for v in x["usr1"]]),
                "term_us": statistics.median(terms) if terms else None,
                "lost": sum(x["lost"] for x in good),
                "exit_code": ",".join(sorted({str(x["exit_code"]) for x in good})),
                "errors": [x["error"] for x in sessions[name] if "error" in x],
            }
        )
    return rows


# --------------------------------------------------------------------------
# d. zombie storm


def _one_storm(env: Environment, init: Init, orphans: int, settle: float, n: int) -> Row:
    assert env.helper is not None
    helper = str(env.helper)
    done = env.workdir / f"storm{n}.done"
    go = env.workdir / f"storm{n}.go"
    done.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    target = [helper, "storm", str(orphans), str(done), str(go)]
    with ns_session(init.argv(target)) as (proc, pid):
        sampler = subprocess.Popen(
            [helper, "zsample", str(pid), str(done), "60000", "1000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(settle)
        go.touch()
        try:
            out, _ = sampler.communicate(timeout=70)
        except subprocess.TimeoutExpired:
            sampler.kill()
            out, _ = sampler.communicate()
        os.kill(pid, signal.SIGTERM)
        code = wait_exit(proc, 15)
    try:
        start, end = (int(x) for x in done.read_text().split())
    except (OSError, ValueError):
        return {"error": "the storm did not finish"}
    samples = [(int(t), int(z)) for t, z in (line.split() for line in out.splitlines())]
    during = [z for t, z in samples if t >= start]
    cleared = next((t for t, z in samples if t >= end and z == 0), None)
    return {
        "peak": max(during, default=0),
        "storm_ms": (end - start) / 1e6,
        "clear_after_ms": None if cleared is None else max(0.0, (cleared - end) / 1e6),
        "total_ms": None if cleared is None else (cleared - start) / 1e6,
        "samples": len(during),
        "exit_code": code,
    }


def zombies(env: Environment, orphans: int, reps: int, settle: float) -> list[Row]:
    """Per init: peak zombies parented to PID 1 during a storm, and time until none are left."""
    rows: list[Row] = []
    results: dict[str, list[Row]] = {init.name: [] for init in env.inits}
    for r in range(reps):  # interleaved: load bursts hit every init alike
        for n, init in enumerate(env.inits):
            if not init.available:
                continue
            try:
                res = _one_storm(env, init, orphans, settle, n * 100 + r)
            except (SessionError, subprocess.TimeoutExpired) as e:
                res = {"error": str(e) or type(e).__name__}
            results[init.name].append(res)
    for init in env.inits:
        if not init.available:
            rows.append({"init": init.name, "error": init.note})
            continue
        runs = [x for x in results[init.name] if "error" not in x]
        errors = [x["error"] for x in results[init.name] if "error" in x]
        if not runs:
            rows.append({"init": init.name, "error": "; ".join(errors)})
            continue

        def med(key: str, runs: list[Row] = runs) -> float | None:
            vals = [x[key] for x in runs if x[key] is not None]
            return statistics.median(vals) if vals else None

        rows.append(
            {
                "init": init.name,
                "orphans": orphans,
                "reps": len(runs),
                "peak": max(x["peak"] for x in runs),
                "peak_median": med("peak"),
                "storm_ms": med("storm_ms"),
                "clear_after_ms": med("clear_after_ms"),
                "total_ms": med("total_ms"),
                "uncleared": sum(1 for x in runs if x["clear_after_ms"] is None),
                "exit_codes": sorted({x["exit_code"] for x in runs}, key=str),
            }
        )
    return rows


# --------------------------------------------------------------------------
# e/f. idle wake-ups and RSS


def _proc_counters(pid: int) -> dict[str, int]:
    """Context switches summed over the process's threads, plus memory (kB) and threads."""
    counters = {"voluntary": 0, "nonvoluntary": 0, "threads": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        counters["threads"] += 1
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                counters["voluntary"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                counters["nonvoluntary"] += int(line.split()[1])
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            counters[key] = int(value.split()[0])
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                counters["Pss"] = int(line.split()[1])
    except OSError:
        pass
    return counters


def idle(env: Environment, seconds: float, settle: float) -> list[Row]:
    """All inits at once, each with a sleeping target: wake-ups/s and memory of PID 1."""
    assert env.helper is not None
    target = [str(env.helper), "idle"]
    rows: list[Row] = []
    sessions: list[tuple[Init, Any, subprocess.Popen[bytes], int]] = []
    try:
        for init in env.inits:
            if not init.available:
                rows.append({"init": init.name, "error": init.note})
                continue
            sess = ns_session(init.argv(target))
            try:
                proc, pid = sess.__enter__()
            except SessionError as e:
                rows.append({"init": init.name, "error": str(e)})
                sess.__exit__(None, None, None)
                continue
            sessions.append((init, sess, proc, pid))
        time.sleep(settle)
        before = {pid: (_proc_counters(pid), time.monotonic()) for _i, _s, _p, pid in sessions}
        time.sleep(seconds)
        for init, _sess, _proc, pid in sessions:
            after = _proc_counters(pid)
            b, t_b = before[pid]
            elapsed = time.monotonic() - t_b
            rows.append(
                {
                    "init": init.name,
                    "seconds": elapsed,
                    "voluntary_per_s": (after["voluntary"] - b["voluntary"]) / elapsed,
                    "nonvoluntary_per_s": (after["nonvoluntary"] - b["nonvoluntary"]) / elapsed,
                    "threads": after["threads"],
                    "rss_kb": after.get("VmRSS"),
                    "anon_kb": after.get("RssAnon"),
                    "pss_kb": after.get("Pss"),
                    "hwm_kb": after.get("VmHWM"),
                }
            )
        for init, _sess, proc, pid in sessions:
            os.kill(pid, signal.SIGTERM)
            code = wait_exit(proc, 15)
            for row in rows:
                if row["init"] == init.name:
                    row["exit_code_on_term"] = code
    finally:
        for _init, sess, _proc, _pid in sessions:
            sess.__exit__(None, None, None)
    order = {init.name: i for i, init in enumerate(env.inits)}
    rows.sort(key=lambda r: order.get(r["init"], 99))
    return rows
