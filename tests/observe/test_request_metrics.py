"""The pure tallies behind /metrics: label bounds, bucket semantics, folding gap histograms."""

from __future__ import annotations

import dataclasses
import itertools
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.observe.measurement import RequestMeasurement, RequestRecord
from gateway.observe.request_metrics import (
    GAP_BUCKETS,
    LATENCY_BUCKETS,
    BoundedNames,
    BucketCounts,
    RequestTally,
    model_label,
    status_class,
)
from gateway.observe.rolling import LogHistogram
from gateway.serving.stream_parser import Api
from tests.support.paths import DATA

STREAMS = DATA / "streams"


def test_model_names_stay_bounded_and_only_known_ones_become_labels() -> None:
    tally = RequestTally(max_models=3)
    for model in ("llama3.1:8b", "llama3.2:3b", "typo-model", "fourth", "fifth", None):
        tally.observe("chat", "mini", model, None, _record())
    counted = {key[2] for key in tally.requests}
    assert counted == {"llama3.1:8b", "llama3.2:3b", "typo-model", "other", "-"}
    shown = tally.requests_by_model({"llama3.1:8b", "llama3.2:3b"})
    # Two llamas stay apart (no family merging); names nobody knows are `other`.
    assert shown == {
        ("chat", "mini", "llama3.1:8b", "2xx"): 1,
        ("chat", "mini", "llama3.2:3b", "2xx"): 1,
        ("chat", "mini", "other", "2xx"): 3,
        ("chat", "mini", "-", "2xx"): 1,
    }
    assert model_label("x", set()) == "other" and model_label("-", set()) == "-"


@given(st.lists(st.text(min_size=1, max_size=8), max_size=300), st.integers(1, 20))
def test_counted_names_never_pass_the_cap(names: list[str], cap: int) -> None:
    bounded = BoundedNames(cap)
    keys = {bounded.key(name) for name in names}
    assert len(keys - {"other", "-"}) <= cap


def test_tokens_per_client() -> None:
    tally = RequestTally(max_clients=1)
    tally.observe("chat", "mini", "m", None, _record(), "alice")
    tally.observe("chat", "mini", "m", None, _record(), "bob")  # over the cap: other
    tally.observe("chat", "mini", "m", None, _record())  # no clients in the policy
    assert tally.client_tokens == {
        ("alice", "prompt"): 10,
        ("alice", "completion"): 5,
        ("other", "prompt"): 10,
        ("other", "completion"): 5,
        ("-", "prompt"): 10,
        ("-", "completion"): 5,
    }


def test_status_class() -> None:
    assert [status_class(s) for s in (200, 204, 301, 400, 429, 499, 502, 0, 600)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "4xx",
        "5xx",
        "other",
        "other",
    ]


def test_bucket_bounds_are_le() -> None:
    counts = BucketCounts((0.01, 0.1, 1.0))
    for value in (0.0, 0.01, 0.010001, 0.1, 5.0):
        counts.observe(value)
    assert counts.cumulative() == [("0.01", 2), ("0.1", 4), ("1.0", 4), ("+Inf", 5)]
    assert counts.count == 5
    assert counts.total == pytest.approx(5.120001)


def _away_from_bounds(value: float) -> bool:
    return all(abs(value - bound) > 0.02 * bound for bound in GAP_BUCKETS)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.0, max_value=60.0, allow_nan=False).filter(_away_from_bounds),
        min_size=1,
        max_size=200,
    )
)
def test_folding_a_log_histogram_matches_direct_observation(values: list[float]) -> None:
    """Gaps further than the 1% relative error from a bound land in the same bucket either way;
    the count is always exact."""
    direct, folded, log = BucketCounts(GAP_BUCKETS), BucketCounts(GAP_BUCKETS), LogHistogram()
    for value in values:
        direct.observe(value)
        log.add(value)
    folded.fold(log, sum(values))
    assert folded.counts == direct.counts
    assert folded.total == pytest.approx(direct.total)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), max_size=40))
def test_gap_sum_is_the_exact_sum_of_the_gaps(steps: list[float]) -> None:
    events = [
        e + b"\n\n"
        for e in (STREAMS / "llama-server__chat_stream_usage.sse").read_bytes().split(b"\n\n")
        if e
    ]
    m = RequestMeasurement(Api.CHAT, 100.0)
    times = list(itertools.accumulate([0.3, *steps[: len(events) - 1]], initial=100.0))[1:]
    for event, now in zip(events, times, strict=False):
        m.on_chunk(event, now)
    record = m.finish(times[-1] + 0.01, status=200)
    gaps = [b - a for a, b in itertools.pairwise(times[1 : len(events)])]  # after content #1
    if not gaps:
        assert record.gaps is None and record.gap_sum_s is None
        return
    assert record.gaps is not None and record.gaps.count == len(gaps)
    assert record.gap_sum_s == pytest.approx(sum(gaps), abs=1e-9)


def _record(**changes: object) -> RequestRecord:
    base = RequestRecord(
        ttft_s=0.2,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=1.5,
        prompt_tokens=10,
        completion_tokens=5,
        tokens_estimated=False,
        chunks=3,
        status=200,
        error=None,
    )
    return dataclasses.replace(base, **changes)


def test_tally_counts_one_relayed_request() -> None:
    tally = RequestTally()
    tally.observe("chat", "mini", "qwen2.5:7b", 0.003, _record())
    assert tally.requests == {("chat", "mini", "qwen2.5:7b", "2xx"): 1}
    assert tally.tokens == {("chat", "mini", "prompt"): 10, ("chat", "mini", "completion"): 5}
    ttft = tally.ttft[("chat", "mini")]
    assert ttft.counts[bisect_left(LATENCY_BUCKETS, 0.2)] == 1 and ttft.count == 1
    assert tally.duration[("chat", "mini")].total == 1.5
    assert tally.queue_wait["chat"].count == 1
    assert tally.rejections == {} and tally.gaps == {}


def test_tally_counts_a_rejection_by_reason_only() -> None:
    tally = RequestTally(max_reasons=2)
    for code in ("lane_queue_full", "token_budget", "offload_shed", "Free text: not a code"):
        refused = _record(status=429, rejected=True, error=code, ttft_s=None, chunks=0)
        tally.observe("batch", "-", "m", None, refused)
    assert tally.rejections == {
        ("batch", "lane_queue_full"): 1,
        ("batch", "token_budget"): 1,
        ("batch", "other"): 2,  # over the cap, and not code-like
    }
    assert tally.requests[("batch", "-", "m", "4xx")] == 4
    assert ("batch", "-") not in tally.duration and ("batch", "-") not in tally.ttft
    assert not any(key[0] == "batch" for key in tally.tokens)


def test_tally_folds_gaps() -> None:
    log = LogHistogram()
    for gap in (0.003, 0.02, 0.02, 7.0):
        log.add(gap)
    tally = RequestTally()
    tally.observe("chat", "mini", None, None, _record(gaps=log, gap_sum_s=7.043))
    gaps = tally.gaps[("chat", "mini")]
    assert gaps.count == 4 and gaps.total == 7.043
    assert dict(gaps.cumulative())["0.005"] == 1
    assert dict(gaps.cumulative())["0.025"] == 3
    assert dict(gaps.cumulative())["10.0"] == 4
