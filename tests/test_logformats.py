"""--log-format json and --log-time (docs/services.md, "Logs"); lifecycle lines around restarts.

From the outside first (pyinit as PID 1 of a PID namespace, real sidecars writing awkward
bytes), then the formatting in-process, with generated input.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pidns import TARGET_PYTHON, Namespace, wait_for
from plan_helpers import plan_for
from sandbox import PYINIT, base_environment, run

from pyinit import log, logformat
from pyinit.plan.render import render_plan
from pyinit.run.logrelay import BATCH_BYTES, MAX_LINE, JsonFramer, StampedFramer

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces")

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: What the sidecar writes: invalid UTF-8, ESC, C1 CSI, DEL, quotes, a backslash, NUL, CR.
AWKWARD = b'out \xff\xfe \x1b[2K \xc2\x9b \x7f tab\t "q" \\ nul\x00 cr\r \xc2\xa9 end'
#: Every byte a terminal acts on: C0 (the line's own newline aside), DEL, C1 in UTF-8.
TERMINAL_BYTES = re.compile(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]")
RELAYED_KEYS = ["time", "name", "stream", "line"]
OWN_KEYS = ["time", "name", "stream", "level", "line"]


def _writer(stdout: bytes, stderr: bytes) -> str:
    """A sidecar command string writing ``stdout`` and ``stderr`` (each one line), then sleeping."""
    out, err = base64.b64encode(stdout).decode(), base64.b64encode(stderr).decode()
    code = (
        "import base64, os, time; "
        f"os.write(1, base64.b64decode('{out}') + b'\\n'); "
        f"os.write(2, base64.b64decode('{err}') + b'\\n'); time.sleep(30)"
    )
    return f'-- {TARGET_PYTHON} -c "{code}"'


MAIN = [
    TARGET_PYTHON,
    "-c",
    "import os, time; os.write(1, b'main \\x1b[1m raw\\n'); time.sleep(30)",
]


def _run_until(tmp_path: Path, flags: list[str], done: bytes) -> tuple[bytes, bytes]:
    """pyinit with ``flags``, the awkward sidecar and MAIN, until stderr holds ``done``."""
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    sidecar = f"w {_writer(AWKWARD, b'err line')}"
    with out_file.open("wb") as out, err_file.open("wb") as err, Namespace(
        [*flags, "-v", "--sidecar", sidecar, "--", *MAIN], stdout=out, stderr=err
    ) as ns:  # fmt: skip
        wait_for(
            lambda: b"raw" in out_file.read_bytes() and done in err_file.read_bytes(),
            what="the sidecar's and the main's lines",
        )
        ns.signal(signal.SIGTERM)
        code, _, _ = ns.wait()
    assert code == 128 + signal.SIGTERM, err_file.read_text(errors="replace")
    return out_file.read_bytes(), err_file.read_bytes()


def _parsed(line: bytes) -> dict[str, str]:
    """One output line as JSON, checked for what every line has: a time, no terminal control."""
    assert not TERMINAL_BYTES.search(line), line
    record = json.loads(line)
    assert TIME.fullmatch(record["time"]), record
    datetime.datetime.fromisoformat(record["time"])
    return record


@root_only
def test_json_every_relayed_and_own_line_is_one_object_and_the_main_stays_raw(
    tmp_path: Path,
) -> None:
    out, err = _run_until(tmp_path, ["--log-format", "json"], b'"err line"')
    out_lines = out.split(b"\n")[:-1]
    assert b"main \x1b[1m raw" in out_lines  # the main's stdout, untouched
    relayed = [_parsed(line) for line in out_lines if not line.startswith(b"main ")]
    assert [_untimed(r) for r in relayed] == [
        {"name": "w", "stream": "stdout", "line": AWKWARD.decode(errors="replace")}
    ]
    assert list(relayed[0]) == RELAYED_KEYS
    records = [_parsed(line) for line in err.split(b"\n")[:-1]]
    own = [r for r in records if r["name"] == "pyinit"]
    assert [_untimed(r) for r in records if r["name"] != "pyinit"] == [
        {"name": "w", "stream": "stderr", "line": "err line"}
    ]
    assert own and all(list(r) == OWN_KEYS and r["stream"] == "stderr" for r in own)
    assert {r["level"] for r in own} >= {"info"}
    assert any(r["line"].startswith("started sidecar w (pid ") for r in own)


def _untimed(record: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in record.items() if key != "time"}


@root_only
def test_log_time_stamps_relayed_and_own_lines_not_the_mains(tmp_path: Path) -> None:
    out, err = _run_until(tmp_path, ["--log-time"], b"w | err line")
    stamped = re.compile(rb"(\S+) (w \| |pyinit: )")
    out_lines = out.split(b"\n")[:-1]
    assert b"main \x1b[1m raw" in out_lines
    relayed = [line for line in out_lines if not line.startswith(b"main ")]
    escaped = b' w | out \xff\xfe \\x1b[2K \\xc2\\x9b \\x7f tab\t "q" \\ nul\x00 cr\\r \xc2\xa9 end'
    assert len(relayed) == 1 and relayed[0].endswith(escaped)
    for line in [*relayed, *err.split(b"\n")[:-1]]:
        match = stamped.match(line)
        assert match and TIME.fullmatch(match[1].decode()), line
    assert re.search(rb"^\S+Z pyinit: started sidecar w \(pid \d+\)", err, re.M)


@root_only
def test_a_runs_started_or_back_line_comes_before_its_first_relayed_line(tmp_path: Path) -> None:
    """A sidecar printing its pid at once, then exiting, restarted fast; one file for both."""
    both = tmp_path / "both"
    code = "import os; os.write(1, b'%d\\n' % os.getpid())"
    sidecar = f'w backoff=0.02:0.05 max-restarts=100/60 -- {TARGET_PYTHON} -c "{code}"'
    with both.open("wb") as out, Namespace(
        ["-v", "--sidecar", sidecar, "--", "sleep", "30"], stdout=out, stderr=out
    ) as ns:  # fmt: skip
        wait_for(lambda: both.read_bytes().count(b"w | ") >= 12, what="a dozen runs")
        ns.signal(signal.SIGTERM)
        ns.wait()
    lines = both.read_text(errors="replace").splitlines()
    runs = [
        (i, line.removeprefix("w | ")) for i, line in enumerate(lines) if line.startswith("w |")
    ]
    assert len(runs) >= 12
    backs = 0
    for index, pid in runs:
        said = [
            i
            for i, line in enumerate(lines)
            if line in (f"pyinit: started sidecar w (pid {pid}): {TARGET_PYTHON} -c {code}",
                        f"pyinit: sidecar w is back (pid {pid})")
        ]  # fmt: skip
        assert said and said[0] < index, (pid, lines)
        backs += lines[said[0]].endswith(f"is back (pid {pid})")
    assert backs >= len(runs) - 1  # every run but the first is announced as back


@root_only
def test_a_sidecar_with_a_probe_is_back_once_ready_again(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    code = f"import os, time; open('{flag}', 'w').close(); time.sleep(0.3); os.unlink('{flag}')"
    sidecar = f'w ready=file:{flag} backoff=0.05:0.1 -- {TARGET_PYTHON} -c "{code}"'
    err_file = tmp_path / "stderr"
    with err_file.open("wb") as err, Namespace(
        ["--sidecar", sidecar, "--", "sleep", "30"], stderr=err
    ) as ns:  # fmt: skip
        wait_for(lambda: b"is back" in err_file.read_bytes(), what="a back line")
        ns.signal(signal.SIGTERM)
        ns.wait()
    err_lines = err_file.read_text().splitlines()
    assert any(
        re.fullmatch(rf"pyinit: sidecar w is back \(pid \d+\): ready again \(file:{flag}\)", line)
        for line in err_lines
    ), err_lines


# --- the plan ------------------------------------------------------------------------------


def test_the_choice_is_in_the_plan_and_dry_run() -> None:
    plan = plan_for(["--log-format", "json", "--", "app"])
    assert (plan.log_format, plan.log_time) == ("json", False)
    assert "logs: json, one object per line" in render_plan(plan, {})
    data = json.loads(render_plan(plan_for(["--log-time", "--", "app"]), {}, as_json=True))
    assert (data["log_format"], data["log_time"]) == ("text", True)
    assert "logs: text ('pyinit: ...'" in render_plan(plan_for(["--", "app"]), {})


def test_config_keys_and_a_bad_value(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('log-format = "json"\nlog-time = true\ncommand = ["app"]\n')
    code, out, err = run([*PYINIT, "--config", str(good), "--dry-run", "--json"],
                         env=base_environment())  # fmt: skip
    assert code == 0, err
    assert (json.loads(out)["log_format"], json.loads(out)["log_time"]) == ("json", True)
    bad = tmp_path / "bad.toml"
    bad.write_text('log-format = "xml"\n')
    code, _, err = run([*PYINIT, "--config", str(bad), "--", "true"], env=base_environment())
    assert code == 125
    assert err == f"pyinit: {bad}: key 'log-format': 'xml' is not one of text, json\n"


def test_a_refused_plan_is_told_in_json() -> None:
    code, _, err = run([*PYINIT, "--log-format", "json", "--umask", "9", "--", "true"],
                       env=base_environment())  # fmt: skip
    assert code == 125
    record = json.loads(err)
    assert record["level"] == "error" and record["name"] == "pyinit" and "--umask" in record["line"]


# --- in-process: the formats ------------------------------------------------------------------


def test_a_stamp_is_rfc3339_utc_to_the_millisecond() -> None:
    before = datetime.datetime.now(datetime.UTC)
    stamp = logformat.stamp().decode()
    after = datetime.datetime.now(datetime.UTC)
    assert TIME.fullmatch(stamp)
    when = datetime.datetime.fromisoformat(stamp)
    assert before - datetime.timedelta(milliseconds=1) <= when <= after


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.sampled_from([1, 2]))
def test_json_framing_is_valid_json_for_any_bytes(chunks: list[bytes], fd: int) -> None:
    framer = JsonFramer("db", "stdout" if fd == 1 else "stderr")
    batches = [batch for chunk in chunks for batch, _ in framer.feed(chunk)]
    last = framer.end()
    out = b"".join(batches) + (last or b"")
    sent = b"".join(chunks)
    expected = sent.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    lines = out.split(b"\n")
    assert lines.pop() == b""
    records = [_parsed(line) for line in lines]
    assert [r["line"] for r in records] == [e.decode(errors="replace") for e in expected]
    assert all(list(r) == RELAYED_KEYS and r["name"] == "db" for r in records)
    assert {r["stream"] for r in records} <= {"stdout" if fd == 1 else "stderr"}


def test_json_batches_stay_bounded_and_long_lines_are_cut() -> None:
    framer = JsonFramer("db", "stdout")
    for batch, lines in framer.feed(b"\n" * 200_000):
        assert len(batch) <= BATCH_BYTES + lines  # the per-line overhead, counted
    ((batch, _),) = framer.feed(b"y" * (MAX_LINE + 10))  # unterminated: cut at MAX_LINE
    last = framer.end()
    assert last is not None
    assert [len(json.loads(line)["line"]) for line in (batch + last).splitlines()] == [MAX_LINE, 10]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=6))
def test_stamped_lines_are_the_prefixed_ones_after_a_time(chunks: list[bytes]) -> None:
    framer = StampedFramer(b"db | ")
    out = b"".join(batch for chunk in chunks for batch, _ in framer.feed(chunk))
    for line in out.split(b"\n")[:-1]:
        stamp, _, rest = line.partition(b" ")
        assert TIME.fullmatch(stamp.decode()) and rest.startswith(b"db | ")
        shown = rest.removesuffix(b"\r").replace(b"\t", b"").replace(b"\x00", b"")
        assert not TERMINAL_BYTES.search(shown), line  # CRLF, TAB and NUL stay, as without time


@given(st.text(max_size=200), st.sampled_from(["error", "warning", "notice", "info"]))
def test_own_lines_as_json_keep_the_text_and_the_level(text: str, level: str) -> None:
    lines: list[bytes] = []
    log.set_writer(lines.append)
    log.set_format(log.JSON, False)
    try:
        {"error": log.error, "warning": log.warning, "notice": log.notice, "info": log.info}[level](
            text
        )
    finally:
        log.set_format(log.TEXT, False)
        log.set_writer(None)
    if level == "info" and log.level() < log.VERBOSE:
        assert lines == []
        return
    (line,) = lines
    record = _parsed(line.rstrip(b"\n"))
    assert list(record) == OWN_KEYS
    assert (record["name"], record["stream"], record["level"]) == ("pyinit", "stderr", level)
    if text.isprintable() and len(text) <= 200:
        assert record["line"] == text


def test_own_lines_with_time_and_text_as_before() -> None:
    lines: list[bytes] = []
    log.set_writer(lines.append)
    try:
        log.warning("plain")
        log.set_format(log.TEXT, True)
        log.warning("stamped")
    finally:
        log.set_format(log.TEXT, False)
        log.set_writer(None)
    assert lines[0] == b"pyinit: warning: plain\n"
    stamp, _, rest = lines[1].partition(b" ")
    assert TIME.fullmatch(stamp.decode()) and rest == b"pyinit: warning: stamped\n"
