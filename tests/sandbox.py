"""Run commands against fixture users without touching the machine's own.

A :class:`Sandbox` owns a directory with a fixture ``passwd``, ``group``,
``nsswitch.conf`` (``files`` only) and ``home/``.  :meth:`Sandbox.run` starts
a command in a private mount namespace where those are bind-mounted over
``/etc/passwd``, ``/etc/group``, ``/etc/nsswitch.conf`` and ``/home``::

    unshare --mount --propagation private \\
        sh -c 'mount --bind "$1" /etc/passwd && ... && shift 4 && exec "$@"' sh F... COMMAND

With ``pid_namespace=True`` the command is also PID 1 of a new PID namespace
(``unshare --pid --fork --mount-proc``), the way a container runs its
entrypoint.  The bind mounts vanish with the namespace: nothing on the host
changes, whatever a test does.

Every run has a timeout.  On expiry the whole process group is killed, and
with a PID namespace its PID 1 too (which takes the namespace down), so no
test can hang on a stray process holding the output pipes.

The fixture database (see :data:`PASSWD` and :data:`GROUP`) has:

* ``redis`` (999:999), ``nobody`` (65534:65534), ``root``;
* ``alice`` (1000) in the member lists of ``audio`` (29), ``video`` (44)
  and ``staff`` (50); ``bob`` (1003) in ``audio``, ``staff``, ``wheel`` (10);
* ``nohome`` (1002), whose line stops before the home field;
* ``dup1`` and ``dup2``, both uid 1500 (first match wins for ``1500``);
* a user *named* ``1001`` with uid 2001, and a group named ``1001`` with
  gid 3001 (an all-digit field is always an id: ``--user 1001`` is uid 1001);
* ``devs`` (1500) whose member list has spaces: ``dave, carol``;
* comment lines, a blank line and NIS ``+``/``-`` lines (placed after the
  real entries: Docker's parser does not skip them, they parse as uid 0).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

#: The project root (``/work/main``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: How pyinit is started in tests: the interpreter running pytest, ``-m pyinit``.
PYINIT: tuple[str, ...] = (sys.executable, "-m", "pyinit")

#: Docker's default PATH; the environment every sandboxed command starts with.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Seconds a single sandboxed command may take before it is killed.
DEFAULT_TIMEOUT = 20.0

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# comment: fixture users only, the machine's own are never touched
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
redis:x:999:999::/var/lib/redis:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
1001:x:2001:2001:all digits:/home/digits:/bin/sh
nohome:x:1002:1002:No Home
bob:x:1003:1003:Bob:/home/bob:/bin/sh
carol:x:1004:1004:Carol:/home/carol:/bin/sh
dave:x:1005:1005:Dave:/home/dave:/bin/sh
dup1:x:1500:1500:first of two:/home/dup1:/bin/sh
dup2:x:1500:1600:second of two:/home/dup2:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin

+nisuser::::::
-baduser::::::
+::::::
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:bob
audio:x:29:alice,bob
video:x:44:alice
staff:x:50:bob,alice
# comment line
redis:x:999:
alice:x:1000:
nohome:x:1002:
bob:x:1003:
carol:x:1004:
dave:x:1005:
devs:x:1500:dave, carol
dup:x:1600:
digits:x:2001:
1001:x:3001:
nogroup:x:65534:

+:::
"""

NSSWITCH = """\
passwd: files
group: files
shadow: files
gshadow: files
hosts: files
"""

#: Homes created (mode 0755, owned by their user) under the sandbox's /home.
HOMES = {"alice": (1000, 1000), "bob": (1003, 1003), "dup1": (1500, 1500)}


class Result(NamedTuple):
    """What a finished command left: exit status and decoded output."""

    returncode: int
    stdout: str
    stderr: str


def base_environment(**extra: str) -> dict[str, str]:
    """A small, predictable environment: PATH, HOME=/root, LANG, no control socket, plus ``extra``.

    PYTHONPATH names this checkout, so ``python -m pyinit`` runs the code under
    test, never another installed copy.
    """
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(PROJECT_ROOT),
        # No control socket unless a test asks for one (tests/test_control.py):
        # never one in the host's /run (see PRIVATE_RUN for PID namespaces).
        "PYINIT_CONTROL": "none",
    }
    env.update(extra)
    return env


def run(
    argv: list[str] | tuple[str, ...],
    *,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    cwd: str = "/",
) -> Result:
    """Run ``argv`` in its own process group; returns (returncode, stdout, stderr).

    On timeout the process group (and the first child of a PID-namespace
    ``unshare``) is SIGKILLed and AssertionError is raised: a test never hangs.
    """
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=base_environment() if env is None else env,
        cwd=cwd,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = "", "(output lost: pipes still held after the kill)"
        raise AssertionError(
            f"timed out after {timeout}s: {argv!r}\nstdout: {out}\nstderr: {err}"
        ) from None
    return Result(proc.returncode, out, err)


#: ``python -S -X importtime -m pyinit``: only the interpreter's start-up and pyinit's imports.
PYINIT_IMPORTTIME = [sys.executable, "-S", "-X", "importtime", "-m", "pyinit"]


def imported_modules(importtime_stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported, read from its stderr."""
    return {
        line.split("|")[2].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def pyinit_imports(argv: list[str]) -> set[str]:
    """The modules ``python -m pyinit ARGV`` imports (it must exit 0), run without site."""
    env = base_environment(PYTHONPATH=str(PROJECT_ROOT))
    code, _, err = run([*PYINIT_IMPORTTIME, *argv], env=env)
    assert code == 0, err
    return imported_modules(err)


@contextlib.contextmanager
def scratch_dir(prefix: str, mode: int = 0o755) -> Iterator[Path]:
    """A new directory under /tmp with ``mode``, removed with its contents on leaving.

    pytest's ``tmp_path`` is root-only: a target running as another user
    cannot reach it.  0755 lets every fixture user in; 0777 lets them write.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(mode)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc/PID/task/PID/children)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s children (a namespace's PID 1), then its process group."""
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def python_for_any_user() -> str | None:
    """A Python >= 3.11 every uid can execute, to start pyinit as non-root.

    The interpreter running the tests may live under /root (pyenv), which
    other users cannot reach; then the system's /usr/bin/python3 is used
    with PYTHONPATH pointing at the project.  None when there is none.
    """
    check = "import sys, pyinit.cli; assert sys.version_info >= (3, 11)"
    for candidate in ("/usr/bin/python3", sys.executable):
        probe = run(
            [
                "setpriv",
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "env",
                f"PYTHONPATH={PROJECT_ROOT}",
                candidate,
                "-c",
                check,
            ],
            timeout=10,
        )
        if probe.returncode == 0:
            return candidate
    return None


def why_no_python_for_any_user() -> str:
    """The reason :func:`python_for_any_user` found nothing, naming the real cause."""
    probe = run(
        [
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "test",
            "-r",
            str(PROJECT_ROOT / "pyinit" / "__init__.py"),
        ],
        timeout=10,
    )
    if probe.returncode != 0:
        return (
            f"nobody cannot read the checkout at {PROJECT_ROOT}: clone elsewhere"
            " (e.g. /opt/src/pyinit, not under a 0700 home such as /root)"
        )
    return (
        f"no Python >= 3.11 that nobody can execute (tried /usr/bin/python3 and"
        f" {sys.executable}): apt-get install python3"
    )


class Sandbox:
    """Fixture /etc/passwd, /etc/group, /etc/nsswitch.conf and /home, bind-mounted per run."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            directory = tempfile.mkdtemp(prefix="pyinit-sandbox-")
        self.root = Path(directory)
        # Files and the directory must be readable by any target uid.
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.passwd = self._write("passwd", PASSWD)
        self.group = self._write("group", GROUP)
        self.nsswitch = self._write("nsswitch.conf", NSSWITCH)
        self.home = self.root / "home"
        self.home.mkdir(exist_ok=True)
        self.home.chmod(0o755)
        for name, (uid, gid) in HOMES.items():
            path = self.home / name
            path.mkdir(exist_ok=True)
            path.chmod(0o755)
            os.chown(path, uid, gid)

    def _write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        path.chmod(0o644)
        return path

    def write_passwd(self, text: str) -> None:
        """Replace the fixture passwd (for one test's special entries)."""
        self.passwd.write_text(text)

    def write_group(self, text: str) -> None:
        """Replace the fixture group file."""
        self.group.write_text(text)

    def argv(
        self, command: list[str] | tuple[str, ...], *, pid_namespace: bool = False
    ) -> list[str]:
        """The full command line that runs ``command`` inside the sandbox."""
        unshare = ["unshare", "--mount", "--propagation", "private"]
        if pid_namespace:
            unshare += ["--pid", "--fork", "--mount-proc"]
        run_tmpfs = " && mount -t tmpfs -o mode=755 tmpfs /run" if pid_namespace else ""
        script = (
            'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group'
            ' && mount --bind "$3" /etc/nsswitch.conf && mount --bind "$4" /home'
            f'{run_tmpfs} && shift 4 && exec "$@"'
        )
        return [
            *unshare,
            "/bin/sh",
            "-c",
            script,
            "sh",
            str(self.passwd),
            str(self.group),
            str(self.nsswitch),
            str(self.home),
            *command,
        ]

    def run(
        self,
        command: list[str] | tuple[str, ...],
        *,
        pid_namespace: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
        cwd: str = "/",
    ) -> Result:
        """Run ``command`` in the sandbox; returns (returncode, stdout, stderr)."""
        return run(
            self.argv(command, pid_namespace=pid_namespace),
            env=env,
            timeout=timeout,
            input=input,
            cwd=cwd,
        )

    def pyinit(
        self,
        *args: str,
        pid_namespace: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
    ) -> Result:
        """Run ``pyinit ARGS...`` in the sandbox (see :func:`run_pyinit`)."""
        return run_pyinit(
            *args, pid1=pid_namespace, sandbox=self, env=env, timeout=timeout, input=input
        )

    def cleanup(self) -> None:
        """Remove the sandbox directory."""
        shutil.rmtree(self.root, ignore_errors=True)


#: The host's /run is never pyinit's to touch in a test: its control socket
#: (default /run/pyinit/control.sock) goes to a private tmpfs on /run inside the
#: namespace.  ``exec "$@"`` keeps the command PID 1.
PRIVATE_RUN = 'mount -t tmpfs -o mode=755 tmpfs /run && exec "$@"'

#: How a test makes pyinit the real PID 1 of a new PID namespace, with its own /proc
#: and its own /run (see PRIVATE_RUN).
UNSHARE_PID: tuple[str, ...] = (
    "unshare",
    "--pid",
    "--fork",
    "--mount-proc",
    "/bin/sh",
    "-c",
    PRIVATE_RUN,
    "sh",
)

#: As UNSHARE_PID without the private /run, for tests that count processes (a pids
#: cgroup): the shell's fork of mount would count.  Pass PYINIT_CONTROL with it.
UNSHARE_PID_SHARED_RUN: tuple[str, ...] = ("unshare", "--pid", "--fork", "--mount-proc")


def without_host_control(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` (default: :func:`base_environment`) with PYINIT_CONTROL=none unless it names one."""
    env = base_environment() if env is None else dict(env)
    env.setdefault("PYINIT_CONTROL", "none")
    return env


@functools.cache
def pid_namespace_unavailable() -> str | None:
    """None when ``unshare --pid --fork --mount-proc`` works here, else why not (probed once)."""
    if os.geteuid() != 0:
        return "PID-namespace tests need root (unshare --pid --fork --mount-proc)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        probe = run([*UNSHARE_PID, "true"], timeout=10)
    except AssertionError as timed_out:
        return f"unshare --pid --fork --mount-proc hangs here: {timed_out}"
    if probe.returncode != 0:
        return f"unshare --pid --fork --mount-proc fails here: {probe.stderr.strip()}"
    return None


def require_pid_namespace() -> None:
    """Skip the calling test, with the reason, when PID namespaces are unavailable."""
    reason = pid_namespace_unavailable()
    if reason is not None:
        import pytest  # only tests call this; sandbox.py stays importable without pytest

        pytest.skip(reason)


def run_pyinit(
    *args: str,
    pid1: bool = False,
    sandbox: Sandbox | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    cwd: str = "/",
    prefix: tuple[str, ...] = (),
    python: str = PYINIT[0],
) -> Result:
    """Run ``[prefix...] python -m pyinit ARGS`` to completion: the one way tests start pyinit.

    ``pid1=True``: as the real PID 1 of a new PID namespace (skips with a reason
    where that is unavailable).  ``sandbox``: in its private mount namespace,
    with the fixture /etc/passwd and /etc/group.  ``env`` defaults to
    :func:`base_environment`.  Always bounded by ``timeout``: on expiry the
    process group and the namespace's PID 1 are killed and AssertionError says so.
    """
    if pid1:
        require_pid_namespace()
    else:
        env = without_host_control(env)
    command = [*prefix, python, *PYINIT[1:], *args]
    if sandbox is not None:
        argv = sandbox.argv(command, pid_namespace=pid1)
    else:
        argv = [*UNSHARE_PID, *command] if pid1 else command
    return run(argv, env=env, timeout=timeout, input=input, cwd=cwd)


def sandbox_available() -> str | None:
    """None when sandboxes can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "sandbox tests need root (unshare --mount, bind mounts, setuid)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = run(["unshare", "--mount", "--propagation", "private", "true"], timeout=10)
    if probe.returncode != 0:
        return f"unshare --mount fails here: {probe.stderr.strip()}"
    return None
