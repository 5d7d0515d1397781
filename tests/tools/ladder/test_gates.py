"""The ladder's SLO gates: judged over the rungs below the knee (pure)."""

from __future__ import annotations

from gateway.tools.ladder.gates import GIB, NO_BASELINE, GateRung, SloThresholds, evaluate


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


def test_the_ratio_gate_without_a_single_stream_rung_says_no_baseline() -> None:
    report = evaluate(SloThresholds(), [GateRung(4, 0.2, 0.0, 0)], knee_index=None)
    ratio = next(r for r in report.results if r.name == "p95_ratio")
    assert ratio.passed is None and ratio.worst == NO_BASELINE
    climbing = evaluate(SloThresholds(), [GateRung(2, 0.2, 0.0, 0), GateRung(4, 0.9, 0.0, 0)], None)
    assert next(r for r in climbing.results if r.name == "p95_ratio").passed is None
