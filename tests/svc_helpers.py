"""Test helpers for the services runtime: items, probes, and a small real runtime.

:class:`SpawnRuntime` is the test stand-in for the supervisor: it starts
real processes with ``posix_spawn`` (each leading its own process group) and
reaps them on SIGCHLD; it implements the ``ServiceRuntime`` protocol of
:mod:`pyinit.run.services`.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import trio

from pyinit.errors import EXIT_NOT_FOUND, PyinitError
from pyinit.plan.items import parse_probe
from pyinit.plan.services import SIDECAR, Item, Probe


def make_probe(text: str) -> Probe:
    """A Probe from the ``ready=`` grammar, parsed by the planner's own parser."""
    return parse_probe(text, "ready=")


def make_item(name: str, command: list[str] | tuple[str, ...], **changes: Any) -> Item:
    """A sidecar with docs/services.md's defaults, changed by ``changes``."""
    ready = changes.pop("ready", None)
    fields: dict[str, Any] = {
        "kind": SIDECAR,
        "name": name,
        "command": tuple(command),
        "identity": None,
        "switch_identity": False,
        "workdir": None,
        "env": (),
        "file_env": (),
        "ready": make_probe(ready) if isinstance(ready, str) else ready,
        "ready_timeout": None,
        "alive": None,
        "restart": "always",
        "backoff_min": 0.5,
        "backoff_max": 30.0,
        "max_restarts": 5,
        "restart_window": 60.0,
        "on_giveup": "stop",
        "stop_signal": int(signal.SIGTERM),
        "log": "prefix",
        "source": "--sidecar",
        "launch": None,
    }
    fields.update(changes)
    return Item(**fields)


class SpawnRuntime:
    """A real runtime for tests: posix_spawn children, reaped on SIGCHLD."""

    def __init__(self) -> None:
        self._events: dict[int, trio.Event] = {}
        self._statuses: dict[int, int] = {}
        self.spawned: list[tuple[str, int]] = []  # (item name, pid), in order

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Reap watched children whenever SIGCHLD arrives (run it in a nursery first)."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            task_status.started()
            self._reap()
            async for _ in signals:
                self._reap()

    def _reap(self) -> None:
        for pid in list(self._events):
            if pid in self._statuses:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                self._statuses[pid] = status
                self._events[pid].set()

    def spawn(
        self,
        item: Item,
        stdout_fd: int,
        stderr_fd: int,
        pass_fds: dict[int, int],
        extra_env: dict[str, str],
    ) -> int:
        """Start ``item.command`` in its own process group; PyinitError if it cannot run."""
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env.update(item.env)
        env.update(extra_env)
        actions = [
            (os.POSIX_SPAWN_DUP2, stdout_fd, 1),
            (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
        ]
        actions.extend((os.POSIX_SPAWN_DUP2, ours, theirs) for theirs, ours in pass_fds.items())
        try:
            pid = os.posix_spawnp(
                item.command[0],
                list(item.command),
                env,
                file_actions=actions,
                setpgroup=0,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
                setsigmask=(),
            )
        except OSError as e:
            raise PyinitError(
                f"{item.name}: {item.command[0]}: {e.strerror}", EXIT_NOT_FOUND
            ) from e
        self._events[pid] = trio.Event()
        self.spawned.append((item.name, pid))
        self._reap()
        return pid

    async def wait_exit(self, pid: int) -> int:
        """The wait status of ``pid``, once reaped."""
        await self._events[pid].wait()
        return self._statuses[pid]


def python(code: str) -> list[str]:
    """argv running ``code`` with this test's Python."""
    import sys

    return [sys.executable, "-c", code]
