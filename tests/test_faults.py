"""Fault injection: pyinit as the real PID 1 of a PID namespace, in a hostile world.

Each test injects one fault (a target that ignores SIGTERM, 20,000 orphans, a
10,000-signal storm, a segfault, a hanging ``--post`` hook, closed or broken
stdio, a garbled /etc/passwd) and asserts what a user would see: pyinit's exit
code, no traceback, and that nothing is left running afterwards.

"Nothing left running" is checked from the host, after pyinit has exited:

* every run carries a unique marker in its environment, which every
  descendant inherits (even one that left the session): no process in /proc
  may still carry it;
* runs outside a PID namespace start in a new session: no process (zombies
  included) may still be in it;
* as PID 1, the target first records its PID namespace (``/proc/self/ns/pid``):
  no process may still be in that namespace, i.e. the namespace's PID 1 is gone.

Every wait is bounded.  The closed-stdio, dead-log-reader and malformed-passwd
cases are regression tests of issue 8 items 10, 8 and 11.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from pidns import PYINIT, TARGET_PYTHON, UNSHARE, wait_for
from sandbox import Sandbox, sandbox_available, scratch_dir

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and util-linux unshare for PID namespaces",
)

#: The environment variable whose value marks one run's processes.
MARKER = "PYINIT_FAULT_RUN"
#: Seconds a single run may take before the test kills it and fails.
RUN_TIMEOUT = 60.0
#: After pyinit exited: how long SIGKILLed leftovers may take to vanish.
SURVIVOR_GRACE = 2.0
#: A stop timeout short enough to keep the suite fast.
STOP_TIMEOUT = "0.5"


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch directory every user can write to (targets may run as uid 1000)."""
    with scratch_dir("pyinit-faults-", 0o777) as path:
        yield path


# --------------------------------------------------------------------------
# running pyinit and proving nothing is left


class Outcome(NamedTuple):
    """What a finished run left behind; ``code`` as a shell reports it (128+N for signal N)."""

    code: int
    stdout: str
    stderr: str


class Run:
    """pyinit started as PID 1 of a new PID namespace (or not), with chosen stdio."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        pid1: bool = True,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        close_fds: Sequence[int] = (),
        argv: Sequence[str] | None = None,
    ) -> None:
        """Start ``pyinit ARGS`` (or the full ``argv``) with fds in ``close_fds`` closed."""
        self.marker = uuid.uuid4().hex
        self.pid1 = pid1
        command = list(argv) if argv is not None else self._command(args, pid1)
        if close_fds:
            redirections = " ".join(f"{fd}>&-" for fd in close_fds)
            command = ["/bin/sh", "-c", f'exec "$@" {redirections}', "sh", *command]
        env = dict(os.environ)
        env[MARKER] = self.marker
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
            preexec_fn=_no_core_dumps,
        )

    @staticmethod
    def _command(args: Sequence[str], pid1: bool) -> list[str]:
        return [*UNSHARE, *PYINIT, *args] if pid1 else [*PYINIT, *args]

    @property
    def init_pid(self) -> int:
        """The host pid of pyinit: the namespace's PID 1 (unshare's child), or pyinit itself."""
        if not self.pid1:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        wait_for(lambda: children.read_text().split(), what="the namespace's PID 1")
        return int(children.read_text().split()[0])

    def wait(self, timeout: float = RUN_TIMEOUT) -> Outcome:
        """pyinit's exit code and output; kills everything and fails after ``timeout``."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"pyinit did not exit within {timeout}s; stderr:\n{err}") from None
        code = self.proc.returncode
        # In exec mode pyinit's process becomes the target: a shell shows its
        # death by signal N as 128+N, as pyinit does for a supervised target.
        return Outcome(code if code >= 0 else 128 - code, _text(out), _text(err))

    def kill(self) -> None:
        """SIGKILL every process of this run (cleanup of a failed test)."""
        for pid in survivors(self.marker, self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _no_core_dumps() -> None:
    # A segfaulting target must not leave a core file on the host.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def survivors(marker: str, session: int | None = None, pid_ns: str | None = None) -> list[int]:
    """Pids still carrying ``marker`` in their environment, in ``session``, or in ``pid_ns``."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        base = f"/proc/{entry}"
        if needle in _read(f"{base}/environ").split(b"\0"):
            found.append(int(entry))
            continue
        if session is not None:
            fields = _read(f"{base}/stat").rpartition(b")")[2].split()
            if len(fields) > 3 and int(fields[3]) == session:
                found.append(int(entry))
                continue
        if pid_ns is not None:
            with contextlib.suppress(OSError):
                if os.readlink(f"{base}/ns/pid") == pid_ns:
                    found.append(int(entry))
    return found


def describe(pids: list[int]) -> str:
    """`pid (comm) state` for each pid, for failure messages."""
    out = []
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
        comm = stat[stat.find("(") : stat.rfind(")") + 1]
        state = stat.rpartition(")")[2].split()[:1]
        out.append(f"{pid} {comm} {''.join(state)}")
    return ", ".join(out)


def assert_nothing_left(run: Run, ns_file: Path | None = None) -> None:
    """No process of ``run`` survives pyinit (bounded grace for SIGKILLed ones to vanish)."""
    pid_ns = None
    if ns_file is not None and ns_file.exists():
        pid_ns = ns_file.read_text().strip()
        assert pid_ns.startswith("pid:["), pid_ns
        assert pid_ns != os.readlink("/proc/self/ns/pid"), "the target ran in the host's namespace"
    session = run.proc.pid  # start_new_session: the run's own session
    deadline = time.monotonic() + SURVIVOR_GRACE
    left = survivors(run.marker, session, pid_ns)
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = survivors(run.marker, session, pid_ns)
    if left:
        what = describe(left)
        run.kill()
        raise AssertionError(f"processes outlived pyinit: {what}")


def in_namespace_probe(ns_file: Path, command: Sequence[str]) -> list[str]:
    """``command``, first recording its PID namespace in ``ns_file`` (it keeps its pid)."""
    script = 'readlink /proc/self/ns/pid > "$0" && exec "$@"'
    return ["/bin/sh", "-c", script, str(ns_file), *command]


def no_traceback(err: str) -> None:
    """pyinit's stderr holds no Python traceback."""
    assert "Traceback" not in err, err


def python(code: str) -> list[str]:
    """A target running ``code`` with an interpreter every uid can execute."""
    return [TARGET_PYTHON, "-I", "-c", textwrap.dedent(code)]


PID1_OR_NOT = pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])


# --------------------------------------------------------------------------
# a target that ignores SIGTERM


@PID1_OR_NOT
@pytest.mark.parametrize("with_child", [False, True], ids=["alone", "with-child"])
def test_target_ignoring_term_is_killed_at_the_stop_timeout(
    tmp_path: Path, pid1: bool, with_child: bool
) -> None:
    """TERM is ignored: SIGKILL after --stop-timeout, exit 137; a child ignoring TERM dies too."""
    ready, ns_file = tmp_path / "ready", tmp_path / "ns"
    body = 'sleep 600 & touch "$0"; wait' if with_child else 'touch "$0"; exec sleep 600'
    target = ["/bin/sh", "-c", f"trap '' TERM; {body}", str(ready)]
    run = Run(
        [
            "--mode",
            "supervise",
            "--stop-timeout",
            STOP_TIMEOUT,
            "--",
            *in_ns(pid1, ns_file, target),
        ],
        pid1=pid1,
    )
    try:
        wait_for(ready.exists, what="the target to start")
        os.kill(run.init_pid, signal.SIGTERM)
        code, _, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert code == 128 + signal.SIGKILL, err
    no_traceback(err)
    assert_nothing_left(run, ns_file)


def in_ns(pid1: bool, ns_file: Path, target: Sequence[str]) -> list[str]:
    """The target, with its PID namespace recorded when pyinit is PID 1."""
    return in_namespace_probe(ns_file, target) if pid1 else list(target)


# --------------------------------------------------------------------------
# 20,000 orphans

ORPHANS = 20_000

ORPHAN_SOURCE = r"""
/* orphans N CODE: double-fork N children that exit at once (each is reparented
 * to PID 1 or the subreaper, which alone can reap it), then exit CODE. */
#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    for (long i = 0; i < n; i++) {
        pid_t child = fork();
        if (child < 0) { usleep(200); i--; continue; } /* EAGAIN: let the reaper catch up */
        if (child == 0) {
            if (fork() == 0)
                _exit(0);
            _exit(0);
        }
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    return argc > 2 ? atoi(argv[2]) : 0;
}
"""

# A --post hook (exec'd by /bin/sh, so its parent is pyinit): waits up to 10 s
# until pyinit has no child but the hook, then records how many are left.
CHILDREN_LEFT_HOOK = textwrap.dedent("""
    import os, sys, time
    me, parent = os.getpid(), os.getppid()
    def others():
        left = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != me:
                try:
                    stat = open(f"/proc/{p}/stat").read()
                except OSError:
                    continue
                if int(stat.rpartition(")")[2].split()[1]) == parent:
                    left.append(p)
        return left
    deadline = time.monotonic() + 10
    while others() and time.monotonic() < deadline:
        time.sleep(0.05)
    open(sys.argv[1], "w").write(str(len(others())))
""")


@pytest.fixture(scope="module")
def orphan_maker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled orphan-storm target (skips without a C compiler)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs gcc for the orphan-storm target")
    directory = tmp_path_factory.mktemp("orphans")
    directory.chmod(0o755)
    source, binary = directory / "orphans.c", directory / "orphans"
    source.write_text(ORPHAN_SOURCE)
    subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], check=True, timeout=60)
    return binary


@PID1_OR_NOT
def test_twenty_thousand_orphans_are_reaped_and_the_exit_code_passes_through(
    tmp_path: Path, orphan_maker: Path, pid1: bool
) -> None:
    """The target double-forks 20,000 orphans and exits 7: all reaped, pyinit exits 7."""
    left, ns_file = tmp_path / "left", tmp_path / "ns"
    hook = f"exec {TARGET_PYTHON} -I -c '{CHILDREN_LEFT_HOOK}' {left}"
    target = [str(orphan_maker), str(ORPHANS), "7"]
    run = Run(
        ["--mode", "supervise", "--post", hook, "--", *in_ns(pid1, ns_file, target)], pid1=pid1
    )
    code, _, err = run.wait(timeout=90)
    assert code == 7, err
    no_traceback(err)
    assert left.read_text() == "0", "pyinit still had children (zombies) after the storm"
    assert_nothing_left(run, ns_file)


# --------------------------------------------------------------------------
# a 10,000-signal storm

STORM = 10_000

COUNTER = """
    import os, signal, sys, time
    received = 0
    def count(signum, frame):
        global received
        received += 1
    signal.signal(signal.SIGUSR1, count)
    ready, done, result = sys.argv[1:4]
    open(ready, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(done) and time.monotonic() < deadline:
        time.sleep(0.01)
    open(result, "w").write(str(received))
    sys.exit(42)
"""


@PID1_OR_NOT
def test_signal_storm_at_pyinit_the_target_survives(tmp_path: Path, pid1: bool) -> None:
    """10,000 x SIGUSR1 at pyinit from another process: forwarded, nobody dies, exit 42."""
    ready, done, result, ns_file = (tmp_path / n for n in ("ready", "done", "result", "ns"))
    target = [*python(COUNTER), str(ready), str(done), str(result)]
    run = Run(["--mode", "supervise", "--", *in_ns(pid1, ns_file, target)], pid1=pid1)
    try:
        wait_for(ready.exists, what="the counting target")
        usr1, pid = int(signal.SIGUSR1), run.init_pid
        storm = f"import os\nfor _ in range({STORM}): os.kill({pid}, {usr1})"
        sender = subprocess.run(
            [sys.executable, "-c", storm],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sender.returncode == 0, f"pyinit died during the storm: {sender.stderr}"
        time.sleep(0.2)  # let the last forwarded ones land before the target counts
        done.touch()
        code, _, err = run.wait()
    finally:
        if run.proc.poll() is None:
            run.kill()
    assert code == 42, err
    no_traceback(err)
    # Standard signals merge while pending: at least one arrived, never more than sent.
    assert 1 <= int(result.read_text()) <= STORM
    assert_nothing_left(run, ns_file)


# --------------------------------------------------------------------------
# a segfaulting target


@PID1_OR_NOT
def test_target_dying_of_sigsegv_gives_139(tmp_path: Path, pid1: bool) -> None:
    """A real segfault (a read of address 0) in the target: pyinit exits 128 + SIGSEGV."""
    ns_file = tmp_path / "ns"
    target = python("import ctypes; ctypes.string_at(0)")
    run = Run(["--mode", "supervise", "--", *in_ns(pid1, ns_file, target)], pid1=pid1)
    code, _, err = run.wait()
    assert code == 128 + signal.SIGSEGV, err
    no_traceback(err)
    assert_nothing_left(run, ns_file)


# --------------------------------------------------------------------------
# a hanging --post hook


@PID1_OR_NOT
@pytest.mark.parametrize(
    "hook",
    ["sleep 600", "trap '' TERM; sleep 600", "sleep 600 & wait"],
    ids=["sleeps", "ignores-term", "background-child"],
)
def test_hanging_post_hook_is_stopped_and_the_exit_code_kept(
    tmp_path: Path, pid1: bool, hook: str
) -> None:
    """A --post hook that never ends is stopped at the deadline; pyinit exits 5, as the target."""
    ns_file = tmp_path / "ns"
    target = ["/bin/sh", "-c", "exit 5"]
    args = ["--mode", "supervise", "--stop-timeout", STOP_TIMEOUT, "--post", hook, "--"]
    run = Run([*args, *in_ns(pid1, ns_file, target)], pid1=pid1)
    code, _, err = run.wait()
    assert code == 5, err
    no_traceback(err)
    assert_nothing_left(run, ns_file)


# --------------------------------------------------------------------------
# closed and broken stdio

MODES = pytest.mark.parametrize(
    ("mode", "pid1"),
    [("supervise", True), ("supervise", False), ("exec", False)],
    ids=["supervise-pid1", "supervise-subreaper", "exec"],
)


@MODES
def test_closed_stdout_the_target_still_runs(tmp_path: Path, mode: str, pid1: bool) -> None:
    """``pyinit ... >&-``: the target runs (its write to stdout fails) and its code is kept."""
    ran, ns_file = tmp_path / "ran", tmp_path / "ns"
    target = ["/bin/sh", "-c", 'echo to-closed-stdout; touch "$0"; exit 3', str(ran)]
    run = Run(["--mode", mode, "--", *in_ns(pid1, ns_file, target)], pid1=pid1, close_fds=[1])
    code, _, err = run.wait()
    assert code == 3, err
    assert ran.exists(), "the target never ran"
    no_traceback(err)
    assert_nothing_left(run, ns_file)


@MODES
def test_closed_stderr_with_verbose_logging(tmp_path: Path, mode: str, pid1: bool) -> None:
    """``pyinit -v ... 2>&-``: pyinit cannot log, but the target runs and its code is kept."""
    ran, ns_file = tmp_path / "ran", tmp_path / "ns"
    target = ["/bin/sh", "-c", 'touch "$0"; exit 3', str(ran)]
    run = Run(
        ["-v", "--mode", mode, "--", *in_ns(pid1, ns_file, target)],
        pid1=pid1,
        stderr=None,
        close_fds=[2],
    )
    code, _, _ = run.wait()
    assert code == 3
    assert ran.exists(), "the target never ran"
    assert_nothing_left(run, ns_file)


@contextlib.contextmanager
def dead_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader is gone (``| head -0`` without the race)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


@MODES
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (["yes"], 128 + signal.SIGPIPE),
        (
            python("""
                import sys
                try:
                    while True:
                        sys.stdout.write("x" * 4096)
                        sys.stdout.flush()
                except BrokenPipeError:
                    import os; os._exit(3)
            """),
            3,
        ),
    ],
    ids=["default-sigpipe", "handles-epipe"],
)
def test_broken_pipe_on_the_targets_stdout(
    tmp_path: Path, mode: str, pid1: bool, target: list[str], expected: int
) -> None:
    """The target writes into a pipe nobody reads: its own fate (SIGPIPE or EPIPE) is the code.

    ``yes`` dies of SIGPIPE (141) only if pyinit restored SIGPIPE's default
    disposition, which Python itself ignores.
    """
    ns_file = tmp_path / "ns"
    with dead_pipe() as pipe:
        run = Run(["--mode", mode, "--", *in_ns(pid1, ns_file, target)], pid1=pid1, stdout=pipe)
    code, _, err = run.wait()
    assert code == expected, err
    no_traceback(err)
    assert_nothing_left(run, ns_file)


@MODES
def test_dead_log_reader_does_not_hurt_a_healthy_target(
    tmp_path: Path, mode: str, pid1: bool
) -> None:
    """``pyinit -v ... 2>&1 | head -0``: pyinit's own logging hits EPIPE; the target exits 4."""
    ran, ns_file = tmp_path / "ran", tmp_path / "ns"
    target = ["/bin/sh", "-c", 'sleep 0.2; touch "$0"; exit 4', str(ran)]
    with dead_pipe() as pipe:
        run = Run(
            ["-v", "--mode", mode, "--", *in_ns(pid1, ns_file, target)],
            pid1=pid1,
            stdout=pipe,
            stderr=pipe,
        )
    code, _, _ = run.wait()
    assert code == 4
    assert ran.exists(), "the target never finished"
    assert_nothing_left(run, ns_file)


# --------------------------------------------------------------------------
# a garbled /etc/passwd


def random_bytes() -> bytes:
    """64 KiB of seeded random bytes: NULs, invalid UTF-8, stray colons and newlines."""
    return random.Random(8).randbytes(64 * 1024)


def malformed_lines() -> bytes:
    """Lines that look like passwd entries but are not, then a valid ``nobody``."""
    lines = [
        b"root",
        b"::::::",
        b"alice:x:\xc2\xb2:0:non-ASCII digit:/:/bin/sh",
        "evil:x:\u0661\u0662:\u0660:Arabic-Indic digits:/:/bin/sh".encode(),
        b"neg:x:-1:-1::/:/bin/sh",
        b"huge:x:99999999999999999999:0::/:/bin/sh",
        b"spaces:x: 7 : 7 ::/:/bin/sh",
        b"nul\0user:x:7:7::/:/bin/sh",
        b"\xff\xfe\xfd:x:8:8::/:/bin/sh",
        b"long:x:9:9:" + b"g" * 200_000 + b":/:/bin/sh",
        b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def garbled(tmp_path: Path) -> Iterator[Sandbox]:
    """A fixture user database whose passwd is replaced per test."""
    reason = sandbox_available()
    if reason is not None:
        pytest.skip(reason)
    box = Sandbox(tmp_path / "sb")
    yield box
    box.cleanup()


IDENTITY = ["/bin/sh", "-c", 'grep -E "^(Uid|Gid|Groups):" /proc/self/status; echo "HOME=$HOME"']


def run_in_sandbox(box: Sandbox, tmp_path: Path, args: Sequence[str]) -> tuple[Run, Outcome]:
    """``pyinit ARGS -- IDENTITY`` as PID 1 with the sandbox's passwd."""
    ns_file = tmp_path / "ns"
    argv = box.argv(
        [*PYINIT, *args, "--", *in_namespace_probe(ns_file, IDENTITY)], pid_namespace=True
    )
    run = Run([], argv=argv)
    outcome = run.wait()
    assert_nothing_left(run, ns_file)
    return run, outcome


def assert_numeric_user_ran(out: Outcome, uid: int, gid: int, home: str) -> None:
    """The identity probe ran as uid/gid with no supplementary groups and HOME."""
    assert out.code == 0, out.stderr
    fields = {
        key: value.split()
        for key, sep, value in (line.partition(":") for line in out.stdout.splitlines())
        if sep
    }
    assert fields["Uid"] == [str(uid)] * 4
    assert fields["Gid"] == [str(gid)] * 4
    assert fields["Groups"] in ([], [str(gid)])
    assert f"HOME={home}" in out.stdout


@pytest.mark.parametrize("content", [random_bytes(), b""], ids=["random-bytes", "empty"])
def test_garbled_passwd_numeric_user_runs(garbled: Sandbox, tmp_path: Path, content: bytes) -> None:
    """--user 1000 with a garbage passwd: no entry, so gid = pyinit's (0), no groups, HOME=/."""
    garbled.passwd.write_bytes(content)
    _, out = run_in_sandbox(garbled, tmp_path, ["--user", "1000"])
    assert_numeric_user_ran(out, 1000, 0, "/")
    no_traceback(out.stderr)


@pytest.mark.parametrize("content", [random_bytes(), b""], ids=["random-bytes", "empty"])
def test_garbled_passwd_named_user_is_one_line_and_125(
    garbled: Sandbox, tmp_path: Path, content: bytes
) -> None:
    """--user alice with a garbage passwd: unknown user, one ``pyinit: `` line, 125."""
    garbled.passwd.write_bytes(content)
    _, out = run_in_sandbox(garbled, tmp_path, ["--user", "alice"])
    assert out.code == 125, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyinit: "), out.stderr
    assert "--user" in lines[0] and "alice" in lines[0]
    assert "HOME=" not in out.stdout, "the target ran"


@pytest.mark.parametrize("spec", ["1000", "nobody"])
def test_malformed_passwd_lines_are_skipped(garbled: Sandbox, tmp_path: Path, spec: str) -> None:
    """Malformed lines (non-ASCII digits, signs, NULs, huge ids) are skipped, as gosu does."""
    garbled.passwd.write_bytes(malformed_lines())
    _, out = run_in_sandbox(garbled, tmp_path, ["--user", spec])
    if spec == "nobody":
        assert_numeric_user_ran(out, 65534, 65534, "/nonexistent")
    else:
        assert_numeric_user_ran(out, 1000, 0, "/")
    no_traceback(out.stderr)
