"""The probe runner: a small helper child of PID 1 that forks the ``exec:`` probes.

Forking PID 1 for every ``exec:`` probe call cost it ~1.6 ms of CPU a call,
three quarters of it in the kernel: the page-table copy of a ~27 MB process
and the copy-on-write faults PID 1 takes afterwards on every page it writes.
So a plan with an ``exec:`` probe (``ready=`` or ``alive=``, sidecar or main)
forks this runner once, early, while PID 1 is still small (before trio is
imported); it holds the plan already, as a forked copy, and forks each probe
from its own small address space.  docs/design.md ("The probe runner").

The protocol, over a private socketpair, one line each way:

* PID 1 -> runner: ``SEQ INDEX BOUND`` (run probe ``INDEX`` of
  :func:`probe_table`, kill its group after ``BOUND`` seconds);
* runner -> PID 1: ``SEQ CODE`` or ``SEQ CODE MESSAGE`` (its exit code; 125
  with why when it could not be forked).

The runner is synchronous (``select.poll`` over its socket and one pidfd per
running probe), reaps its own children, and exits when its socket reaches
EOF: PID 1 gone, or done (:meth:`RunnerClient.close` at the stop), killing
what it still runs first.  PID 1's side (:class:`RunnerClient`) falls back to
forking the probe itself, for good, once the runner is gone or silent.

No trio at module level: the runner is forked before trio is imported.
"""

from __future__ import annotations

import os
import signal
import time

from pyinit.errors import EXIT_SETUP_FAILED
from pyinit.plan.build import SESSION_DETACHED
from pyinit.run.spawn import fork_failure, fork_helper, start_item
from pyinit.run.target import leave_start_directory
from pyinit.stopping import kill_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket
    from collections.abc import Sequence

    import trio

    from pyinit.plan import Plan
    from pyinit.plan.build import Launch
    from pyinit.plan.services import Item, Probe
    from pyinit.run.reaper import Reaper, Watched

#: The key of a probe in the table: (the item's name, or "" for the main; its argv).
ProbeKey = tuple[str, tuple[str, ...]]

#: A request or answer line longer than this is garbage (PID 1 sends ~20 bytes).
MAX_LINE = 256
#: An answer later than its bound plus this means the runner is not answering.
ANSWER_GRACE = 1.0


# --- the table both sides build from the same plan ---------------------------------


def main_probe_launch(plan: Plan, command: tuple[str, ...]) -> Launch:
    """The main's launch as its probe ``command`` runs: its own session, no inherited fds."""
    launch: Launch = plan.launch.replace(
        command=command, session=SESSION_DETACHED, keep_fds=(), listen_fds=0
    )
    return launch


def item_probe_launch(item: Item, command: tuple[str, ...]) -> Launch | None:
    """The item's launch as its probe ``command`` runs (None: the item has no launch)."""
    return None if item.launch is None else item.launch.replace(command=command)


def _exec_argv(probe: Probe | None) -> tuple[str, ...] | None:
    if probe is None or probe.kind != "exec" or not probe.argv:
        return None
    return tuple(probe.argv)


def probe_table(plan: Plan) -> list[tuple[ProbeKey, Launch]]:
    """Every ``exec:`` probe of the plan (ready= and alive=, items and main), in plan order.

    PID 1 and the runner (a forked copy) build it from the same plan: an
    index into it is all a request names.
    """
    table: list[tuple[ProbeKey, Launch]] = []
    seen: set[ProbeKey] = set()

    def add(key: ProbeKey, launch: Launch | None) -> None:
        if launch is not None and key not in seen:
            seen.add(key)
            table.append((key, launch))

    for item in plan.items:
        for probe in (item.ready, None if item.alive is None else item.alive.probe):
            argv = _exec_argv(probe)
            if argv is not None:
                add((item.name, argv), item_probe_launch(item, argv))
    for probe in (plan.ready, None if plan.alive is None else plan.alive.probe):
        argv = _exec_argv(probe)
        if argv is not None:
            add(("", argv), main_probe_launch(plan, argv))
    return table


# --- the protocol ----------------------------------------------------------------------


def parse_request(line: bytes) -> tuple[int, int, float] | None:
    """``SEQ INDEX BOUND`` as (seq, index, bound); None for anything else."""
    parts = line.split()
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    try:
        bound = float(parts[2])
    except ValueError:
        return None
    if not 0.0 < bound < 3600.0:
        return None
    return int(parts[0]), int(parts[1]), bound


def parse_answer(line: bytes) -> tuple[int, int, str] | None:
    """``SEQ CODE [MESSAGE]`` as (seq, code, message); None for anything else."""
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].lstrip(b"-").isdigit():
        return None
    message = parts[2].decode(errors="replace").strip() if len(parts) == 3 else ""
    return int(parts[0]), int(parts[1]), message


def split_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in ``buffer`` and the rest; an overlong rest is dropped as garbage."""
    *lines, rest = buffer.split(b"\n")
    if len(rest) > MAX_LINE:
        rest = b""
    return [line for line in lines if len(line) <= MAX_LINE], rest


# --- PID 1's side ------------------------------------------------------------------------


def fork_runner(plan: Plan, reaper: Reaper, mask: tuple[int, ...]) -> RunnerClient | None:
    """Fork the probe runner if the plan has an ``exec:`` probe; its client (None: not forked).

    Call before trio is imported, with every signal blocked (the runner
    keeps them blocked: only SIGKILL ends it early).  It is watched as one
    of pyinit's helpers: the reaper collects it, no stop takes it for a
    leftover.
    """
    table = probe_table(plan)
    if not table:
        return None
    launches = [launch for _key, launch in table]
    try:
        watched, ours = fork_helper(reaper, lambda fd: _serve(fd, launches, mask, plan))
    except OSError as e:
        from pyinit import log

        log.notice(f"exec: probes forked by pyinit itself (no probe runner: {fork_failure(e)})")
        return None
    ours.setblocking(False)
    index = {key: index for index, (key, _) in enumerate(table)}
    return RunnerClient(ours, watched, index, reaper)


class RunnerClient:
    """PID 1's end of the runner: send a request, await its answer (trio).

    One reader task (started at the first call, in ``nursery``) reads every
    answer and hands each to its caller; an answer whose caller gave up (its
    1 s bound) is dropped.  Once the runner is gone (EOF, a send refused) or
    silent (an answer overdue by :data:`ANSWER_GRACE`: it is killed), every
    call returns None: the caller forks the probe itself.
    """

    def __init__(
        self, sock: socket, watched: Watched, index: dict[ProbeKey, int], reaper: Reaper
    ) -> None:
        self._sock = sock
        self._reaper = reaper
        self._fd = sock.fileno()
        #: The runner's pid and, once reaped, its status.
        self.watched = watched
        self._index = index
        self._seq = 0
        #: seq -> (when sent, its bound), until its answer arrives (late ones included).
        self._sent: dict[int, tuple[float, float]] = {}
        self._waiting: dict[int, trio.Event] = {}
        self._answers: dict[int, tuple[int, str]] = {}
        self._reading = False
        self._broken = False
        self._closed = False

    @property
    def usable(self) -> bool:
        """Whether requests go to the runner (False once it is gone, silent or closed)."""
        return not (self._broken or self._closed)

    def index_of(self, key: ProbeKey) -> int | None:
        """The table index of the probe ``key`` (None: not the runner's, a plan it did not see)."""
        return self._index.get(key)

    async def run(self, index: int, bound: float, nursery: trio.Nursery) -> tuple[int, str] | None:
        """Have the runner run probe ``index``, killed after ``bound`` s: (exit code, message).

        None when the runner cannot answer (the caller forks the probe itself).
        """
        import trio

        if not self.usable or self._overdue():
            return None
        self._seq += 1
        seq = self._seq
        request = f"{seq} {index} {bound:g}\n".encode()
        try:
            sent = self._sock.send(request)
        except OSError:  # BlockingIOError included: a runner that reads nothing
            sent = 0
        if sent != len(request):  # a part of a line would garble the next one
            self._break("it does not take requests")
            return None
        self._sent[seq] = (time.monotonic(), bound)
        done = trio.Event()
        self._waiting[seq] = done
        if not self._reading:
            self._reading = True
            nursery.start_soon(self._read_answers)
        try:
            await done.wait()
        finally:
            self._waiting.pop(seq, None)
        return self._answers.pop(seq, None)

    def _overdue(self) -> bool:
        now = time.monotonic()
        if any(now > sent + bound + ANSWER_GRACE for sent, bound in self._sent.values()):
            self._break("it stopped answering")
            return True
        return False

    async def _read_answers(self) -> None:
        import trio

        buffer = b""
        try:
            while not self._closed:
                await trio.lowlevel.wait_readable(self._fd)
                try:
                    chunk = self._sock.recv(4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._break("it is gone")
                    return
                lines, buffer = split_lines(buffer + chunk)
                for line in lines:
                    self._take(line)
        except (OSError, trio.ClosedResourceError):
            if not self._closed:
                self._break("it is gone")
        finally:
            self._reading = False

    def _take(self, line: bytes) -> None:
        answer = parse_answer(line)
        if answer is None:
            return
        seq, code, message = answer
        self._sent.pop(seq, None)
        done = self._waiting.get(seq)
        if done is not None:
            self._answers[seq] = (code, message)
            done.set()

    def _break(self, why: str) -> None:
        """The runner cannot be used any more: one notice, every waiting call falls back."""
        if self._broken or self._closed:
            return
        self._broken = True
        # Silent, or gone: either way it never serves again, and never lingers.
        self._reaper.kill(self.watched, signal.SIGKILL)
        from pyinit import log

        log.notice(f"probe runner pid {self.watched.pid}: {why}; exec: probes forked by pyinit")
        self._wake_all()

    def _wake_all(self) -> None:
        for done in self._waiting.values():
            done.set()

    def close(self) -> None:
        """End the runner (EOF on its socket: it kills what it runs and exits); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake_all()
        import trio

        try:  # noqa: SIM105  (no contextlib: imported before trio, on the launcher's path)
            trio.lowlevel.notify_closing(self._fd)
        except RuntimeError:  # not inside trio (the loop is gone): nobody waits on it
            pass
        self._sock.close()


# --- the runner (in the forked child) ----------------------------------------------------


def _serve(fd: int, launches: list[Launch], mask: tuple[int, ...], plan: Plan) -> None:
    """In the helper child (:func:`pyinit.run.spawn.fork_helper`): serve requests until EOF."""
    if plan.is_pid1:
        # As PID 1 does: no volume pinned; its probes still start where items do.
        leave_start_directory()
    Runner(fd, launches, mask).serve()


class _Running:
    __slots__ = ("bound_at", "error_fd", "pid", "pidfd", "seq")

    def __init__(self, seq: int, pid: int, error_fd: int, pidfd: int, bound_at: float) -> None:
        self.seq = seq
        self.pid = pid
        self.error_fd = error_fd
        self.pidfd = pidfd
        self.bound_at = bound_at
        # (Killed at its bound, it is still reaped through its pidfd.)


class Runner:
    """The runner's loop: requests in, probes forked, exit codes out."""

    def __init__(self, fd: int, launches: Sequence[Launch], mask: tuple[int, ...]) -> None:
        import select

        self.fd = fd
        self.launches = launches
        self.mask = mask
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.running: dict[int, _Running] = {}  # pidfd -> its probe

    def serve(self) -> None:
        """Until EOF on the socket; every probe still running is killed and reaped then."""
        buffer = b""
        try:
            while True:
                for fd, _events in self.poll.poll(self._timeout_ms()):
                    if fd != self.fd:
                        self._finish(self.running[fd])
                        continue
                    chunk = os.read(self.fd, 4096)
                    if not chunk:
                        return
                    lines, buffer = split_lines(buffer + chunk)
                    for line in lines:
                        self._start(parse_request(line))
                self._kill_overdue()
        finally:
            for probe in list(self.running.values()):
                kill_group(probe.pid, signal.SIGKILL)
                self._finish(probe, answer=False)

    def _timeout_ms(self) -> int:
        if not self.running:
            return -1
        soonest = min(probe.bound_at for probe in self.running.values())
        return max(0, int((soonest - time.monotonic()) * 1000) + 1)

    def _start(self, request: tuple[int, int, float] | None) -> None:
        if request is None:
            return  # garbage: PID 1 never sends it
        seq, index, bound = request
        if index >= len(self.launches):
            self._answer(seq, EXIT_SETUP_FAILED, "no such probe")
            return
        launch = self.launches[index]
        try:
            child = start_item(launch, self.mask, {}, {}, launch.env)
        except OSError as e:
            self._answer(seq, EXIT_SETUP_FAILED, f"probe not run: {fork_failure(e)}")
            return
        try:
            pidfd = os.pidfd_open(child.pid)
        except OSError:  # no descriptor to be had: wait for it here, bounded by the kill
            kill_group(child.pid, signal.SIGKILL)
            _, status = os.waitpid(child.pid, 0)
            child.forget_report()
            self._answer(seq, os.waitstatus_to_exitcode(status))
            return
        import select

        self.running[pidfd] = _Running(
            seq, child.pid, child.error_fd, pidfd, time.monotonic() + bound
        )
        self.poll.register(pidfd, select.POLLIN)

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for probe in self.running.values():
            if now >= probe.bound_at:
                kill_group(probe.pid, signal.SIGKILL)
                probe.bound_at = float("inf")  # killed once; its reap follows

    def _finish(self, probe: _Running, answer: bool = True) -> None:
        """Reap the probe, kill what it left in its group, close its fds, answer."""
        _, status = os.waitpid(probe.pid, 0)
        kill_group(probe.pid, signal.SIGKILL, reaped=True)
        self.poll.unregister(probe.pidfd)
        del self.running[probe.pidfd]
        os.close(probe.pidfd)
        os.close(probe.error_fd)  # unread, as ever: a probe that cannot exec exits with the code
        if answer:
            self._answer(probe.seq, os.waitstatus_to_exitcode(status))

    def _answer(self, seq: int, code: int, message: str = "") -> None:
        line = f"{seq} {code} {message}".rstrip() + "\n"
        data = line.encode(errors="replace")
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError:
            pass  # PID 1 is gone: the EOF ends this loop next
