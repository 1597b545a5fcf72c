"""Test-only entry: pyinit, plus requests by hand read from files (tests/test_handctl.py).

Stands in for the control socket, which is not what these tests are about:
the loop also serves ``HANDCTL_DIR/req.N`` files, each one request
``stop|start|restart|show NAME``, concurrently, and answers each in
``HANDCTL_DIR/resp.N`` as ``0 LINE`` (done) or ``1 LINE`` (ControlRefused),
by calling :class:`pyinit.run.services.ItemRun`'s methods on the loop, as
the control server does.  ``show`` answers with the sidecar's state, pid
and restart counts.  Everything else is ``python -m pyinit``.
"""

import signal

_ORIGINAL_MASK = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())

import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import trio  # noqa: E402

from pyinit.cli import main  # noqa: E402
from pyinit.errors import ControlRefused  # noqa: E402
from pyinit.run import loop  # noqa: E402
from pyinit.run.services import ItemRun  # noqa: E402

REQUESTS = Path(os.environ["HANDCTL_DIR"])
POLL_SECONDS = 0.02
_run = loop.Supervision.run


async def _run_and_serve(sup: loop.Supervision) -> int:
    sup.nursery.start_soon(_serve, sup)
    return await _run(sup)


async def _serve(sup: loop.Supervision) -> None:
    number = 0
    while True:
        request = REQUESTS / f"req.{number}"
        if request.exists():
            sup.nursery.start_soon(_answer, sup, number, request.read_text().split())
            number += 1
        else:
            await trio.sleep(POLL_SECONDS)


async def _answer(sup: loop.Supervision, number: int, words: list[str]) -> None:
    verb, name = words
    try:
        (run,) = (r for r in sup.runs if r.item.name == name)
        line = "0 " + await _act(run, verb)
    except ControlRefused as e:
        line = "1 " + e.message
    written = REQUESTS / f"resp.{number}.tmp"
    written.write_text(line)
    written.rename(REQUESTS / f"resp.{number}")


async def _act(run: ItemRun, verb: str) -> str:
    if verb == "show":
        tracker = run.tracker
        within = tracker.restarts_within_window(time.monotonic())
        return f"{run.state} pid={run.pid} restarts={within} total={tracker.total_restarts}"
    methods = {
        "stop": run.stop_by_hand,
        "start": run.start_by_hand,
        "restart": run.restart_by_hand,
    }
    return await methods[verb]()


loop.Supervision.run = _run_and_serve  # type: ignore[method-assign]
main(original_mask=_ORIGINAL_MASK)
