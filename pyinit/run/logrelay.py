"""The log relay: sidecars' and tasks' output, line by line, as ``NAME | line`` (docs/services.md).

Each relayed stream is a pipe: the child writes its end as fd 1 or 2, a
trio task reads ours and splits lines.  Lines go out in batches (one write
per read) to pyinit's own stdout or stderr.

pyinit's stdout is shared with the main (the same open file description), so
it must not be switched to O_NONBLOCK: the writes happen in a worker thread,
one per output, and only the thread waits on a stalled reader.  Between the
readers and the writer is a bounded queue: when it is full the readers stop
reading their pipes, and the children block in their own writes
(backpressure), never PID 1's loop and never a line dropped.  Only at exit,
with the reader still stalled, what is queued is dropped and counted.

With services, pyinit's own lines take the same queue to stderr while the
loop runs (:meth:`LogRelay.own_lines`), from any thread: whole lines
among the relayed ones, never blocking the loop or the signal intake on a
stalled reader.  Past a bound they are dropped and counted.
"""

from __future__ import annotations

import contextlib
import os

import trio

from pyinit import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Batches queued per output before the readers stop reading (each at most READ_SIZE lines' worth).
QUEUE_BATCHES = 16
#: Bytes read from a pipe at once.
READ_SIZE = 65536
#: A line longer than this is cut and relayed in pieces.
MAX_LINE = 65536
#: Bytes of pyinit's own lines held while stderr is stalled; more are dropped and counted.
OWN_LINES_LIMIT = 262144


class Output:
    """One of pyinit's own output fds, written by a worker thread from a bounded queue."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.send, self._receive = trio.open_memory_channel[tuple[bytes, int]](QUEUE_BATCHES)
        self.queued_lines = 0
        self.idle = trio.Event()
        self.idle.set()

    async def put(self, data: bytes, lines: int) -> None:
        """Queue a batch; waits (backpressure) while the queue is full."""
        self.queued_lines += lines
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        await self.send.send((data, lines))

    async def write_forever(self) -> None:
        """Write queued batches in order, in a worker thread."""
        async for data, lines in self._receive:
            await trio.to_thread.run_sync(_write_all, self.fd, data, abandon_on_cancel=True)
            self.queued_lines -= lines
            if self.queued_lines == 0:
                self.idle.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # a closed stdout: nobody can read these lines
        view = view[written:]


class LogRelay:
    """Pipes for items' stdout/stderr, relayed with a prefix; one per supervisor."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._outputs: dict[int, Output] = {}
        self._open_pipes = 0
        self._all_closed = trio.Event()
        self._all_closed.set()
        self._own: list[bytes] = []
        self._own_bytes = 0
        self._own_waiting = trio.Event()
        self._own_taken = trio.Event()
        self._own_dropped = 0

    def own_lines(self, token: trio.lowlevel.TrioToken) -> Callable[[bytes], None]:
        """A :func:`pyinit.log.set_writer` writer: pyinit's lines into the stderr queue.

        Callable from any thread.  Lines wait in a buffer of OWN_LINES_LIMIT
        bytes, taken in batches; past it they are dropped and counted.  Once
        the loop is over it writes directly.
        """
        output = self._output(2)
        self._nursery.start_soon(self._pump_own, output)

        def write(line: bytes) -> None:
            try:
                token.run_sync_soon(self._buffer_own, line)
            except trio.RunFinishedError:
                log.write_line(line)

        return write

    def _buffer_own(self, line: bytes) -> None:
        if self._own_bytes + len(line) > OWN_LINES_LIMIT:
            self._own_dropped += 1
            return
        self._own.append(line)
        self._own_bytes += len(line)
        self._own_waiting.set()

    async def _pump_own(self, output: Output) -> None:
        while True:
            await self._own_waiting.wait()
            self._own_waiting = trio.Event()
            lines, self._own = self._own, []
            self._own_bytes = 0
            taken, self._own_taken = self._own_taken, trio.Event()
            taken.set()
            await output.put(b"".join(lines), len(lines))

    def adopt(self, name: str, read_ends: dict[int, int]) -> None:
        """Relay ``name``'s pipes from now on: {child fd 1/2: our read end}."""
        prefix = f"{name} | ".encode()
        for fd, read_fd in read_ends.items():
            self._open_pipes += 1
            self._all_closed = trio.Event() if self._all_closed.is_set() else self._all_closed
            self._nursery.start_soon(self._pump, read_fd, prefix, self._output(fd))

    def _output(self, fd: int) -> Output:
        if fd not in self._outputs:
            self._outputs[fd] = Output(fd)
            self._nursery.start_soon(self._outputs[fd].write_forever)
        return self._outputs[fd]

    async def _pump(self, read_fd: int, prefix: bytes, output: Output) -> None:
        os.set_blocking(read_fd, False)
        pending = b""
        try:
            while True:
                await trio.lowlevel.wait_readable(read_fd)
                try:
                    data = os.read(read_fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                if len(pending) > MAX_LINE:
                    lines.append(pending)
                    pending = b""
                if lines:
                    # One C-level join, not a Python loop over the lines: the
                    # GIL is held for microseconds per read, so a flood does
                    # not keep the signal intake waiting.
                    batch = prefix + (b"\n" + prefix).join(lines) + b"\n"
                    await output.put(batch, len(lines))
            if pending:
                await output.put(prefix + pending + b"\n", 1)  # the last line, unterminated
        finally:
            trio.lowlevel.notify_closing(read_fd)
            os.close(read_fd)
            self._open_pipes -= 1
            if self._open_pipes == 0:
                self._all_closed.set()

    async def drain(self, until: float) -> None:
        """Wait (until trio time ``until``) for every pipe's EOF and every line written.

        What is still queued then is dropped, with one line saying how much.
        """
        with trio.move_on_at(until):
            await self._all_closed.wait()
            while self._own:  # pyinit's own lines, still to be taken into the queue
                await self._own_taken.wait()
            for output in self._outputs.values():
                await output.idle.wait()
        log.set_writer(None)  # from here on pyinit's own lines go straight out
        self._own_dropped += len(self._own)
        dropped = sum(output.queued_lines for output in self._outputs.values())
        if dropped:
            with contextlib.suppress(OSError):
                log.warning(f"dropped {dropped} log line(s) of sidecars/tasks: output stalled")
        if self._own_dropped:
            with contextlib.suppress(OSError):
                log.warning(f"dropped {self._own_dropped} line(s) of pyinit's own: stderr stalled")
