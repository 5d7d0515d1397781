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
    KNOWN_FAMILIES,
    LATENCY_BUCKETS,
    BucketCounts,
    FamilyMap,
    RequestTally,
    family_guess,
    status_class,
)
from gateway.observe.rolling import LogHistogram
from gateway.serving.stream_parser import Api
from tests.support.paths import DATA

STREAMS = DATA / "streams"


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("llama3.2:1b", "llama"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("codellama:7b", "llama"),
        ("tinyllama", "llama"),
        ("qwen2.5-coder:7b", "qwen"),
        ("Qwen/Qwen3-30B-A3B", "qwen"),
        ("mistral-small:24b", "mistral"),
        ("mixtral:8x7b", "mixtral"),
        ("gemma3:4b", "gemma"),
        ("phi4-mini", "phi"),
        ("deepseek-r1:14b", "deepseek"),
        ("gpt-oss:20b", "gpt"),
        ("nomic-embed-text", "nomic"),
        ("hf.co/bartowski/SmolLM2-360M-GGUF", "smollm"),
        ("sim-fast", "sim"),
        ("7b-model", "other"),
        ("x" * 30, "other"),
    ],
)
def test_family_guess(model: str, family: str) -> None:
    assert family_guess(model) == family


def test_family_map_keeps_a_bounded_set() -> None:
    families = FamilyMap(max_unknown=3)
    seen = {families.family(f"{a}{b}model:1b") for a, b in itertools.product("pqrs", "xyz")}
    assert seen == {"pxmodel", "pymodel", "pzmodel", "other"}  # first three come, first served
    assert families.family("pxmodel:70b") == "pxmodel"  # an admitted family stays
    assert families.family("llama3:8b") == "llama"  # known families are never capped
    assert families.family(None) == "-" and families.family("") == "-"
    for i in range(10_000):  # endless distinct names: the cache stops growing
        families.family(f"llama-{i}")
    assert len(families._cache) <= 4096


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
    assert tally.requests == {("chat", "mini", "qwen", "2xx"): 1}
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
    assert set(KNOWN_FAMILIES) >= {"llama", "qwen"}
