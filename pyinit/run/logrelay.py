"""The log relay: sidecars' and tasks' output, line by line, as ``NAME | line`` (docs/services.md).

Each relayed stream is a pipe: the child writes its end as fd 1 or 2, a
trio task reads ours and splits lines (:class:`Framer`).  Lines go out in
batches to pyinit's own stdout or stderr.

pyinit's stdout is shared with the main (the same open file description), so
it must not be switched to O_NONBLOCK: the writes happen in one long-lived
thread per output, and only that thread waits on a stalled reader.  Between
the readers and the writer is a queue bounded in bytes, counted after
prefixing and escaping (what PID 1 really holds): when it is full the readers
stop reading their pipes, and the children block in their own writes
(backpressure), never PID 1's loop and never a line dropped.  Only at exit,
with the reader still stalled, what is queued is dropped and counted.

One thread for the life of the output takes what is queued itself (one
writev) and wakes the loop through an eventfd: no thread hand-off per batch.
Both outputs' threads start with the loop (:meth:`LogRelay.start_outputs`):
a thread takes a pid, and a pids cgroup that fills up later must not keep a
line from being relayed.  If none can start at all, the loop writes the
lines itself (a stalled reader then stalls it) until one can.
Pipes are read with ``readv`` into one reused buffer: ``os.read(fd, N)``
allocates N bytes and shrinks them to what came, which fragmented the loop
thread's malloc arena until RSS grew for as long as lines were relayed
(docs/benchmarks.md, "Issue 15: relay memory").

A line in ``log=prefix`` mode cannot rewrite what a terminal shows before
it: control characters other than NUL, TAB and the line's end are escaped
(:func:`escape_controls`); every other byte, invalid UTF-8 included, is
relayed as it came.

With services, pyinit's own lines take the same queue to stderr while the
loop runs (:meth:`LogRelay.own_lines`), from any thread: whole lines
among the relayed ones, never blocking the loop or the signal intake on a
stalled reader.  Past a bound they are dropped and counted.  A process's
pipes are read only once pyinit's lines logged before they were adopted
are written, so its ``started`` line comes before its first relayed line.

``--log-time`` puts the time of the read before each line
(:class:`StampedFramer`); ``--log-format json`` makes each line one JSON
object (:class:`JsonFramer`, :mod:`pyinit.logformat`).  Either way the
queue's bound counts the bytes as written, times and JSON included.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading

import trio

from pyinit import log, logformat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Bytes (after prefixing and escaping) queued per output before the readers stop reading.
QUEUE_BYTES = 262144
#: Bytes of prefixes and newlines in one batch at most (an empty line costs a whole prefix).
BATCH_BYTES = 131072
#: Bytes read from a pipe at once.
READ_SIZE = 65536
#: A line longer than this is cut and relayed in pieces of this size.
MAX_LINE = 65536
#: Batches written at once (writev), well below the kernel's IOV_MAX of 1024.
_WRITEV_BATCHES = 64
#: Bytes of pyinit's own lines held while stderr is stalled; more are dropped and counted.
OWN_LINES_LIMIT = 262144

#: C0 controls a terminal acts on: all but NUL (ignored), TAB and LF (the line's end); and DEL.
_C0 = (*range(0x01, 0x09), *range(0x0B, 0x20), 0x7F)
#: Bytes that may need escaping: those, and 0xC2 (the lead byte of the C1 controls in UTF-8).
_SUSPECT = bytes([*_C0, 0xC2])
#: What each escaped control becomes: printable ASCII, which no terminal interprets.
_C0_ESCAPES = tuple((bytes([c]), b"\\x%02x" % c) for c in _C0 if c != 0x0D)
_C1_ESCAPES = tuple((b"\xc2" + bytes([c]), b"\\xc2\\x%02x" % c) for c in range(0x80, 0xA0))


def escape_controls(batch: bytes) -> bytes:
    """``batch`` with every control a terminal would act on shown as ``\\xNN`` (CR as ``\\r``).

    Escaped: C0 controls except NUL, TAB and LF, a CR not followed by LF, DEL,
    and the C1 controls as UTF-8 encodes them (0xC2 0x80-0x9F).  Every
    other byte, invalid UTF-8 included, stays as it is.  One C-level pass
    when there is nothing to escape, a few more when there is.
    """
    if len(batch.translate(None, _SUSPECT)) == len(batch):
        return batch
    batch = _escape_lone_crs(batch)
    for raw, shown in _C0_ESCAPES:
        if raw in batch:
            batch = batch.replace(raw, shown)
    if b"\xc2" in batch:
        for raw, shown in _C1_ESCAPES:
            if raw in batch:
                batch = batch.replace(raw, shown)
    return batch


def _escape_lone_crs(batch: bytes) -> bytes:
    """Every CR not followed by LF as ``\\r``; CRLF line ends stay as they are."""
    crs = batch.count(b"\r")
    if not crs:
        return batch
    crlfs = batch.count(b"\r\n")
    if not crlfs:
        return batch.replace(b"\r", b"\\r")
    if crlfs == crs:
        return batch
    return b"\r\n".join([part.replace(b"\r", b"\\r") for part in batch.split(b"\r\n")])


class Framer:
    """One pipe's bytes into prefixed, escaped batches of whole lines, each of bounded size."""

    def __init__(self, prefix: bytes, overhead: int | None = None) -> None:
        self.prefix = prefix
        self.pending = b""
        #: Lines per batch at most: what each adds (prefix, newline) stays within BATCH_BYTES.
        per_line = len(prefix) if overhead is None else overhead
        self._group = max(1, BATCH_BYTES // (per_line + 1))

    def feed(self, data: bytes) -> Iterator[tuple[bytes, int]]:
        """(batch, lines) for the whole lines in ``pending + data``; the rest stays pending.

        A batch holds at most BATCH_BYTES of prefixes and newlines, plus the
        bytes of its lines (at most this read and what was pending), escaped.
        """
        data = self.pending + data
        *lines, self.pending = data.split(b"\n")
        while len(self.pending) > MAX_LINE:  # at most twice: pending + one read
            lines.append(self.pending[:MAX_LINE])
            self.pending = self.pending[MAX_LINE:]
        if not lines:
            return
        clean = len(data.translate(None, _SUSPECT)) == len(data)
        if len(lines) <= self._group:
            yield self._render(lines, clean), len(lines)
            return
        for start in range(0, len(lines), self._group):
            group = lines[start : start + self._group]
            yield self._render(group, clean), len(group)

    def end(self) -> bytes | None:
        """The last line, unterminated, as a batch (a newline added); None when there is none."""
        if not self.pending:
            return None
        return self._render([self.pending], clean=False)

    def _render(self, lines: list[bytes], clean: bool) -> bytes:
        return _prefixed(self.prefix, lines, clean)


class StampedFramer(Framer):
    """--log-time: ``TIME NAME | line``, TIME taken once per read (every batch of it)."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__(prefix, len(prefix) + _STAMP_BYTES)

    def _render(self, lines: list[bytes], clean: bool) -> bytes:
        return _prefixed(logformat.stamp() + b" " + self.prefix, lines, clean)


class JsonFramer(Framer):
    """--log-format json: one object per line (time, name, stream, line), time once per read."""

    def __init__(self, name: str, stream: str) -> None:
        self.name = name
        self.stream = stream
        head = logformat.json_head(logformat.stamp(), name, stream)
        super().__init__(b"", len(head.encode()) + len("}\n"))

    def _render(self, lines: list[bytes], clean: bool) -> bytes:
        head = logformat.json_head(logformat.stamp(), self.name, self.stream)
        return logformat.json_lines(head, lines, suspect=not clean)


#: Bytes of a time and the space after it: ``2026-12-07T21:40:37.123Z ``.
_STAMP_BYTES = 25


def _prefixed(prefix: bytes, lines: list[bytes], clean: bool) -> bytes:
    """Each line after ``prefix``, each with its newline; controls escaped unless ``clean``."""
    # One C-level join, not a Python loop over the lines: the GIL is held
    # for microseconds per batch, so a flood does not keep the signal
    # intake waiting.
    batch = prefix + (b"\n" + prefix).join(lines) + b"\n"
    return batch if clean else escape_controls(batch)


def make_framer(name: str, fd: int, log_format: str, with_time: bool) -> Framer:
    """The framer of ``name``'s fd 1 or 2 for --log-format and --log-time."""
    if log_format == log.JSON:
        return JsonFramer(name, "stdout" if fd == 1 else "stderr")
    prefix = f"{name} | ".encode()
    return StampedFramer(prefix) if with_time else Framer(prefix)


class Output:
    """One of pyinit's output fds: a queue bounded in bytes, written by one long-lived thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued_bytes = 0
        self._queued_lines = 0
        #: Batches ever queued, and ever written (or dropped): a batch's ticket is its number.
        self._put_total = 0
        self._done_total = 0
        self._closed = False
        #: Set (under the lock) while the loop waits for the queue to shrink.
        self._waiting = False
        self._wakeup = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._shrunk = trio.Event()
        self._writer = False
        self._start_writer()

    def _start_writer(self) -> bool:
        """Start the writer thread if it is not running yet; whether it runs.

        A thread takes a pid: in a full pids cgroup the kernel refuses it.
        Then the lines are written by the loop itself until a thread can start.
        """
        if not self._writer:
            thread = threading.Thread(
                target=self._write_forever, name=f"pyinit-out-{self.fd}", daemon=True
            )
            with contextlib.suppress(RuntimeError):  # can't start new thread
                thread.start()
                self._writer = True
        return self._writer

    async def put(self, data: bytes, lines: int) -> int:
        """Queue a batch, its ticket for :meth:`wait_written`; waits while the queue is full.

        A batch always fits an empty queue, so one bigger than the bound
        cannot wait forever (backpressure, not a drop).  Without a writer
        thread (none could start) the batch is written here, at once.
        """
        if not self._start_writer():
            return self._write_here(data)
        while True:
            shrunk = self._shrunk
            with self._lock:
                room = self._queued_bytes + len(data) <= QUEUE_BYTES
                if room or not self._queue:
                    self._queue.append((data, lines))
                    self._queued_bytes += len(data)
                    self._queued_lines += lines
                    self._put_total += 1
                    self._work.notify()
                    return self._put_total
                self._waiting = True
            await shrunk.wait()

    async def wait_idle(self) -> None:
        """Wait until every queued line is written."""
        while True:
            shrunk = self._shrunk
            with self._lock:
                if not self._queue:
                    return
                self._waiting = True
            await shrunk.wait()

    async def wait_written(self, ticket: int) -> None:
        """Wait until the batch with ``ticket`` and all before it are written (or dropped)."""
        while True:
            shrunk = self._shrunk
            with self._lock:
                if self._done_total >= ticket or self._closed:
                    return
                self._waiting = True
            await shrunk.wait()

    async def watch(self) -> None:
        """Wake the loop's waiters whenever the writer says the queue shrank (a trio task)."""
        while True:
            await trio.lowlevel.wait_readable(self._wakeup)
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wakeup)
            self._shrunk.set()
            self._shrunk = trio.Event()

    def close(self) -> int:
        """Stop writing (what is queued is dropped); the number of lines dropped."""
        with self._lock:
            self._closed = True
            dropped = self._queued_lines
            self._queue.clear()
            self._queued_bytes = self._queued_lines = 0
            self._work.notify()
        return dropped

    def _write_here(self, data: bytes) -> int:
        """Write a batch in the caller's thread (no writer thread): late, but never lost."""
        with self._lock:
            if self._closed:
                return self._put_total
            self._put_total += 1
            self._done_total += 1
            ticket = self._put_total
        _write_all(self.fd, [data])
        return ticket

    def _write_forever(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._work.wait()
                if self._closed:
                    return
                # All that is queued, in one writev: one GIL round trip per
                # wake-up, not per batch, when the loop is ahead of the reader.
                batches = list(itertools.islice(self._queue, _WRITEV_BATCHES))
            _write_all(self.fd, [data for data, _ in batches])
            with self._lock:
                if self._closed:
                    return
                for data, lines in batches:
                    self._queue.popleft()
                    self._queued_bytes -= len(data)
                    self._queued_lines -= lines
                self._done_total += len(batches)
                wake, self._waiting = self._waiting, False
            if wake:
                os.eventfd_write(self._wakeup, 1)


def _write_all(fd: int, buffers: list[bytes]) -> None:
    views = [memoryview(data) for data in buffers]
    while views:
        try:
            written = os.writev(fd, views)
        except InterruptedError:
            continue
        except OSError:
            return  # a closed stdout: nobody can read these lines
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views:
            views[0] = views[0][written:]


class LogRelay:
    """Pipes for items' stdout/stderr, relayed with a prefix; one per supervisor."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        #: Every pipe is read into this one buffer (the loop is one thread), then copied out.
        self._read_buffer = memoryview(bytearray(READ_SIZE))
        self._outputs: dict[int, Output] = {}
        self._open_pipes = 0
        self._all_closed = trio.Event()
        self._all_closed.set()
        self._own: list[bytes] = []
        self._own_bytes = 0
        self._own_waiting = trio.Event()
        self._own_taken = trio.Event()
        self._own_dropped = 0
        #: pyinit's own lines ever taken into the buffer (not dropped), and ever queued to
        #: stderr; the stderr queue's ticket of the last of those.
        self._own_accepted = 0
        self._own_queued = 0
        self._own_ticket = 0
        self._own_moved = trio.Event()

    def start_outputs(self) -> None:
        """Start the writers of stdout and stderr now, not at the first relayed line.

        Each is a thread, which takes a pid: started with the loop, a later
        full pids cgroup cannot keep a line from being relayed.
        """
        for fd in (1, 2):
            self._output(fd)

    def own_lines(self, token: trio.lowlevel.TrioToken) -> Callable[[bytes], None]:
        """A :func:`pyinit.log.set_writer` writer: pyinit's lines into the stderr queue.

        Callable from any thread.  Lines wait in a buffer of OWN_LINES_LIMIT
        bytes, taken in batches; past it they are dropped and counted.  Once
        the loop is over it writes directly.  The loop thread's lines enter
        the buffer at once: a ``started`` line is in it before that
        process's pipes are adopted (:meth:`adopt`).
        """
        output = self._output(2)
        self._nursery.start_soon(self._pump_own, output)
        loop_thread = threading.get_ident()

        def write(line: bytes) -> None:
            if threading.get_ident() == loop_thread:
                self._buffer_own(line)
                return
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
        self._own_accepted += 1
        self._own_waiting.set()

    async def _pump_own(self, output: Output) -> None:
        while True:
            await self._own_waiting.wait()
            self._own_waiting = trio.Event()
            lines, self._own = self._own, []
            self._own_bytes = 0
            taken, self._own_taken = self._own_taken, trio.Event()
            taken.set()
            self._own_ticket = await output.put(b"".join(lines), len(lines))
            self._own_queued += len(lines)
            self._own_moved.set()
            self._own_moved = trio.Event()

    async def _own_written(self, count: int) -> None:
        """Wait until the first ``count`` of pyinit's own lines accepted are written."""
        while self._own_queued < count:
            await self._own_moved.wait()
        await self._outputs[2].wait_written(self._own_ticket)

    def adopt(self, name: str, read_ends: dict[int, int]) -> None:
        """Relay ``name``'s pipes from now on: {child fd 1/2: our read end}.

        Not one of its lines is read before pyinit's own lines logged so far
        (its ``started`` line) are written: they come first in the output.
        """
        log_format, with_time = log.output_format()
        after = self._own_accepted
        for fd, read_fd in read_ends.items():
            self._open_pipes += 1
            self._all_closed = trio.Event() if self._all_closed.is_set() else self._all_closed
            framer = make_framer(name, fd, log_format, with_time)
            self._nursery.start_soon(self._pump, read_fd, framer, self._output(fd), after)

    def _output(self, fd: int) -> Output:
        if fd not in self._outputs:
            self._outputs[fd] = Output(fd)
            self._nursery.start_soon(self._outputs[fd].watch)
        return self._outputs[fd]

    async def _pump(self, read_fd: int, framer: Framer, output: Output, after: int) -> None:
        os.set_blocking(read_fd, False)
        try:
            if after:
                await self._own_written(after)
            while True:
                await trio.lowlevel.wait_readable(read_fd)
                try:
                    data = self._read(read_fd)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                for batch, lines in framer.feed(data):
                    await output.put(batch, lines)
            last = framer.end()
            if last is not None:
                await output.put(last, 1)  # the last line, unterminated
        finally:
            trio.lowlevel.notify_closing(read_fd)
            os.close(read_fd)
            self._open_pipes -= 1
            if self._open_pipes == 0:
                self._all_closed.set()

    def _read(self, read_fd: int) -> bytes:
        # Not os.read (see the module's docstring): the buffer is reused, the copy exact.
        size = os.readv(read_fd, [self._read_buffer])
        return self._read_buffer[:size].tobytes()

    async def drain(self, until: float) -> None:
        """Wait (until trio time ``until``) for every pipe's EOF and every line written.

        What is still queued then is dropped, with one line saying how much.
        """
        with trio.move_on_at(until):
            await self._all_closed.wait()
            while self._own:  # pyinit's own lines, still to be taken into the queue
                await self._own_taken.wait()
            for output in self._outputs.values():
                await output.wait_idle()
        log.set_writer(None)  # from here on pyinit's own lines go straight out
        self._own_dropped += len(self._own)
        dropped = sum(output.close() for output in self._outputs.values())
        if dropped:
            with contextlib.suppress(OSError):
                log.warning(f"dropped {dropped} log line(s) of sidecars/tasks: output stalled")
        if self._own_dropped:
            with contextlib.suppress(OSError):
                log.warning(f"dropped {self._own_dropped} line(s) of pyinit's own: stderr stalled")
