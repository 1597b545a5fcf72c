"""Benchmark environment: machine facts, tools, interpreters, the C helper, the inits.

Everything here is bounded (every subprocess has a timeout) and leaves the
repository alone: build products go to a temporary directory, the Debian-Python
virtualenv to a cache directory outside the work tree.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from control_env import private_control_socket

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every benchmark imports this module: none may create /run/pyinit on the host.
private_control_socket()
BENCH_DIR = Path(__file__).resolve().parent
HELPER_SOURCE = BENCH_DIR / "bench_helper.c"
MINIMAL_INIT = BENCH_DIR / "minimal_init.py"
DEBIAN_PYTHON = "/usr/bin/python3"
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyinit-bench"


def run_text(argv: list[str], timeout: float = 10.0) -> str:
    """Run argv and return stdout+stderr stripped; '' if it cannot run or times out."""
    try:
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip()


def first_line(text: str) -> str:
    """The first line of text, or 'not available'."""
    return text.splitlines()[0].strip() if text.strip() else "not available"


@dataclass
class Interpreter:
    """A Python interpreter and the pyinit entry script that runs on it."""

    label: str
    python: str
    pyinit: str | None
    version: str = ""
    note: str = ""

    @property
    def available(self) -> bool:
        """True when pyinit can be run with this interpreter."""
        return self.pyinit is not None


@dataclass
class Init:
    """One init under test: the argv that precedes ``-- TARGET...``."""

    name: str
    prefix: list[str]
    kind: str  # "reference", "pyinit" or "floor"
    available: bool = True
    note: str = ""

    def argv(self, target: list[str]) -> list[str]:
        """The init's command line for running target."""
        return [*self.prefix, "--", *target]


@dataclass
class Environment:
    """What the measurements need: paths, interpreters, inits, machine facts."""

    workdir: Path
    helper: Path | None
    interpreters: list[Interpreter]
    inits: list[Init]
    facts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def compile_helper(workdir: Path) -> tuple[Path | None, str]:
    """Compile bench_helper.c into workdir with gcc; (path, '') or (None, why)."""
    return compile_c(workdir, HELPER_SOURCE)


def compile_c(workdir: Path, source: Path) -> tuple[Path | None, str]:
    """gcc -O2 SOURCE into workdir, once (reused after); (path, '') or (None, why)."""
    out = workdir / source.stem
    if out.exists():
        return out, ""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None, "gcc not found"
    try:
        proc = subprocess.run(
            [gcc, "-O2", "-Wall", "-o", str(out), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"gcc failed: {e}"
    if proc.returncode != 0:
        return None, f"gcc failed: {proc.stderr.strip()[:300]}"
    return out, ""


def _is_python_script(path: Path) -> bool:
    """True for a console script whose shebang names a Python interpreter (not a shim)."""
    try:
        with path.open("rb") as f:
            head = f.readline()
    except OSError:
        return False
    return head.startswith(b"#!") and b"python" in head


def write_entry_script(path: Path, python: str, module: str = "pyinit.__main__") -> Path:
    """Write a console-script-like entry running MODULE's main() (pyinit's by default) on python."""
    path.write_text(
        f"#!{python}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        f"from {module} import main\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main())\n"
    )
    path.chmod(0o755)
    return path


def installed_entry(python: str, name: str) -> str | None:
    """The console script NAME installed beside python and running on it, else None."""
    installed = Path(python).parent / name
    if installed.is_file() and _is_python_script(installed):
        head = installed.read_text().splitlines()[0]
        if head[2:].strip() and Path(head[2:].strip()).resolve() == Path(python).resolve():
            return str(installed)
    return None


def imports_this_checkout(entry: str) -> bool:
    """True when the console script ENTRY runs this checkout's pyinit.

    An editable install of another worktree (or a stale one) would otherwise
    be measured in place of the code under test.
    """
    code = "import pyinit; print(pyinit.__file__)"
    head = Path(entry).read_text().splitlines()[0][2:].strip()
    found = run_text([head, "-I", "-c", code]) if head else ""
    return found.startswith(str(REPO_ROOT / "pyinit"))


def primary_interpreter(python: str, workdir: Path) -> Interpreter:
    """The interpreter the harness was given (default: its own), with its pyinit entry."""
    version = first_line(run_text([python, "-c", "import sys; print(sys.version)"]))
    label = f"{python} ({version.split()[0] if version else '?'})"
    check = run_text([python, "-c", "import pyinit, sys; print(pyinit.__file__)"])
    if not check.endswith("__init__.py"):
        return Interpreter(label, python, None, version, "pyinit not importable")
    installed = installed_entry(python, "pyinit")
    if installed and imports_this_checkout(installed):
        return Interpreter(label, python, installed, version, "installed entry script")
    entry = write_entry_script(workdir / "pyinit-primary", python)
    return Interpreter(label, python, str(entry), version, "generated entry script")


def _dependency_pins(python: str) -> list[str]:
    """trio/psutil pinned to the versions the primary interpreter has (fair comparison)."""
    code = (
        "from importlib.metadata import version\n"
        "for n in ('trio', 'psutil'):\n"
        "    try: print(f'{n}=={version(n)}')\n"
        "    except Exception: print(n)\n"
    )
    out = run_text([python, "-c", code])
    pins = [line.strip() for line in out.splitlines() if line.strip()]
    return pins or ["trio", "psutil"]


def debian_interpreter(
    venv: Path, primary_python: str, workdir: Path, log: list[str]
) -> Interpreter:
    """Debian's /usr/bin/python3 in a venv with trio+psutil and a .pth to this checkout.

    Built once (about 15 s, needs the package index) and reused; the checkout is
    put on sys.path by a one-line .pth, so the venv always runs the current code.
    """
    if not Path(DEBIAN_PYTHON).exists():
        return Interpreter("debian", DEBIAN_PYTHON, None, "", f"{DEBIAN_PYTHON} missing")
    version = first_line(run_text([DEBIAN_PYTHON, "-c", "import sys; print(sys.version)"]))
    label = f"{DEBIAN_PYTHON} venv ({version.split()[0] if version else '?'})"
    vpy = venv / "bin" / "python3"
    if not vpy.exists():
        log.append(f"building the Debian-Python venv in {venv} (one-time)")
        made = subprocess.run(
            [DEBIAN_PYTHON, "-m", "venv", str(venv)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if made.returncode != 0:
            why = "python3 -m venv failed (apt-get install python3-venv?)"
            return Interpreter(label, DEBIAN_PYTHON, None, version, why)
    ok = run_text([str(vpy), "-c", "import trio, psutil; print('ok')"], timeout=30)
    if ok != "ok":
        pins = _dependency_pins(primary_python)
        log.append(f"installing {' '.join(pins)} into {venv}")
        try:
            subprocess.run(
                [str(vpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Interpreter(label, str(vpy), None, version, "pip install timed out")
        ok = run_text([str(vpy), "-c", "import trio, psutil; print('ok')"], timeout=30)
        if ok != "ok":
            return Interpreter(label, str(vpy), None, version, "trio/psutil install failed")
    site = run_text([str(vpy), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    if site:
        Path(site, "pyinit_checkout.pth").write_text(f"{REPO_ROOT}\n")
    # The entry script lives in this run's workdir: two checkouts benchmarked
    # at once share the venv but each runs its own code.
    entry = write_entry_script(workdir / "pyinit-debian", str(vpy))
    code = (
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); import pyinit; print(pyinit.__file__)"
    )
    check = run_text([str(vpy), "-I", "-c", code])
    if not check.startswith(str(REPO_ROOT)):
        return Interpreter(label, str(vpy), None, version, f"venv imports pyinit from {check!r}")
    return Interpreter(label, str(vpy), str(entry), version, f"venv {venv}")


def pyinit_supervise_works(entry: str, timeout: float = 30.0) -> tuple[bool, str]:
    """Does ``pyinit --mode supervise -- true`` run as PID 1 of a new pid namespace?"""
    argv = [*ns_prefix(), entry, "--mode", "supervise", "--", "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"`pyinit --mode supervise -- true` did not finish in {timeout:.0f} s"
    except OSError as e:
        return False, str(e)
    if proc.returncode != 0:
        err = first_line(proc.stderr)
        return False, f"`pyinit --mode supervise -- true` exited {proc.returncode}: {err}"
    return True, ""


def ns_prefix() -> list[str]:
    """Run what follows as PID 1 of a new pid namespace; it dies if unshare is killed."""
    return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def build_inits(interpreters: list[Interpreter], primary_python: str) -> list[Init]:
    """The inits for the supervise-mode measurements, references first."""
    inits: list[Init] = []
    for name in ("tini", "dumb-init", "catatonit"):
        path = shutil.which(name)
        inits.append(
            Init(name, [path or name], "reference", path is not None, "" if path else "missing")
        )
    for interp in interpreters:
        name = "pyinit" if interp is interpreters[0] else "pyinit (Debian py)"
        if not interp.available:
            inits.append(Init(name, [], "pyinit", False, interp.note))
            continue
        assert interp.pyinit is not None
        works, why = pyinit_supervise_works(interp.pyinit)
        inits.append(Init(name, [interp.pyinit, "--mode", "supervise"], "pyinit", works, why))
    floor_python = DEBIAN_PYTHON if Path(DEBIAN_PYTHON).exists() else primary_python
    inits.append(
        Init(
            "minimal Python init",
            [floor_python, "-I", "-S", str(MINIMAL_INIT)],
            "floor",
            True,
            f"{floor_python} -I -S benchmarks/minimal_init.py",
        )
    )
    return inits


def _tool_version(argv: list[str]) -> str:
    return first_line(run_text(argv))


def machine_facts(interpreters: list[Interpreter]) -> dict[str, str]:
    """Kernel, CPUs, memory, load, interpreter and tool versions, date, checkout."""
    facts: dict[str, str] = {}
    facts["date (UTC)"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M")
    facts["kernel"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["CPU"] = f"{os.cpu_count()} x {model or 'unknown'}"
    facts["CPUs usable"] = str(len(os.sched_getaffinity(0)))
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        facts["memory"] = f"{int(mem) // 1024} MiB"
    except (OSError, IndexError, ValueError):
        pass
    facts["load average (start)"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for interp in interpreters:
        facts[f"python: {interp.label}"] = (
            f"{interp.version.split()[0] if interp.version else '?'}; pyinit entry: "
            f"{interp.pyinit or 'not available'} ({interp.note})"
        )
    facts["harness python"] = sys.version.split()[0]
    facts["gosu"] = _tool_version(["gosu", "--version"])
    facts["tini"] = _tool_version(["tini", "--version"])
    facts["dumb-init"] = _tool_version(["dumb-init", "--version"])
    facts["catatonit"] = _tool_version(["catatonit", "--version"])
    facts["hyperfine"] = _tool_version(["hyperfine", "--version"])
    facts["gcc"] = _tool_version(["gcc", "--version"])
    facts["unshare"] = _tool_version(["unshare", "--version"])
    pyinit_version = run_text(
        [interpreters[0].python, "-c", "import pyinit; print(pyinit.__version__)"]
    )
    commit = run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = run_text(
        ["git", "--no-optional-locks", "-C", str(REPO_ROOT), "status", "--porcelain", "-uno"]
    )
    facts["pyinit"] = f"{first_line(pyinit_version)} at commit {commit or '?'}" + (
        " + uncommitted changes" if dirty else ""
    )
    return facts
