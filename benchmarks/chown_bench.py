"""Benchmark: pyinit's --chown against ``find -exec chown {} +`` and ``chown -R``.

Builds a tree of 100,000 entries (1,000 directories of 99 files, in 10
groups), then times, side by side in one run, two cases:

* **nothing to change**: the tree already belongs to the target (every
  container start after the first);
* **everything to change**: the tree belongs to root (the first start).

Each tool runs as a separate process, the way an entrypoint would run it
(pyinit: ``python -m pyinit --user U --chown DIR -- true``, so its start-up
is counted), and also in-process (``chown_tree`` alone).  Medians of
``--repeat`` runs, with ratios against find.  Run as root::

    python3 benchmarks/chown_bench.py [--entries 100000] [--repeat 7] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyinit.root.chown import chown_tree

UID = 1000
GID = 1000
FILES_PER_DIR = 99
DIRS_PER_GROUP = 100


def build_tree(top: Path, entries: int) -> int:
    """Directories of FILES_PER_DIR files under groups of DIRS_PER_GROUP; returns the count."""
    dirs = max(1, entries // (FILES_PER_DIR + 1))
    for d in range(dirs):
        path = top / f"g{d // DIRS_PER_GROUP}" / f"d{d}"
        path.mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (path / f"f{f}").touch()
    return sum(1 for _ in top.rglob("*")) + 1


def set_owner(top: Path, uid: int, gid: int) -> None:
    """Reset the tree's owner between runs (not timed)."""
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(top)], check=True, timeout=600)


def tools(top: Path) -> dict[str, Callable[[], None]]:
    """Each contender as a callable that does the whole job once."""
    spec = f"{UID}:{GID}"

    def run(argv: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run(argv, check=True, timeout=600, stdout=subprocess.DEVNULL)

    return {
        "pyinit --chown (process)": run(
            [sys.executable, "-m", "pyinit", "--user", spec, "--chown", str(top), "--", "true"]
        ),
        "chown_tree (in-process)": lambda: chown_tree(str(top), UID, GID) and None,
        # The official images' line, given the group too: pyinit always sets
        # uid and gid, and changing both costs the kernel more than the uid alone.
        "find ! -user -exec chown +": run(
            ["find", str(top), "!", "-user", str(UID), "-exec", "chown", spec, "{}", "+"]
        ),
        "chown -R": run(["chown", "-R", spec, str(top)]),
    }


def measure(top: Path, repeat: int, start_owner: tuple[int, int]) -> dict[str, list[float]]:
    """Time every tool ``repeat`` times, interleaved, from the given starting owner."""
    times: dict[str, list[float]] = {name: [] for name in tools(top)}
    for _ in range(repeat):
        for name, action in tools(top).items():
            set_owner(top, *start_owner)
            t0 = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - t0)
    return times


def report(case: str, times: dict[str, list[float]], markdown: bool) -> list[str]:
    """Lines with median, min and the ratio to find for each tool."""
    base = statistics.median(times["find ! -user -exec chown +"])
    lines = [f"\n### {case}\n"] if markdown else [f"\n{case}"]
    if markdown:
        lines += ["| tool | median | min | vs find |", "|---|---:|---:|---:|"]
    for name, values in times.items():
        med = statistics.median(values)
        cells = (name, f"{med * 1000:.0f} ms", f"{min(values) * 1000:.0f} ms", f"{med / base:.2f}x")
        lines.append(
            "| " + " | ".join(cells) + " |"
            if markdown
            else "  {:28} {:>8} {:>8} {:>6}".format(*cells)
        )
    return lines


def main() -> None:
    """Build the tree, run both cases, print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    work = Path(tempfile.mkdtemp(prefix="chown-bench-"))
    try:
        top = work / "tree"
        count = build_tree(top, args.entries)
        out = [
            f"tree: {count} entries ({count // (FILES_PER_DIR + 1)} directories), "
            f"repeat {args.repeat}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
        ]
        out += report("nothing to change (already owned)", measure(top, args.repeat, (UID, GID)),
                      args.markdown)  # fmt: skip
        out += report("everything to change (root-owned)", measure(top, args.repeat, (0, 0)),
                      args.markdown)  # fmt: skip
        print("\n".join(out))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
