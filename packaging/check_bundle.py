"""Check a standalone bundle needs only glibc from the image, and print its glibc floor.

    python3 packaging/check_bundle.py DEST/pyinit

Reads every ELF file in the folder with ``readelf`` (binutils): each NEEDED
library must be in the folder or be one of glibc's; the highest ``GLIBC_x.y``
symbol version any of them asks for is the oldest glibc the bundle runs on.
The folder must hold both executables, ``pyinit`` and ``pyinitctl`` (ENTRIES).
The last line printed is ``glibc floor: 2.NN``; exit 1 (with one line per
problem) when an executable is missing or a library from outside the bundle is needed.  Used by
packaging/standalone.sh and by the tests (tests/e2e/test_e2e_standalone.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: The libraries glibc itself installs (any architecture's dynamic loader too).
GLIBC_LIBRARIES = frozenset(
    {
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libanl.so.1",
    }
)
#: The executables the folder ships, side by side, sharing _internal/.
ENTRIES = ("pyinit", "pyinitctl")
GLIBC_VERSION = re.compile(r"\bGLIBC_(\d+)\.(\d+)(?:\.\d+)?\b")
NEEDED = re.compile(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]")


def is_elf(path: Path) -> bool:
    """True for a regular file that starts with the ELF magic."""
    if not path.is_file() or path.is_symlink():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def elf_files(bundle: Path) -> list[Path]:
    """Every ELF file under the bundle folder, sorted."""
    return sorted(p for p in bundle.rglob("*") if is_elf(p))


def readelf(*args: str) -> str:
    """readelf's output (binutils), C locale."""
    return subprocess.run(
        ["readelf", "--wide", *args],
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    ).stdout


def needed_libraries(path: Path) -> list[str]:
    """The NEEDED entries of one ELF file's dynamic section."""
    return NEEDED.findall(readelf("--dynamic", str(path)))


def glibc_versions(path: Path) -> set[tuple[int, int]]:
    """The GLIBC_x.y versions one ELF file requires (its .gnu.version_r section)."""
    text = readelf("--version-info", str(path))
    needs = text.split("Version needs section", 1)[1] if "Version needs section" in text else ""
    return {(int(a), int(b)) for a, b in GLIBC_VERSION.findall(needs)}


def is_glibc(name: str) -> bool:
    """True for a library glibc provides."""
    return name in GLIBC_LIBRARIES or name.startswith("ld-linux")


def check(bundle: Path) -> tuple[list[str], tuple[int, int]]:
    """(problems, glibc floor) for the bundle folder."""
    files = elf_files(bundle)
    inside = {p.name for p in files} | {p.name for p in bundle.rglob("*") if p.is_symlink()}
    problems: list[str] = []
    floor = (2, 0)
    for path in files:
        for lib in needed_libraries(path):
            if lib not in inside and not is_glibc(lib):
                problems.append(f"{path.relative_to(bundle)} needs {lib}, not in the bundle")
        floor = max([floor, *glibc_versions(path)])
    return problems, floor


def missing_entries(bundle: Path) -> list[str]:
    """One line per executable of ENTRIES that is not an executable ELF file in the folder."""
    return [
        f"{name} missing: the folder must hold it beside {ENTRIES[0]}"
        for name in ENTRIES
        if not (is_elf(bundle / name) and os.access(bundle / name, os.X_OK))
    ]


def main(argv: list[str]) -> int:
    """Print problems and the glibc floor; 1 if an entry is missing or a library is outside."""
    if len(argv) != 1:
        print("usage: check_bundle.py BUNDLE_FOLDER", file=sys.stderr)
        return 2
    bundle = Path(argv[0])
    problems, floor = check(bundle)
    problems = missing_entries(bundle) + problems
    for line in problems:
        print(f"check_bundle: {line}")
    print(f"glibc floor: {floor[0]}.{floor[1]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
