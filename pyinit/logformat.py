"""Log lines with RFC 3339 UTC times (``--log-time``) and as JSON (``--log-format json``).

Imported only when one of those is asked for: the exec path and a default
run never load it (nor ``time`` or ``_json``).  See docs/services.md, "Logs".

* A time is UTC to the millisecond, ``2026-12-07T21:40:37.123Z``, taken when
  the line is written by pyinit (its own) or read from the pipe (relayed:
  one time per read, shared by the lines of that read).
* A JSON line is one object: ``time``, ``name``, ``stream`` (``stdout`` or
  ``stderr``), for pyinit's own lines ``level``, then ``line`` (without its
  newline).  Bytes that are not UTF-8 become U+FFFD: every line is valid
  JSON for any parser (a lone surrogate escape is not).  Control characters
  are ``\\uXXXX`` escapes, DEL and the C1 controls included, so a JSON line
  cannot act on a terminal either.
"""

from __future__ import annotations

import time

try:
    # The C encoder, without json/__init__ (which imports re): one call per line.
    from _json import encode_basestring as _quoted
except ImportError:  # pragma: no cover - every CPython build has _json
    from json.encoder import py_encode_basestring as _quoted

#: Characters a JSON string may hold as they are but a terminal acts on (DEL, C1), escaped.
_TERMINAL = tuple((chr(c), f"\\u{c:04x}") for c in (0x7F, *range(0x80, 0xA0)))

_second = -1
_second_text = b""


def stamp() -> bytes:
    """Now, as RFC 3339 UTC to the millisecond: ``2026-12-07T21:40:37.123Z``."""
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        # One strftime a second, not one a line.
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        _second = second
    return b"%s.%03dZ" % (_second_text, int((now - second) * 1000))


def quoted(text: str) -> str:
    """``text`` as a JSON string literal, quotes included, no control character left raw."""
    literal: str = _quoted(text)
    return literal if literal.isascii() and "\x7f" not in literal else _terminal_safe(literal)


def json_head(when: bytes, name: str, stream: str) -> str:
    """The start of one JSON line, up to the ``line`` value: ``{"time":...,"line":``."""
    return f'{{"time":"{when.decode()}","name":{quoted(name)},"stream":"{stream}","line":'


def json_lines(head: str, lines: list[bytes], suspect: bool = True) -> bytes:
    """Every line as one JSON object, each starting with ``head``, each ending with a newline.

    A handful of C-level passes over the batch, one C call per line.
    ``suspect`` False promises that the lines hold neither DEL nor 0xC2 (the
    lead byte of the C1 controls in UTF-8): nothing to look for then.
    """
    text = b"\n".join(lines).decode("utf-8", "replace")
    literals = map(_quoted, text.split("\n"))
    body = ("}\n" + head).join(literals)
    if suspect:
        body = _terminal_safe(body)
    return f"{head}{body}}}\n".encode()


def _terminal_safe(literal: str) -> str:
    """``literal`` with DEL and the C1 controls as ``\\uXXXX``: one C-level search each."""
    for char, shown in _TERMINAL:
        if char in literal:
            literal = literal.replace(char, shown)
    return literal


def own_json(level: str, text: str) -> bytes:
    """One of pyinit's own lines as JSON: name ``pyinit``, stream ``stderr``, its level."""
    return (
        f'{{"time":"{stamp().decode()}","name":"pyinit","stream":"stderr",'
        f'"level":"{level}","line":{quoted(text)}}}\n'
    ).encode()
