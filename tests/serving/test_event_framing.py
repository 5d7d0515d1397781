"""Event framing: forwarded bytes always end on an event boundary, and nothing is lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.serving.event_framing import MAX_PENDING, EventFramer

SSE = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
NDJSON = b'{"a":1}\n{"b":2}\n{"done":true}\n'


def test_whole_events_pass_at_once() -> None:
    framer = EventFramer(ndjson=False)
    assert framer.push(SSE) == SSE
    assert framer.flush() == b""


def test_half_event_is_held_until_complete() -> None:
    framer = EventFramer(ndjson=False)
    assert framer.push(b'data: {"a":1}\n\ndata: {"b"') == b'data: {"a":1}\n\n'
    assert framer.push(b":2}\n\n") == b'data: {"b":2}\n\n'


def test_crlf_delimiters() -> None:
    framer = EventFramer(ndjson=False)
    assert framer.push(b"data: 1\r\n\r\ndata: 2") == b"data: 1\r\n\r\n"
    assert framer.flush() == b"data: 2"


def test_ndjson_lines() -> None:
    framer = EventFramer(ndjson=True)
    assert framer.push(b'{"a":1}\n{"b"') == b'{"a":1}\n'
    assert framer.discard() is True
    assert framer.push(b"") == b""


def test_no_delimiter_is_not_held_forever() -> None:
    framer = EventFramer(ndjson=False)
    blob = b"x" * (MAX_PENDING + 10)
    assert framer.push(blob) == blob


@given(st.sampled_from([SSE, NDJSON]), st.lists(st.integers(0, 60), max_size=10))
def test_any_split_forwards_everything_on_boundaries(body: bytes, cuts: list[int]) -> None:
    ndjson = body is NDJSON
    framer = EventFramer(ndjson=ndjson)
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    out = [framer.push(piece) for piece in pieces]
    assert b"".join(out) + framer.flush() == body
    for sent in out:
        assert sent == b"" or sent.endswith(b"\n" if ndjson else b"\n\n")
