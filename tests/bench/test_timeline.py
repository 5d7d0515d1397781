"""The S1 timeline's parser, on `perf trace` output recorded here (one request through lanegate)."""

from __future__ import annotations

import pytest

from tests.bench.timeline import parse, spans
from tests.support.paths import DATA

# `perf trace -p client,gateway,responder`: one S1 request relayed by lanegate (2026-11-26).
# A call that another process's call interrupts is printed twice: unfinished, then
# "[continued]" with its duration; thread 13467 (the gateway's worker) is not watched.
RECORDED = (DATA / "perf-trace-s1.txt").read_text()
NAMES = {13459: "client", 13466: "proxy", 13461: "responder"}


def test_parse_keeps_named_processes_and_merges_split_calls() -> None:
    calls = parse(RECORDED, NAMES)
    assert [c.who for c in calls].count("proxy") == 6  # the unfinished halves are dropped
    split = next(c for c in calls if c.size == 245 and c.who == "proxy")
    assert (split.start_ms, split.end_ms) == pytest.approx((3294.834, 3294.948))
    assert all(c.who in NAMES.values() for c in calls)  # thread 13467 is not watched


def test_spans_split_one_relayed_request_into_hops_and_work() -> None:
    rows = spans(parse(RECORDED, NAMES), request_bytes=200, chunk_bytes=100)
    assert list(rows) == ["proxied"]
    (row,) = rows["proxied"]
    expected = {
        "request": 3294.376 - 3292.878,  # client's write → upstream has read it
        "first_chunk": 3316.366 - 3315.571,  # upstream's first chunk → client has read it
        "wake_proxy": 3293.252 - 3292.878,
        "proxy_request_work": 3293.872 - 3293.252,
        "wake_upstream": 3294.376 - 3293.872,
        "wake_proxy_chunk": 3315.822 - 3315.571,  # not the 80-byte header write
        "proxy_chunk_work": 3315.931 - 3315.822,
        "wake_client": 3316.366 - 3315.931,
    }
    assert row == pytest.approx(expected)


def test_a_direct_request_has_no_proxy_hops() -> None:
    direct = "\n".join(
        line for line in RECORDED.splitlines() if "/13466 " not in line and "3295.020" not in line
    )
    rows = spans(parse(direct, NAMES), request_bytes=200, chunk_bytes=100)
    assert list(rows) == ["direct"]
    assert set(rows["direct"][0]) == {"request", "first_chunk"}
