"""RequestMeasurement: TTFT, gaps and tokens from chunks with fake arrival times."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.observe.measurement import RequestMeasurement, RequestRecord
from gateway.serving.stream_parser import Api
from tests.support.paths import DATA

STREAMS = DATA / "streams"
T0 = 1_000.0


def _events(name: str, delim: bytes = b"\n\n") -> list[bytes]:
    body = (STREAMS / name).read_bytes()
    return [event + delim for event in body.split(delim) if event]


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_recorded_stream_one_event_per_chunk() -> None:
    events = _events("llama-server__chat_stream_usage.sse")  # role, 6 content, finish, usage, DONE
    m = RequestMeasurement(Api.CHAT, T0)
    times = [T0 + 0.30 + 0.01 * i + (0.5 if i == 4 else 0.0) for i in range(len(events))]
    for event, now in zip(events, times, strict=True):
        m.on_chunk(event, now)
    record = m.finish(times[-1] + 0.001, status=200)
    gaps = [b - a for a, b in itertools.pairwise(times[1:])]  # after content #1
    assert record.ttft_s == pytest.approx(times[1] - T0)
    assert record.gap_max_s == pytest.approx(max(gaps))
    assert record.gap_p95_s == pytest.approx(_nearest_rank(gaps, 0.95), rel=0.011)
    assert record.duration_s == pytest.approx(times[-1] + 0.001 - T0)
    assert (record.prompt_tokens, record.completion_tokens) == (32, 6)
    assert not record.tokens_estimated
    assert record.chunks == len(events) and record.status == 200 and record.error is None


@settings(max_examples=100, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=25),
    step=st.floats(min_value=1e-4, max_value=2.0, allow_nan=False),
)
def test_ttft_is_the_arrival_of_the_chunk_completing_the_first_output(
    cuts: list[int], step: float
) -> None:
    body = (STREAMS / "openai__chat_include_usage_excerpt.sse").read_bytes()
    first_end = body.index(b"\n\n", body.index(b'"**"')) + 2  # the first non-empty delta
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    m = RequestMeasurement(Api.CHAT, T0)
    expected_ttft, arrivals = None, []
    for i, (a, b) in enumerate(itertools.pairwise(points)):
        now = T0 + step * (i + 1)
        m.on_chunk(body[a:b], now)
        arrivals.append(now)
        if expected_ttft is None and a < first_end <= b:
            expected_ttft, first_index = now - T0, i
    record = m.finish(arrivals[-1], status=200)
    assert record.ttft_s == pytest.approx(expected_ttft)
    later = len(arrivals) - 1 - first_index
    assert record.gap_max_s == (pytest.approx(step) if later else None)
    assert record.chunks == len(arrivals)
    assert (record.prompt_tokens, record.completion_tokens) == (16, 300)


def test_no_output_means_no_ttft_and_no_gaps() -> None:
    m = RequestMeasurement(Api.RESPONSES, T0)
    for i, event in enumerate(_events("openai__responses_error.sse")):
        m.on_chunk(event, T0 + i)
    record = m.finish(T0 + 10, status=200)
    assert record.ttft_s is None and record.gap_max_s is None and record.gap_p95_s is None
    assert record.error is not None and record.error.startswith("You exceeded your current")
    assert record.completion_tokens == 0 and record.tokens_estimated


def test_explicit_error_wins_over_in_stream_error() -> None:
    m = RequestMeasurement(Api.CHAT, T0)
    m.on_chunk(b'data: {"error":{"message":"upstream said no"}}\n\n', T0 + 1)
    assert m.finish(T0 + 2, status=502, error="client_disconnected").error == "client_disconnected"
    m = RequestMeasurement(Api.CHAT, T0)
    m.on_chunk(b'data: {"error":{"message":"upstream said no"}}\n\n', T0 + 1)
    assert m.finish(T0 + 2, status=200).error == "upstream said no"


def test_unknown_body_measures_gaps_from_the_first_chunk() -> None:
    m = RequestMeasurement(None, T0)
    for now in (T0 + 1.0, T0 + 1.5, T0 + 3.5):
        m.on_chunk(b"opaque", now)
    record = m.finish(T0 + 4.0, status=200)
    assert record.ttft_s is None
    assert record.gap_max_s == pytest.approx(2.0)
    assert (record.prompt_tokens, record.completion_tokens, record.tokens_estimated) == (
        None,
        None,
        False,
    )
    assert record.chunks == 3


def test_non_streamed_body() -> None:
    m = RequestMeasurement(Api.CHAT, T0)
    m.on_body((STREAMS / "llama-server__chat_nonstream.json").read_bytes(), T0 + 0.8)
    record = m.finish(T0 + 0.8, status=200)
    assert record == RequestRecord(
        ttft_s=None,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=pytest.approx(0.8),
        prompt_tokens=30,
        completion_tokens=8,
        tokens_estimated=False,
        chunks=1,
        status=200,
        error=None,
    )


def test_output_in_an_unterminated_tail_counts_at_finish() -> None:
    m = RequestMeasurement(Api.OLLAMA_GENERATE, T0)
    m.on_chunk(b'{"response":"Hel', T0 + 0.2)
    m.on_chunk(b'lo","done":false}', T0 + 0.4)
    assert m.first_output_at is None
    record = m.finish(T0 + 1.0, status=200)
    assert record.ttft_s == pytest.approx(0.4)


def test_empty_chunks_are_ignored_and_no_chunks_means_no_tokens() -> None:
    m = RequestMeasurement(Api.OLLAMA_CHAT, T0)
    m.on_chunk(b"", T0 + 1)
    record = m.finish(T0 + 2, status=503, error="server busy")
    assert record.chunks == 0 and record.completion_tokens is None
    assert record.duration_s == pytest.approx(2.0) and record.status == 503


def test_first_output_at_is_exposed_as_soon_as_it_happens() -> None:
    events = _events("ollama__api_chat.ndjson", b"\n")
    m = RequestMeasurement(Api.OLLAMA_CHAT, T0)
    m.on_chunk(events[0], T0 + 0.25)
    assert m.first_output_at == T0 + 0.25
    m.on_chunk(events[1], T0 + 0.5)
    m.on_chunk(events[2], T0 + 4.0)
    record = m.finish(T0 + 4.0, status=200)
    assert record.gap_max_s == pytest.approx(3.5)
    assert (record.prompt_tokens, record.completion_tokens) == (10, 17)


def test_gap_memory_is_bounded_and_p95_accurate_for_long_streams() -> None:
    chunk = _events("llama-server__chat_stream_plain.sse")[1]
    m = RequestMeasurement(Api.CHAT, T0)
    now, gaps = T0, []
    for i in range(20_000):
        gap = 0.02 + (i % 97) * 0.001 + (1.5 if i % 1000 == 999 else 0.0)
        now += gap
        m.on_chunk(chunk, now)
        if i:
            gaps.append(gap)
    record = m.finish(now, status=200)
    assert record.gap_max_s == pytest.approx(max(gaps))
    assert record.gap_p95_s == pytest.approx(_nearest_rank(gaps, 0.95), rel=0.0101)
    assert m._gaps.bucket_count < 200  # white-box: histogram buckets, not 20k floats
    assert record.completion_tokens == 20_000 and record.tokens_estimated


def test_record_is_frozen() -> None:
    record = RequestMeasurement(None, T0).finish(T0, status=200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = 500  # type: ignore[misc]


@pytest.mark.bench
def test_bench_on_chunk_cost() -> None:
    """Prints µs per on_chunk after first output (scanner + gap histogram); asserts nothing."""
    events = _events("llama-server__chat_stream_plain.sse")
    best = float("inf")
    for _ in range(5):
        m = RequestMeasurement(Api.CHAT, T0)
        m.on_chunk(events[0] + events[1], T0 + 0.1)
        start = time.perf_counter()
        for i in range(5000):
            m.on_chunk(events[2], T0 + 0.2 + i * 0.01)
        best = min(best, time.perf_counter() - start)
    print(f"\nRequestMeasurement.on_chunk after first output: {best / 5000 * 1e6:.2f} us/chunk")
