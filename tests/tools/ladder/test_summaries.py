"""Pure parts of the ladder: percentiles, rung summaries, gates, prompts, --mix, compare."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.tools.ladder.compare import compare_reports
from gateway.tools.ladder.gates import GIB, NO_BASELINE, GateRung, SloThresholds, evaluate
from gateway.tools.ladder.mix import LaneShare, parse_assignments, parse_mix, parse_rungs
from gateway.tools.ladder.prompts import make_prompts
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


def test_gates_cover_the_rungs_below_the_knee() -> None:
    rungs = [
        GateRung(1, 0.2, 0.0, 0),
        GateRung(2, 0.3, 0.0, 0),
        GateRung(4, 0.5, 0.0, GIB // 2),
        GateRung(8, 2.0, 0.05, 3 * GIB),  # the knee: over every limit, outside the range
    ]
    report = evaluate(SloThresholds(interactive_p95_ttft_ms=600), rungs, knee_index=3)
    verdicts = {r.name: r.passed for r in report.results}
    assert verdicts == {
        "interactive_p95_ttft_ms": True,
        "p95_ratio": True,
        "error_rate": True,
        "swap_growth_gb": True,
    }
    assert report.passed and report.operating_rungs == 3 and report.signable == 4
    by_name = {r.name: r for r in report.results}
    assert by_name["interactive_p95_ttft_ms"].worst == "500 ms at concurrency 4"
    assert by_name["p95_ratio"].per_rung == (True, True, True, False)


def test_a_gate_failing_below_the_knee_fails_the_report() -> None:
    rungs = [GateRung(1, 0.2, 0.0, 0), GateRung(2, 0.9, 0.0, 0), GateRung(4, 1.0, 0.0, 0)]
    report = evaluate(SloThresholds(interactive_p95_ttft_ms=500), rungs, knee_index=None)
    by_name = {r.name: r for r in report.results}
    assert by_name["interactive_p95_ttft_ms"].passed is False
    assert by_name["p95_ratio"].passed is False  # 4.5x and 5x rung 1
    assert not report.passed and report.signable == 1


def test_unset_and_unmeasured_gates_are_not_checked() -> None:
    report = evaluate(SloThresholds(), [GateRung(1, 0.2, 0.0, None)], knee_index=None)
    by_name = {r.name: r for r in report.results}
    assert by_name["interactive_p95_ttft_ms"].passed is None
    assert by_name["swap_growth_gb"].passed is None
    assert by_name["swap_growth_gb"].worst == "not measured"
    assert report.passed


def test_a_knee_on_the_first_rung_still_judges_that_rung() -> None:
    report = evaluate(SloThresholds(), [GateRung(1, 0.2, 0.5, 0)], knee_index=0)
    assert report.operating_rungs == 1 and not report.passed and report.signable is None


def test_prompts_are_reproducible_distinct_and_about_the_right_length() -> None:
    a, b = make_prompts(7, 64), make_prompts(7, 64)
    assert a.prompts == b.prompts and a.sha256 == b.sha256
    assert make_prompts(8, 64).sha256 != a.sha256
    assert len(set(a.prompts)) == len(a.prompts)
    assert all(abs(len(p) / 4 - 64) < 8 for p in a.prompts)  # chars/4, as servers estimate
    assert a[len(a.prompts)] == a[0]
    with pytest.raises(ValueError):
        make_prompts(1, 4)


def test_parse_mix() -> None:
    assert parse_mix("interactive=2,batch=8,heartbeat=1/s") == (
        LaneShare("interactive", concurrency=2),
        LaneShare("batch", concurrency=8),
        LaneShare("heartbeat", rate_per_s=1.0),
    )
    for bad in ("interactive", "a=0", "a=x", "a=1,a=2", "hb=1/s", "a=-1/s"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_parse_rungs_and_assignments() -> None:
    assert parse_rungs("1,2,4,8") == (1, 2, 4, 8)
    for bad in ("", "0,1", "4,2", "1,1", "a"):
        with pytest.raises(ValueError):
            parse_rungs(bad)
    assert parse_assignments(["batch=sk-1"], "--lane-key") == {"batch": "sk-1"}
    with pytest.raises(ValueError):
        parse_assignments(["batch"], "--lane-key")


def _report(ttft95: float, rps: float) -> dict[str, object]:
    return {
        "started_at": "t",
        "target": {"model": "m", "digest": "abc"},
        "tool": {"git_revision": "r"},
        "knee": {"concurrency": 8, "rule": "ttft_ratio"},
        "rungs": [
            {
                "concurrency": 1,
                "ttft_ms": {"p50": 100.0, "p95": 100.0},
                "e2e_ms": {"p95": 500.0},
                "throughput_rps": 2.0,
                "error_rate": 0.0,
                "lanes": {"": {}},
            },
            {
                "concurrency": 2,
                "ttft_ms": {"p50": 100.0, "p95": ttft95},
                "e2e_ms": {"p95": 500.0},
                "throughput_rps": rps,
                "error_rate": 0.0,
                "lanes": {"": {}},
            },
        ],
    }


def test_compare_puts_rungs_side_by_side_with_ratios() -> None:
    text = compare_reports(_report(120.0, 3.0), _report(240.0, 1.5))
    line = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4:7] == ["120", "240", "2.00x"]  # p95 TTFT doubled
    assert cells[10:13] == ["3", "1.5", "0.50x"]  # throughput halved
    assert "knee: A 8 (ttft_ratio), B 8 (ttft_ratio)" in text


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


def test_the_ratio_gate_without_a_single_stream_rung_says_no_baseline() -> None:
    report = evaluate(SloThresholds(), [GateRung(4, 0.2, 0.0, 0)], knee_index=None)
    ratio = next(r for r in report.results if r.name == "p95_ratio")
    assert ratio.passed is None and ratio.worst == NO_BASELINE
    climbing = evaluate(SloThresholds(), [GateRung(2, 0.2, 0.0, 0), GateRung(4, 0.9, 0.0, 0)], None)
    assert next(r for r in climbing.results if r.name == "p95_ratio").passed is None
