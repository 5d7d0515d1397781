"""The ladder's statistics: nearest-rank percentiles and rung summaries (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.tools.ladder.stats import (
    INTERRUPTED,
    RequestRow,
    percentile,
    request_speeds,
    summarise_rung,
)


def row(
    ttft: float | None = 0.1,
    e2e: float = 1.0,
    status: int = 200,
    error: str | None = None,
    lane: str = "",
    tokens: int | None = 10,
    gap: float | None = 0.05,
) -> RequestRow:
    return RequestRow(4, lane, 0.0, ttft, gap, gap, e2e, 20, tokens, status, error)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2
    assert percentile([7.0], 0.99) == 7
    assert percentile([], 0.5) is None


def test_rung_summary_counts_errors_and_leaves_interrupted_requests_out() -> None:
    rows = [
        row(ttft=0.1, e2e=1.0),
        row(ttft=0.3, e2e=2.0),
        row(ttft=None, status=503, error="busy", tokens=None),
        row(ttft=None, status=0, error=INTERRUPTED, tokens=None),
    ]
    stats = summarise_rung(4, rows, duration_s=4.0)
    assert (stats.requests, stats.completed, stats.errors) == (3, 2, 1)
    assert stats.error_rate == pytest.approx(1 / 3)
    assert stats.ttft.p50 == 0.1 and stats.ttft.p95 == 0.3
    assert stats.e2e.p99 == 2.0
    assert stats.throughput_rps == pytest.approx(0.5)
    assert stats.tokens_per_s == pytest.approx(5.0)


def at(start: float, e2e: float, **kwargs: object) -> RequestRow:
    return dataclasses.replace(row(e2e=e2e, **kwargs), start_s=start)  # type: ignore[arg-type]


def test_throughput_is_the_completion_rate_after_the_ramp() -> None:
    # Two workers, requests of 2 s, the second worker ramped in 1 s late: completions at
    # 2, 3, 4, 5, 6, 7, one a second. The ramp's window starts at 1 s.
    rows = [at(t, 2.0) for t in (0, 2, 4, 1, 3, 5)]
    stats = summarise_rung(2, rows, duration_s=7.0, window=(1.0, 5.0))
    assert stats.throughput_rps == pytest.approx(1.0)
    assert stats.tokens_per_s == pytest.approx(10.0)
    # Failed requests do no useful work: they count for nothing.
    rows += [at(2.0, 0.5, status=500, error="boom", tokens=None)]
    assert summarise_rung(2, rows, 7.0, window=(1.0, 5.0)).throughput_rps == pytest.approx(1.0)
    # Completions before the window (the ramp) are left out: 3, 4 ... 7 → 4 in 4 s.
    rows += [at(0.0, 0.5)]
    assert summarise_rung(2, rows, 7.0, window=(2.5, 5.0)).throughput_rps == pytest.approx(1.0)
    # Without a window, or too few completions: completed over the span.
    assert summarise_rung(2, rows[:1], 6.0).throughput_rps == pytest.approx(1 / 6)


def test_a_200_with_an_in_stream_error_is_not_completed() -> None:
    stats = summarise_rung(1, [row(error="model crashed")], 1.0)
    assert (stats.completed, stats.errors) == (0, 1)


def test_request_speeds_are_tpot_after_the_first_token_and_tokens_over_the_whole_request() -> None:
    tpot, tps = request_speeds(ttft_s=0.2, e2e_s=1.2, completion_tokens=11)
    assert tpot == pytest.approx(0.1) and tps == pytest.approx(11 / 1.2)
    assert request_speeds(0.2, 1.2, 1) == (None, pytest.approx(1 / 1.2))  # no decode step
    assert request_speeds(None, 1.0, None) == (None, None)


def test_a_rung_counts_its_ttft_samples_and_summarises_itl_and_tpot() -> None:
    rows = [
        dataclasses.replace(row(ttft=0.1), itl_s=0.02, tpot_s=0.03, output_tps=9.0),
        dataclasses.replace(row(ttft=0.2), itl_s=0.04, tpot_s=0.05, output_tps=7.0),
        row(ttft=None, status=500, error="boom", tokens=None),
    ]
    stats = summarise_rung(2, rows, duration_s=2.0)
    assert stats.ttft_samples == 2
    assert (stats.itl.p50, stats.tpot.p95, stats.output_tps.p50) == (0.02, 0.05, 7.0)
