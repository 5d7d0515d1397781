"""benchmarks.json has GuideLLM's report shape (fields as in vllm-project/guidellm's schemas)."""

from __future__ import annotations

import json

import pytest

from gateway.tools.ladder.guidellm import distribution, export
from gateway.tools.ladder.stats import INTERRUPTED, RequestRow

# GuideLLM: schemas/statistics.py DistributionSummary and Percentiles; StatusBreakdown.
SUMMARY_KEYS = {
    "mean", "median", "mode", "variance", "std_dev", "min", "max", "count", "total_sum",
    "percentiles",
}  # fmt: skip
PERCENTILE_KEYS = {"p001", "p01", "p05", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p999"}
STATUSES = {"successful", "incomplete", "errored", "total"}


def row(ttft: float | None, e2e: float, tokens: int | None, error: str | None = None) -> RequestRow:
    status = 0 if error == INTERRUPTED else (500 if error else 200)
    itl = None if ttft is None or not tokens else (e2e - ttft) / max(tokens - 1, 1)
    tps = tokens / e2e if tokens else None
    return RequestRow(2, "", 0.0, ttft, None, None, e2e, 20, tokens, status, error, itl, itl, tps)


ROWS = [
    row(0.100, 1.1, 11),
    row(0.200, 1.2, 11),
    row(0.300, 2.3, 21),
    row(None, 0.5, None, "boom"),
    row(None, 0.2, None, INTERRUPTED),
]


def test_the_report_has_guidellms_shape_and_reads_back_as_json() -> None:
    report = json.loads(json.dumps(export({"target": "http://h/v1"}, [(2, "", ROWS, 1.5)])))
    assert set(report) >= {"args", "benchmarks"}
    (bench,) = report["benchmarks"]
    assert bench["config"]["strategy"] == {"type_": "concurrent", "streams": 2}
    metrics = bench["metrics"]
    assert metrics["request_totals"] == {"successful": 3, "incomplete": 1, "errored": 1, "total": 5}
    for name in (
        "request_latency", "time_to_first_token_ms", "inter_token_latency_ms",
        "time_per_output_token_ms", "output_tokens_per_second", "prompt_token_count",
        "output_token_count",
    ):  # fmt: skip
        assert set(metrics[name]) == STATUSES, name
        for summary in metrics[name].values():
            assert set(summary) == SUMMARY_KEYS and set(summary["percentiles"]) == PERCENTILE_KEYS
    ttft = metrics["time_to_first_token_ms"]["successful"]
    assert ttft["count"] == 3 and ttft["median"] == pytest.approx(200.0)
    assert ttft["mean"] == pytest.approx(200.0) and ttft["percentiles"]["p99"] == pytest.approx(300)
    itl = metrics["inter_token_latency_ms"]["successful"]
    assert itl["percentiles"]["p50"] == pytest.approx(100.0)  # (1.2 - 0.2) / 10 tokens
    assert metrics["request_latency"]["errored"]["count"] == 1
    assert metrics["request_latency"]["incomplete"]["max"] == pytest.approx(0.2)
    assert metrics["requests_per_second"]["successful"]["mean"] == 1.5


def test_an_empty_distribution_is_zeros_as_guidellm_writes_it() -> None:
    empty = distribution([])
    assert empty["count"] == 0 and empty["mean"] == 0.0 and set(empty) == SUMMARY_KEYS
    one = distribution([4.0, 4.0, 1.0])
    assert (one["mode"], one["min"], one["max"], one["total_sum"]) == (4.0, 1.0, 4.0, 9.0)
    assert one["variance"] == pytest.approx(2.0)
