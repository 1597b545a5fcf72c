"""PID 1's memory under log relaying (issue 15, item 9): floods against a stalled stdout; a soak.

Two measures, pyinit PID 1 of its own pid namespace (`unshare --pid --fork --mount-proc
--kill-child`), sidecars written in Python (the interpreter running this script):

  flood  pyinit's stdout is a pipe nobody reads.  One sidecar with a 32-character name
         floods it for a few seconds: empty lines, 1 MiB lines, no newline at all, or lines
         of carriage returns.  Reported: PID 1's peak RSS (VmHWM) minus the same session's
         with a sidecar that wrote one line (idle).  Goal: at most 4 MB over idle.
  soak   10 sidecars, one writing 1,000 lines/s of 100 bytes, the others a line a second;
         pyinit's stdout read by this script, every line checked (its prefix, its length).
         PID 1's RSS, threads and fds sampled every few seconds; the growth over the last
         two thirds as the slope of a least-squares line, in MB an hour.  Goal: <= 2 MB/h
         over at least 10 minutes.

  python3 benchmarks/relay_memory.py flood [--seconds S]
  python3 benchmarks/relay_memory.py soak [--minutes M] [--env NAME=VALUE ...]
  python3 benchmarks/relay_memory.py quick      (both, short: the smoke test's mode)

PYINIT (the environment) names the command that runs pyinit, split on spaces; the default is
this interpreter with `-m pyinit` and this checkout on PYTHONPATH.  Output: a Markdown table
and, with --json FILE, the raw numbers.  Needs root (pid namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from control_env import private_control_socket

ROOT = Path(__file__).resolve().parent.parent
LONG_NAME = "x" * 32
NS_PREFIX = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
SOAK_RATE = 1000
SOAK_SIDECARS = 10
LINE_BYTES = 100

WRITER = """
import os, sys
kind = sys.argv[1]
data = {
    "empty": b"\\n" * 65536,
    "mib": b"y" * (1 << 20) + b"\\n",
    "nonewline": b"z" * 65536,
    "cr": (b"\\r" * 99 + b"\\n") * 650,
}[kind]
while True:
    os.write(1, data)
"""

PACED = """
import os, sys, time
rate = float(sys.argv[1])
line = sys.argv[2].encode().ljust(int(sys.argv[3]) - 1, b".") + b"\\n"
start = time.monotonic()
sent = 0
while True:
    due = int((time.monotonic() - start) * rate) + 1
    while sent < due:
        os.write(1, line)
        sent += 1
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
"""

FLOODS = {
    "empty lines, 32-char name": "empty",
    "1 MiB lines": "mib",
    "no newline": "nonewline",
    "CR-heavy (99 CRs a line)": "cr",
}


def pyinit_command() -> tuple[list[str], dict[str, str]]:
    """The argv prefix that runs pyinit, and the environment it needs."""
    env = dict(os.environ)
    if "PYINIT" in os.environ:
        return os.environ["PYINIT"].split(), env
    env["PYTHONPATH"] = str(ROOT)
    return [sys.executable, "-m", "pyinit"], env


def status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, VmHWM (kB) and Threads of pid, from /proc/PID/status; {} when gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def fd_count(pid: int) -> int:
    """Open fds of pid (-1 when gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def ns_init(unshare: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Host pid of the namespace's PID 1: the only child of `unshare --fork`."""
    path = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            kids = path.read_text().split()
            if kids:
                return int(kids[0])
        time.sleep(0.005)
    raise RuntimeError("the namespace's PID 1 did not appear")


@contextlib.contextmanager
def session(
    args: list[str], stdout: int, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """pyinit ARGS as PID 1 of a new pid namespace: (unshare, host pid of PID 1); killed after."""
    prefix, env = pyinit_command()
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [*NS_PREFIX, *prefix, *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        yield proc, ns_init(proc)
    finally:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)


def main_argv() -> list[str]:
    """The main: a sleep long enough for any measure."""
    return ["--", "sleep", "100000"]


def peak_over_session(sidecar: list[str], seconds: float) -> dict[str, int]:
    """PID 1's status after `seconds` with `sidecar` relayed into a pipe nobody reads."""
    read_end, write_end = os.pipe()
    try:
        args = ["--stop-timeout", "1", "--sidecar", " ".join([LONG_NAME, "--", *sidecar])]
        with session([*args, *main_argv()], write_end) as (_, pid1):
            time.sleep(seconds)
            return status(pid1)
    finally:
        os.close(read_end)
        os.close(write_end)


def flood(seconds: float) -> dict[str, Any]:
    """VmHWM of PID 1: idle, then under each flood, stdout stalled."""
    py = sys.executable
    idle = peak_over_session(["sh", "-c", "'echo one line; exec sleep 100000'"], seconds)
    rows: dict[str, Any] = {"idle": idle}
    for title, kind in FLOODS.items():
        got = peak_over_session([py, "-c", shlex.quote(WRITER), kind], seconds)
        got["over_idle_kb"] = got.get("VmHWM", 0) - idle.get("VmHWM", 0)
        rows[title] = got
    return rows


class Reader(threading.Thread):
    """Reads pyinit's stdout, checking every relayed line: `NAME | ` and LINE_BYTES long."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.lines = 0
        self.bad = 0
        self.bad_sample = b""

    def run(self) -> None:
        """Count and check lines until EOF."""
        pending = b""
        with open(self.fd, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    name, sep, text = line.partition(b" | ")
                    if sep and len(text) == LINE_BYTES - 1 and text.startswith(name):
                        self.lines += 1
                    else:
                        self.bad += 1
                        self.bad_sample = self.bad_sample or line[:120]


def slope_mb_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, kB) samples, in MB an hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    num = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return num / den * 3600 / 1024 if den else 0.0


def soak(minutes: float, every: float, rate: int, extra_env: dict[str, str]) -> dict[str, Any]:
    """RSS of PID 1 while 10 sidecars are relayed (one at `rate` lines/s) for `minutes`."""
    py = sys.executable
    args = ["--stop-timeout", "1"]
    for i in range(SOAK_SIDECARS):
        name = f"s{i:02d}"
        paced = f"{py} -c {shlex.quote(PACED)} {rate if i == 0 else 1} {name} {LINE_BYTES}"
        args += ["--sidecar", f"{name} -- {paced}"]
    read_end, write_end = os.pipe()
    reader = Reader(read_end)
    reader.start()
    samples: list[dict[str, Any]] = []
    try:
        with session([*args, *main_argv()], write_end, extra_env) as (_, pid1):
            os.close(write_end)
            write_end = -1
            deadline = time.monotonic() + 30
            while reader.lines < rate and time.monotonic() < deadline:
                time.sleep(0.1)  # pyinit and the sidecars are up: the first second relayed
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < minutes * 60:
                got = status(pid1)
                lines = reader.lines
                samples.append(
                    {"t": round(elapsed, 1), "fds": fd_count(pid1), "lines": lines, **got}
                )
                time.sleep(every)
    finally:
        if write_end >= 0:
            os.close(write_end)
    reader.join(timeout=15)
    tail = [s for s in samples if s["t"] >= minutes * 60 / 3 and "RssAnon" in s]
    return {
        "minutes": minutes,
        "rate": rate,
        "env": extra_env,
        "first": samples[0] if samples else {},
        "at_third": next((s for s in samples if s["t"] >= minutes * 60 / 3), {}),
        "last": samples[-1] if samples else {},
        "growth_mb_per_hour_last_two_thirds": {
            key: round(slope_mb_per_hour([(s["t"], s[key]) for s in tail]), 2)
            for key in ("VmRSS", "RssAnon")
        },
        "lines": reader.lines,
        "bad_lines": reader.bad,
        "bad_sample": reader.bad_sample.decode("latin-1"),
        "samples": samples,
    }


def mb(kb: int | None) -> str:
    """kB as MB with one decimal ('?' when unknown)."""
    return "?" if kb is None else f"{kb / 1024:.1f}"


def report_flood(rows: dict[str, Any]) -> str:
    """The flood table, in Markdown."""
    out = ["| flood (stdout stalled) | PID 1 VmHWM, MB | over idle, MB |", "|---|---:|---:|"]
    out.append(f"| idle (one line) | {mb(rows['idle'].get('VmHWM'))} | |")
    for title in FLOODS:
        row = rows[title]
        out.append(f"| {title} | {mb(row.get('VmHWM'))} | {row['over_idle_kb'] / 1024:+.1f} |")
    return "\n".join(out)


def report_soak(result: dict[str, Any]) -> str:
    """The soak table, in Markdown: VmRSS, and RssAnon (RSS without evictable file pages)."""
    first, third, last = result["first"], result["at_third"], result["last"]
    env = " ".join(f"{k}={v}" for k, v in result["env"].items()) or "(default)"
    growth = result["growth_mb_per_hour_last_two_thirds"]
    rows = [
        "| soak | lines/s | minutes | measure | start / at 1/3 / end, MB "
        "| growth over the last 2/3, MB/h | threads | fds | lines relayed (bad) |",
        "|---|---:|---:|---|---|---:|---|---|---|",
    ]
    for key in ("VmRSS", "RssAnon"):
        rows.append(
            f"| {env} | {result['rate']} | {result['minutes']:g} | {key} | "
            f"{mb(first.get(key))} / {mb(third.get(key))} / {mb(last.get(key))} | "
            f"{growth[key]:+.2f} | {first.get('Threads')} -> {last.get('Threads')} | "
            f"{first.get('fds')} -> {last.get('fds')} | {result['lines']} ({result['bad_lines']}) |"
        )
    return "\n".join(rows)


def main() -> int:
    """Run the measures the command line names; print Markdown."""
    private_control_socket()  # never the host's /run/pyinit
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["flood", "soak", "quick"])
    parser.add_argument("--seconds", type=float, default=4.0, help="each flood's length")
    parser.add_argument("--minutes", type=float, default=10.0, help="the soak's length")
    parser.add_argument("--every", type=float, default=5.0, help="soak sampling period, s")
    parser.add_argument("--rate", type=int, default=SOAK_RATE, help="the busy sidecar's lines/s")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for pyinit")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    opts = parser.parse_args()
    # A TERM (kill, timeout) unwinds: each session's namespace is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    extra_env = dict(item.partition("=")[::2] for item in opts.env)
    raw: dict[str, Any] = {}
    if opts.what == "quick":
        opts.seconds, opts.minutes, opts.every = 1.5, 0.1, 1.0
    if opts.what in ("flood", "quick"):
        raw["flood"] = flood(opts.seconds)
        print(report_flood(raw["flood"]))
    if opts.what in ("soak", "quick"):
        raw["soak"] = soak(opts.minutes, opts.every, opts.rate, extra_env)
        print(report_soak(raw["soak"]))
    if opts.json:
        opts.json.write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
