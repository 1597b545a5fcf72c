"""The control server: what ``pyinitctl`` talks to (docs/operate.md), for both kinds of run.

One implementation serves a plain target (:mod:`pyinit.run.plain`: no
trio) and the event loop (:mod:`pyinit.run.loop`):

* a daemon thread blocks in ``accept()`` on the socket
  :func:`pyinit.root.control.open_control` made: no wake-up while idle;
* each connection is served in a short thread of its own, at most
  :data:`MAX_CLIENTS` at once (one more is told ``1 busy`` and closed, as
  is one arriving when the kernel refuses a thread: a full pids cgroup);
* what a connection gets (SO_PEERCRED, the one bounded request line, the
  answer) is :mod:`pyinit.run.answers`, imported by the first connection's
  thread: an idle PID 1 holds only this module's accept loop
  (docs/design.md, "The control server"); ``json`` and ``psutil`` wait
  for the first ``status``.

What is answered comes from a :class:`Backend`: :class:`PlainBackend` (the
main only) or :class:`pyinit.run.loopcontrol.LoopBackend` (the main,
sidecars and tasks, read and acted on in the loop's own thread).
"""

from __future__ import annotations

import _socket
import _thread
import time

from pyinit.errors import ControlRefused, quoted
from pyinit.run import lifecycle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.plan import Plan
    from pyinit.root.control import Listener
    from pyinit.run.reaper import Watched

    Process = dict[str, object]

#: Connections served at once; one more is told "busy".
MAX_CLIENTS = 8
#: At most this many reads (64 KiB each) of what a refused client sent are discarded.
DRAIN_READS = 4


class Backend:
    """What the server asks; each answer is the one line to print, or ControlRefused."""

    def stopping(self) -> bool:
        """True once the container's stop began."""
        raise NotImplementedError

    def processes(self) -> list[Process]:
        """One status object per process, without the psutil fields (pid included)."""
        raise NotImplementedError

    def health(self) -> tuple[int, str]:
        """0 and ``healthy``, or 1 and what is not."""
        raise NotImplementedError

    def signal(self, name: str, signum: int) -> str:
        """Send ``signum`` to NAME's process group."""
        raise NotImplementedError

    def by_hand(self, action: str, name: str) -> str:
        """``stop``, ``start`` or ``restart`` NAME by hand."""
        raise NotImplementedError


class Server:
    """The accept thread and the client threads over one :class:`Listener`."""

    def __init__(self, listener: Listener, backend: Backend) -> None:
        self.listener = listener
        self.backend = backend
        self._lock = _thread.allocate_lock()
        self._clients = 0
        self._closed = False

    def start(self) -> bool:
        """Start accepting; False (after one notice) if no thread can be had."""
        try:
            _thread.start_new_thread(self._accept_loop, ())
        except RuntimeError:
            from pyinit import log

            log.notice(f"control socket {self.listener.path}: no thread for it; running without it")
            self.close()
            return False
        return True

    def close(self) -> None:
        """Stop accepting and remove the socket (at pyinit's exit)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.listener.close()

    def _accept_loop(self) -> None:
        sock = self.listener.sock
        while True:
            try:
                # _socket's accept (accept4 with SOCK_CLOEXEC): socket.py costs
                # PID 1 its imports for one wrapper.
                fd, _ = sock._accept()  # type: ignore[attr-defined]
            except OSError:
                if self._closed:
                    return
                time.sleep(0.1)  # out of descriptors or memory: try again, without spinning
                continue
            client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            if not self._take_slot():
                say_and_close(client, b"1 busy: too many requests at once, try again\n")
                continue
            try:
                _thread.start_new_thread(self._serve, (client,))
            except RuntimeError:  # the kernel refuses a thread (a full pids cgroup)
                self._free_slot()
                say_and_close(client, b"1 busy: pyinit cannot start a thread now, try again\n")

    def _take_slot(self) -> bool:
        with self._lock:
            if self._clients >= MAX_CLIENTS:
                return False
            self._clients += 1
            return True

    def _free_slot(self) -> None:
        with self._lock:
            self._clients -= 1

    def _serve(self, client: _socket.socket) -> None:
        """One connection, in its own thread (the first one imports the request code)."""
        try:
            from pyinit.run.answers import serve_client

            serve_client(client, self.backend)
        finally:
            client.close()
            self._free_slot()


def say_and_close(client: _socket.socket, line: bytes) -> None:
    """A short answer that never waits: the socket's buffer takes it, or it is dropped."""
    try:
        client.settimeout(0.0)
        client.send(line)
        # What the client sent already: left unread, closing would reset the
        # connection and the client would lose the answer.
        for _ in range(DRAIN_READS):
            if not client.recv(65536):
                break
    except OSError:
        pass
    client.close()


class PlainBackend(Backend):
    """A plain target's: the main only (no loop, no trio).

    ``life`` is the main's state (readable from any thread: its record is
    replaced whole), ``main`` its watched child, ``stopping`` says whether
    the container's stop began.  Its answers are made by
    :mod:`pyinit.run.answers`, loaded by then (it serves the request).
    """

    def __init__(
        self, plan: Plan, life: lifecycle.Tracked, main: Watched, stopping: Callable[[], bool]
    ) -> None:
        self.plan = plan
        self.life = life
        self.main = main
        self._stopping = stopping

    def stopping(self) -> bool:
        """True once the stop deadline runs."""
        return self._stopping()

    def processes(self) -> list[Process]:
        """The main's status object."""
        from pyinit.run.answers import process_status, user_name

        life = self.life.life
        return [
            process_status("main", "main", life, user_name(self.plan.identity), self.plan.command)
        ]

    def health(self) -> tuple[int, str]:
        """Healthy while the main runs and no stop began (a plain target has no probes)."""
        from pyinit.run.answers import not_healthy

        if self.stopping():
            return 1, "unhealthy: the container is stopping"
        state = self.life.state
        if state != lifecycle.RUNNING:
            return 1, f"unhealthy: main {not_healthy(state)}"
        return 0, "healthy"

    def signal(self, name: str, signum: int) -> str:
        """Only the main: its process group (it leads one)."""
        from pyinit.run.answers import signal_group

        if name != "main":
            raise ControlRefused(f"no process named {quoted(name)} (known: main)")
        pid = None if self.main.exited else self.main.pid
        return signal_group(pid, "main", signum)

    def by_hand(self, action: str, name: str) -> str:
        """Nothing but the main runs here, and it is not stopped or restarted by hand."""
        raise ControlRefused(f"no process named {quoted(name)} (known: main)")


def serve(listener: Listener, backend: Backend) -> Server | None:
    """Serve ``backend`` on ``listener`` from now on; None if no thread could be had."""
    server = Server(listener, backend)
    return server if server.start() else None
