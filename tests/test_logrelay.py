"""The log relay's defences (docs/security.md): a forged prefix, a flood against a stalled stdout.

From the outside first (pyinit as PID 1 of a PID namespace, real sidecars doing the attack),
then the framing and escaping in-process, with generated input.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import termios
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pidns import TARGET_PYTHON, Namespace, unread_pipe, wait_for

from pyinit.run.logrelay import BATCH_BYTES, MAX_LINE, READ_SIZE, Framer, escape_controls

JSON = ("--log-format", "json")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

# What the attacker prints: a line that a terminal would show as db's, by a CR, by
# ANSI "erase line + column 1", by the C1 CSI (UTF-8), by backspaces; then CRLF,
# NUL and invalid UTF-8, which stay as they are.
FORGERIES = (
    b"harmless\rdb | ERROR forged by CR\n"
    b"\x1b[2K\x1b[1Gdb | ERROR forged by ANSI\n"
    b"\xc2\x9b2K\rdb | ERROR forged by C1\n"
    b"abc\x08\x08\x08db | ERROR forged by BS\n"
    b"a windows line\r\n"
    b"nul\x00 and invalid \xff\xfe utf-8, tab\tok, \xc2\xa9 kept\n"
)
ESCAPED = (
    b"worker | harmless\\rdb | ERROR forged by CR\n"
    b"worker | \\x1b[2K\\x1b[1Gdb | ERROR forged by ANSI\n"
    b"worker | \\xc2\\x9b2K\\rdb | ERROR forged by C1\n"
    b"worker | abc\\x08\\x08\\x08db | ERROR forged by BS\n"
    b"worker | a windows line\r\n"
    b"worker | nul\x00 and invalid \xff\xfe utf-8, tab\tok, \xc2\xa9 kept\n"
)


def _printer(data: bytes) -> str:
    """A sidecar command string writing ``data`` once, then sleeping."""
    code = f"import os, time; os.write(1, {data!r}); time.sleep(30)"
    return f'-- {TARGET_PYTHON} -c "{code}"'


@root_only
def test_an_item_cannot_forge_another_items_prefix_and_raw_stays_byte_exact(
    tmp_path: Path,
) -> None:
    out_file = tmp_path / "stdout"
    with out_file.open("wb") as out, Namespace(
        ["--sidecar", f"worker {_printer(FORGERIES)}",
         "--sidecar", f"rawone log=raw {_printer(b'raw:' + FORGERIES)}",
         "--", "sleep", "30"],
        stdout=out,
    ) as ns:  # fmt: skip
        wait_for(lambda: out_file.read_bytes().count(b"kept\n") == 2, what="both sidecars' lines")
        ns.signal(signal.SIGTERM)
        code, _, err = ns.wait()
    assert code == 128 + signal.SIGTERM, err
    got = out_file.read_bytes()
    prefixed = b"".join(re.findall(rb"worker \| [^\n]*\n", got))
    assert prefixed == ESCAPED
    assert b"raw:" + FORGERIES in got  # log=raw: the very bytes the sidecar wrote


def _peak_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.findall(r"VmHWM:\s+(\d+)", status)[0])


def _blocked_writing(ns: Namespace) -> bool:
    """True once PID 1's child (the sidecar) sleeps in a write to its full pipe."""
    for kid in Path(f"/proc/{ns.init_pid}/task/{ns.init_pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{kid}/wchan").read_text().endswith("pipe_write"):
                return True
    return False


def _buffered(read_end: int) -> int:
    return int.from_bytes(fcntl.ioctl(read_end, termios.FIONREAD, b"\0\0\0\0"), "little")


def _peak_with_stalled_stdout(sidecar: str, flooding: bool, flags: tuple[str, ...] = ()) -> int:
    """PID 1's peak RSS (kB) with ``sidecar`` relayed to a pipe nobody reads.

    Read once a flooding sidecar is blocked in its own write, else once its line is out.
    """
    with unread_pipe() as (read_end, write_end), Namespace(
        [*flags, "--stop-timeout", "2", "--sidecar", sidecar, "--", "sleep", "30"],
        stdout=write_end,
    ) as ns:  # fmt: skip
        if flooding:
            wait_for(lambda: _blocked_writing(ns), what="the sidecar to block in its write")
            time.sleep(0.5)  # the relay has had its chance to take more
        else:
            wait_for(lambda: _buffered(read_end) > 0, what="the sidecar's line")
        peak = _peak_kb(ns.init_pid)
        ns.signal(signal.SIGTERM)
        ns.wait()
    return peak


@root_only
@pytest.mark.parametrize(
    ("flood", "flags"),
    [
        ("b'\\n' * 65536", ()),  # empty lines: each one becomes the 35-byte prefix and a newline
        ("b'\\r' * 65536", ()),  # carriage returns: each one escaped to two bytes
        ("(b'\\x1b' * 99 + b'\\n') * 650", ()),  # escapes: 4 bytes each once escaped
        ("b'\\n' * 65536", ("--log-time",)),  # a time before each prefix too
        ("b'\\n' * 65536", JSON),  # each empty line a whole JSON object
        ("(b'\\x1b' * 99 + b'\\n') * 650", JSON),  # \\u001b: 6 bytes each
    ],
    ids=["empty-lines", "cr", "esc", "empty-lines-time", "empty-lines-json", "esc-json"],
)
def test_a_flood_against_a_stalled_stdout_is_held_back_not_buffered(
    tmp_path: Path, flood: str, flags: tuple[str, ...]
) -> None:
    # Backpressure, bounded in bytes after prefixing and escaping: the
    # sidecar blocks in its own write while PID 1 holds a few hundred kB
    # (before: 16 batches of up to 2.3 MB each, PID 1 at +50 MB).
    name = "n" * 32
    script = tmp_path / "flood.py"
    script.write_text(f"import os\ndata = {flood}\nwhile True:\n    os.write(1, data)\n")
    idle = _peak_with_stalled_stdout(f"{name} -- sh -c 'echo one; exec sleep 30'", False, flags)
    peak = _peak_with_stalled_stdout(f"{name} -- {TARGET_PYTHON} {script}", True, flags)
    assert peak - idle < 8 * 1024, (idle, peak)


# --------------------------------------------------------------------------
# in-process: Framer and escape_controls

PREFIX = b"x" * 32 + b" | "
C0_SHOWN = re.compile(rb"[\x01-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def _frame(chunks: list[bytes], prefix: bytes = PREFIX) -> list[tuple[bytes, int]]:
    framer = Framer(prefix)
    batches = [batch for chunk in chunks for batch in framer.feed(chunk)]
    last = framer.end()
    return batches + ([(last, 1)] if last is not None else [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_no_terminal_control_survives_and_every_line_is_prefixed(chunks: list[bytes]) -> None:
    out = b"".join(batch for batch, _ in _frame(chunks))
    for line in out.split(b"\n")[:-1]:
        assert line.startswith(PREFIX)
        # A CR is left only as the line's end (CRLF); nothing else a terminal acts on.
        assert C0_SHOWN.search(line.removesuffix(b"\r").replace(b"\r", b"!")) is None
        assert b"\r" not in line.removesuffix(b"\r")


#: Every control a terminal acts on (and 0xC2, the C1 controls' lead byte) made a dot.
CONTROLS = bytes([*range(0x01, 0x09), *range(0x0B, 0x20), 0x7F, 0xC2])
NO_CONTROLS = bytes.maketrans(CONTROLS, b"." * len(CONTROLS))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000).map(lambda b: b.translate(NO_CONTROLS)), max_size=8))
def test_without_controls_the_relay_is_byte_exact(chunks: list[bytes]) -> None:
    # NUL, TAB and invalid UTF-8 included: only what a terminal would act on is escaped.
    batches = _frame(chunks)
    data = b"".join(chunks)
    out = b"".join(batch for batch, _ in batches)
    lines = data.split(b"\n")
    expected = b"".join(PREFIX + line + b"\n" for line in lines[:-1])
    expected += PREFIX + lines[-1] + b"\n" if lines[-1] else b""
    assert out == expected
    assert sum(count for _, count in batches) == out.count(b"\n")


@pytest.mark.parametrize(
    "data",
    [b"\n" * 65536, b"\r\n" * 32768, b"\x1b\n" * 32768, b"\x1b" * 65536, b"\xc2\x9b" * 32768],
    ids=["empty-lines", "crlf", "esc-lines", "esc-no-newline", "c1"],
)
def test_a_batch_stays_bounded_whatever_a_read_holds(data: bytes) -> None:
    batches = _frame([data] * 4)
    # Prefixes and newlines up to BATCH_BYTES, plus the lines' own bytes (at most a cut
    # line and one read), each escaped to at most 4 bytes.
    bound = BATCH_BYTES + 4 * (MAX_LINE + READ_SIZE)
    assert max(len(batch) for batch, _ in batches) <= bound
    assert sum(count for _, count in batches) == b"".join(b for b, _ in batches).count(b"\n")


def test_a_long_line_is_cut_in_pieces_of_max_line() -> None:
    batches = _frame([b"y" * 50000] * 4 + [b"\n"], prefix=b"p | ")
    lines = b"".join(batch for batch, _ in batches).split(b"\n")[:-1]
    assert [len(line) for line in lines] == [4 + MAX_LINE] * 3 + [4 + 200000 - 3 * MAX_LINE]


def test_escapes_are_what_the_docs_say() -> None:
    assert escape_controls(b"a\rb\r\n") == b"a\\rb\r\n"
    assert escape_controls(b"\x1b[31mred\x1b[0m\n") == b"\\x1b[31mred\\x1b[0m\n"
    assert escape_controls(b"\x07\x7f\x00\t\n") == b"\\x07\\x7f\x00\t\n"
    assert escape_controls(b"\xc2\x9b\xc2\xa0\x9b\xff\n") == b"\\xc2\\x9b\xc2\xa0\x9b\xff\n"
