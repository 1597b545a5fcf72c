"""Test helpers for the services runtime: items, probes, and pyinit's own process runtime.

:class:`Runtime` drives pyinit's real runtime the way the supervisor does:
each item forked by :func:`pyinit.run.spawn.fork_item` as its launch record
says (a session of its own), watched with ``Reaper.spawning()``, reaped by
:meth:`pyinit.run.reaper.Reaper.reap` on every SIGCHLD, its status handed
over once.  Only the signal intake is replaced, by a trio signal receiver.
"""

from __future__ import annotations

import shlex
import signal
from typing import Any

import trio
from plan_helpers import plan_for

from pyinit.plan.build import item_launch
from pyinit.plan.items import parse_probe
from pyinit.plan.services import Item, Probe
from pyinit.run.reaper import Reaper, Watched
from pyinit.run.spawn import fork_item


def make_probe(text: str) -> Probe:
    """A Probe from the ``ready=`` grammar, parsed by the planner's own parser."""
    return parse_probe(text, "ready=")


def make_item(name: str, command: list[str] | tuple[str, ...], **changes: Any) -> Item:
    """The item ``--sidecar 'NAME -- COMMAND'`` plans to beside a plain main, then ``changes``.

    Its defaults are the planner's own (docs/services.md); ``ready`` may be
    given as ``ready=`` text.  Unless ``launch`` is among the changes, the
    launch record is made again for the changed item, as ``build_plan`` does.
    """
    if isinstance(changes.get("ready"), str):
        changes["ready"] = make_probe(changes["ready"])
    plan = plan_for(["--sidecar", shlex.join([name, "--", *command]), "--", "true"])
    (item,) = plan.items
    item = item.replace(**changes)
    if "launch" in changes:
        return item
    return item.replace(launch=item_launch(plan, item))


class Runtime:
    """pyinit's own process runtime, driven the way the supervisor drives it.

    :meth:`start` forks an item with :func:`pyinit.run.spawn.fork_item` as its
    launch record says, watched inside ``Reaper.spawning()``; :meth:`serve`
    runs :meth:`Reaper.reap` (one ``waitpid(-1)`` loop) on every SIGCHLD; and
    :meth:`wait_exit` awaits the status the reaper hands over, as
    ``Supervision.wait_exit`` does.  Only the signal intake is not pyinit's:
    a trio signal receiver takes its place.
    """

    def __init__(self) -> None:
        self.reaper = Reaper()
        self._changed = trio.Event()
        self.reaper.listen(self._on_reaped)

    def _on_reaped(self, reaped: list[tuple[int, int]]) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Reap on every SIGCHLD (run it in a nursery first: ``await nursery.start(rt.serve)``)."""
        with trio.open_signal_receiver(signal.SIGCHLD) as signals:
            task_status.started()
            self.reaper.reap()
            async for _ in signals:
                self.reaper.reap()

    async def start(
        self, item: Item, extra_env: dict[str, str], pass_fds: dict[int, int]
    ) -> Watched:
        """Fork ``item`` as the supervisor does; its watched run, once exec'd.

        Raises the PyinitError the child reported if it could not exec.
        """
        if item.log != "raw":
            raise ValueError(f"{item.name}: this runtime relays no logs; make it with log='raw'")
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        with self.reaper.spawning() as watch:
            child, _ = fork_item(item, mask, extra_env, pass_fds)
            watched = watch(child.pid)
        error = await child.exec_result()
        if error is not None:
            raise error
        return watched

    async def wait_exit(self, watched: Watched) -> int:
        """The wait status of a watched child, once the reaper has handed it over."""
        while (status := watched.status) is None:
            await self._changed.wait()
        return status


def python(code: str) -> list[str]:
    """argv running ``code`` with this test's Python."""
    import sys

    return [sys.executable, "-c", code]
