"""Run pyinit as PID 1 of a fresh PID namespace, the way a container runtime would.

``unshare --pid --fork --mount-proc`` makes pyinit PID 1 with its own /proc.
unshare does not forward signals, so tests signal the namespace's PID 1
directly: its host pid is the only child of the unshare process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import sandbox
from sandbox import PROJECT_ROOT, PYINIT, UNSHARE_PID

#: ``unshare --pid --fork --mount-proc`` (see :data:`sandbox.UNSHARE_PID`).
UNSHARE = UNSHARE_PID
WAIT_SECONDS = 20.0
#: Targets often run as nobody, who cannot enter /root (where pyenv lives).
TARGET_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def wait_for(
    predicate: Callable[[], object], timeout: float = WAIT_SECONDS, what: str = ""
) -> None:
    """Poll ``predicate`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class Namespace:
    """pyinit running as PID 1 of a new PID namespace."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        pid1: bool = True,
        **popen: object,
    ) -> None:
        if pid1:
            sandbox.require_pid_namespace()
        argv = [*UNSHARE, *PYINIT, *args] if pid1 else [*PYINIT, *args]
        full_env = dict(os.environ if env is None else env)
        if not pid1:
            full_env.setdefault("PYINIT_CONTROL", "none")  # never the host's /run
        full_env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(
            argv,
            env=full_env,
            stdout=popen.pop("stdout", subprocess.PIPE),
            stderr=popen.pop("stderr", subprocess.PIPE),
            text=True,
            **popen,  # type: ignore[call-overload]
        )
        self.pid1 = pid1
        self._init_pid: int | None = None

    @property
    def init_pid(self) -> int:
        """The host pid of pyinit (the namespace's PID 1, or pyinit itself when not PID 1)."""
        if self._init_pid is None:
            if not self.pid1:
                self._init_pid = self.proc.pid
            else:
                children_file = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                wait_for(lambda: children_file.read_text().split(), what="unshare's child")
                self._init_pid = int(children_file.read_text().split()[0])
        return self._init_pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` to pyinit (as ``docker kill -s`` would)."""
        os.kill(self.init_pid, signum)

    def wait(self, timeout: float = WAIT_SECONDS) -> tuple[int, str, str]:
        """Wait for the namespace to end; returns (exit code, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=5)
            raise AssertionError(f"pyinit did not exit within {timeout}s; stderr:\n{err}") from None
        return self.proc.returncode, out or "", err or ""

    def kill(self) -> None:
        """Tear the namespace down (SIGKILL to its PID 1 kills everything in it)."""
        for pid in (self._init_pid, self.proc.pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
            self.proc.communicate(timeout=5)


def run_pyinit(
    args: Sequence[str],
    timeout: float = WAIT_SECONDS,
    pid1: bool = True,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run pyinit to completion (as PID 1 by default); returns (code, stdout, stderr)."""
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONPATH", str(PROJECT_ROOT))
    return sandbox.run_pyinit(*args, pid1=pid1, env=full_env, timeout=timeout)


def python_target(code: str) -> list[str]:
    """A target command running ``code`` with the same interpreter as the tests."""
    return [TARGET_PYTHON, "-c", code]


def zombies_in(pids: Sequence[int]) -> list[int]:
    """Which of ``pids`` are zombies right now."""
    found = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[0] == "Z":
            found.append(pid)
    return found


@contextlib.contextmanager
def unread_pipe() -> Iterator[tuple[int, int]]:
    """A pipe nobody reads: (read end, write end); a writer stalls once it is full."""
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)
