"""W3C trace context parsing (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.serving.trace import (
    MAX_MEMBERS,
    MAX_TRACESTATE,
    parse_traceparent,
    trace_context,
    tracestate,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

hexes = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)


def _headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_valid_traceparent_and_tracestate_are_forwarded_unchanged() -> None:
    found = trace_context(_headers(("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")))
    assert found is not None and found.trace_id == TRACE
    assert found.headers() == {"traceparent": PARENT, "tracestate": "congo=t61rcWkgMzE"}


def test_repeated_tracestate_fields_combine() -> None:
    found = trace_context(
        _headers(("traceparent", PARENT), ("tracestate", "a=1"), ("tracestate", "b=2"))
    )
    assert found is not None and found.tracestate == "a=1,b=2"


def test_later_versions_may_add_fields_but_00_may_not() -> None:
    assert parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-01-what-comes-next") is not None
    assert parse_traceparent(PARENT + "-extra") is None


def test_invalid_traceparents_drop_the_whole_context() -> None:
    bad = [
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # version ff is forbidden
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        PARENT.upper(),  # upper-case hex
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",  # short trace id
        "",
    ]
    for value in bad:
        assert trace_context(_headers(("traceparent", value), ("tracestate", "a=1"))) is None
    assert trace_context(_headers(("tracestate", "a=1"))) is None  # state alone: nothing
    two = _headers(("traceparent", PARENT), ("traceparent", PARENT))
    assert trace_context(two) is None


def test_tracestate_beyond_the_limits_is_dropped_not_the_traceparent() -> None:
    too_many = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS + 1))
    too_long = "k=" + "v" * MAX_TRACESTATE
    for value in (too_many, too_long, "no-equals-sign", "k=v\x7f"):
        assert tracestate(value) is None
        found = trace_context(_headers(("traceparent", PARENT), ("tracestate", value)))
        assert found is not None and found.headers() == {"traceparent": PARENT}
    assert tracestate(" a=1 , ,b=2 ") == "a=1,b=2"


@given(trace=hexes, parent=hexes, flags=hexes)
def test_only_well_formed_ids_are_accepted(trace: str, parent: str, flags: str) -> None:
    value = f"00-{trace}-{parent}-{flags}"
    well_formed = (
        len(trace) == 32 and len(parent) == 16 and len(flags) == 2 and set(trace) != {"0"}
    ) and set(parent) != {"0"}
    found = parse_traceparent(value)
    assert (found is not None) == well_formed
    if found is not None:
        assert found == (trace, value)


@given(st.binary(max_size=200), st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(parent: bytes, state: bytes) -> None:
    found = trace_context([(b"traceparent", parent), (b"tracestate", state)])
    if found is not None:
        assert len(found.trace_id) == 32
        assert found.tracestate is None or len(found.tracestate) <= MAX_TRACESTATE
