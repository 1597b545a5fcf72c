"""Readiness probes with real processes and sockets (docs/services.md)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from svc_helpers import Runtime, make_item, make_probe, python

from pyinit.run import probes
from pyinit.run.probes import (
    NotifySocket,
    ProbeFailed,
    ReadyTimeout,
    open_channel,
    wait_ready,
)
from pyinit.run.reaper import Watched

BOUND = 20  # seconds: every wait in these tests is bounded


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> Runtime:
    rt = Runtime()
    await nursery.start(rt.serve)
    return rt


async def start(
    runtime: Runtime, argv: list[str], probe: str, uid: int | None = None
) -> tuple[Watched, object]:
    """Start argv as a sidecar with the probe's channel (if any); returns (run, channel).

    ``uid``: whose notify datagrams count (default: ours, which the child runs as).
    """
    item = make_item("svc", argv, ready=probe, log="raw")
    channel = open_channel(item.ready, "sidecar svc", os.geteuid() if uid is None else uid)
    pass_fds = dict(channel.pass_fds) if channel else {}
    env = dict(channel.env) if channel else {}
    with trio.fail_after(BOUND):
        run = await runtime.start(item, env, pass_fds)
    if channel is not None:
        channel.child_started(run.pid)
    return run, channel


async def stop(runtime: Runtime, run: Watched) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, 9)
    with trio.fail_after(BOUND):
        await runtime.wait_exit(run)


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify")
async def test_notify_with_systemd_notify(runtime: Runtime) -> None:
    probe = make_probe("notify")
    script = (
        "systemd-notify --status='warming up'; sleep 0.3; systemd-notify --ready; exec sleep 60"
    )
    run, channel = await start(runtime, ["sh", "-c", script], "notify")
    notices: list[str] = []
    with trio.fail_after(BOUND):
        await wait_ready(probe, name="sidecar svc", channel=channel, notice=notices.append)  # type: ignore[arg-type]
    assert "sidecar svc: warming up" in notices
    channel.close()  # type: ignore[attr-defined]
    await stop(runtime, run)


async def test_notify_with_python_client_and_foreign_sender_ignored(runtime: Runtime) -> None:
    client = (
        "import os, socket, sys, time\n"
        "addr = os.environ['NOTIFY_SOCKET']\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "s.connect('\\0' + addr[1:])\n"
        "open(sys.argv[1], 'w').write(addr)\n"
        "time.sleep(0.5)\n"
        "s.send(b'STATUS=up\\nREADY=1\\n')\n"
        "time.sleep(60)\n"
    )
    flag = Path(os.environ.get("TMPDIR", "/tmp")) / f"notify-{os.getpid()}"
    run, channel = await start(runtime, [*python(client), str(flag)], "notify")
    ready = trio.Event()

    async def waiter() -> None:
        await wait_ready(make_probe("notify"), name="x", channel=channel, notice=lambda s: None)  # type: ignore[arg-type]
        ready.set()

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            while not flag.exists():
                await trio.sleep(0.05)
            # This process is in another process group: its READY=1 must not count.
            intruder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            intruder.sendto(b"READY=1", "\0" + flag.read_text()[1:])
            intruder.close()
            await trio.sleep(0.2)
            assert not ready.is_set()
            await ready.wait()
    flag.unlink()
    channel.close()  # type: ignore[attr-defined]
    await stop(runtime, run)


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify")
async def test_notify_from_the_items_own_group_but_another_uid_does_not_count(
    runtime: Runtime,
) -> None:
    # The item's own child says READY=1, but as root while the item is planned as
    # uid 4242: the kernel-vouched uid decides, whatever the process group says.
    script = "systemd-notify --ready; exec sleep 60"
    run, channel = await start(runtime, ["sh", "-c", script], "notify", uid=4242)
    with pytest.raises(ReadyTimeout, match=r"not ready within 1s"):
        await wait_ready(make_probe("notify"), name="x", channel=channel, timeout=1)  # type: ignore[arg-type]
    channel.close()  # type: ignore[attr-defined]
    await stop(runtime, run)


def test_a_pid_counts_only_while_its_pidfd_shows_the_sender_unreaped() -> None:
    # A pid is read after the datagram came: the sender may be gone and its pid
    # reused.  The sender's pidfd (SO_PASSPIDFD) tells; here a reaped child's
    # pidfd beside our own pid stands for "the pid now names someone else".
    channel = NotifySocket("sidecar svc", os.geteuid())
    child = os.fork()
    if child == 0:
        os._exit(0)
    dead = os.pidfd_open(child)
    os.waitpid(child, 0)
    alive = os.pidfd_open(os.getpid())
    try:
        channel.child_started(os.getpgid(0))
        me = os.getpid()
        assert channel.accepts((me, os.geteuid(), None))
        assert channel.accepts((me, os.geteuid(), alive))
        assert not channel.accepts((me, os.geteuid(), dead))
        assert not channel.accepts((me, os.geteuid() + 1, alive))
    finally:
        os.close(dead)
        os.close(alive)
        channel.close()


async def test_fd_probe_s6_style(runtime: Runtime) -> None:
    run, channel = await start(runtime, ["sh", "-c", "sleep 0.2; echo >&3; exec sleep 60"], "fd:3")
    with trio.fail_after(BOUND):
        await wait_ready(make_probe("fd:3"), name="x", channel=channel)  # type: ignore[arg-type]
    await stop(runtime, run)


async def test_fd_probe_eof_means_not_ready(runtime: Runtime) -> None:
    run, channel = await start(runtime, ["sh", "-c", "printf partial >&3; exit 4"], "fd:3")
    with trio.fail_after(BOUND), pytest.raises(ProbeFailed, match="closed fd 3"):
        await wait_ready(make_probe("fd:3"), name="sidecar svc", channel=channel)  # type: ignore[arg-type]
    await stop(runtime, run)


async def test_tcp_probe_waits_for_listener(nursery: trio.Nursery) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def listen_late() -> None:
        await trio.sleep(0.3)
        listener.listen(5)

    nursery.start_soon(listen_late)
    with trio.fail_after(BOUND):
        await wait_ready(make_probe(f"tcp:127.0.0.1:{port}"), name="x")
    listener.close()


def test_ip_family_tells_addresses_from_names() -> None:
    assert probes.ip_family("127.0.0.1") == socket.AF_INET
    assert probes.ip_family("::1") == socket.AF_INET6
    assert probes.ip_family("fd00::2:1") == socket.AF_INET6
    for name in ("localhost", "db", "127.0.0.1.example", "[::1]", ""):
        assert probes.ip_family(name) is None, name


def _can_listen_on(host: str) -> bool:
    try:
        socket.create_server((host, 0), family=probes.ip_family(host) or socket.AF_INET).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("listen_on", "probe_host"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("127.0.0.1", "localhost")],
)
async def test_tcp_check_connects_to_an_address_or_a_name(listen_on: str, probe_host: str) -> None:
    # An address is connected to directly, a name through trio's resolution: both
    # pass while something listens, and fail (OSError: a failed call) once it is gone.
    if not _can_listen_on(listen_on):
        pytest.skip(f"cannot listen on {listen_on}")
    server = socket.create_server((listen_on, 0), family=probes.ip_family(listen_on) or 0)
    port = server.getsockname()[1]
    with trio.fail_after(BOUND):
        assert await probes.check_tcp(probe_host, port)
        assert await probes.check_once(lambda: probes.check_tcp(probe_host, port))
        server.close()
        with pytest.raises(OSError):
            await probes.check_tcp(probe_host, port)
        assert not await probes.check_once(lambda: probes.check_tcp(probe_host, port))


async def test_unix_and_file_probes(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "sock"
    marker = tmp_path / "marker"

    async def create_late() -> None:
        await trio.sleep(0.3)
        server = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await server.bind(str(path))
        server.listen(1)
        marker.write_text("")
        await trio.sleep_forever()

    nursery.start_soon(create_late)
    with trio.fail_after(BOUND):
        await wait_ready(make_probe(f"unix:{path}"), name="x")
        await wait_ready(make_probe(f"file:{marker}"), name="x")


async def test_exec_probe_uses_injected_runner(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    calls: list[Sequence[str]] = []

    async def run(argv: Sequence[str]) -> int:
        calls.append(argv)
        if len(calls) == 3:
            marker.write_text("")
        result = await trio.run_process(list(argv), check=False)
        return result.returncode

    with trio.fail_after(BOUND):
        await wait_ready(make_probe(f"exec:test -e {marker}"), name="x", run_probe_command=run)
    assert len(calls) == 3
    assert calls[0] == ("test", "-e", str(marker))


async def test_exec_probe_call_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def hang(argv: Sequence[str]) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            await trio.sleep_forever()  # cancelled by the 1 s bound
        return 0

    start = trio.current_time()
    await wait_ready(make_probe("exec:x"), name="x", run_probe_command=hang)
    assert calls == 3
    assert trio.current_time() - start == pytest.approx(2 * 1.0 + 0.1 + 0.2)


async def test_http_probe_statuses(nursery: trio.Nursery) -> None:
    statuses = iter([b"503 Busy", b"404 Not Found", b"302 Found"])
    seen: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        request = await stream.receive_some(4096)
        seen.append(request.split(b"\r\n", 1)[0])
        await stream.send_all(b"HTTP/1.0 " + next(statuses) + b"\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(BOUND):
        await wait_ready(make_probe(f"http://127.0.0.1:{port}/healthz"), name="x")
    assert seen == [b"GET /healthz HTTP/1.0"] * 3


async def test_ready_timeout_names_item(tmp_path: Path) -> None:
    with pytest.raises(ReadyTimeout, match=r"sidecar db not ready within 0.5s \(waiting for file:"):
        await wait_ready(make_probe(f"file:{tmp_path}/never"), name="sidecar db", timeout=0.5)


async def test_no_timeout_notices_every_10s(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notices: list[str] = []
    with trio.move_on_after(35):
        await wait_ready(
            make_probe(f"file:{tmp_path}/never"), name="sidecar db", notice=notices.append
        )
    assert len(notices) == 3
    assert notices[0].startswith("still waiting for sidecar db to be ready (waiting for file:")


async def test_polling_backs_off_to_one_second(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    async def never() -> bool:
        times.append(trio.current_time())
        return False

    with trio.move_on_after(5):
        await probes.poll(never)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert gaps[:6] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
