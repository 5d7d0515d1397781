"""`benchmarks.json`: the run in the shape GuideLLM's report has, for tools that read it.

GuideLLM (vllm-project/guidellm) saves `{"args": ..., "benchmarks": [...]}`; each benchmark's
`metrics` holds, per metric, a StatusDistributionSummary: `successful`, `incomplete`,
`errored` and `total`, each a DistributionSummary (`mean, median, mode, variance, std_dev,
min, max, count, total_sum, percentiles{p001..p999}`). One benchmark here is one rung (one
lane of a rung with `--mix`), strategy "concurrent" with that many streams. Filled: request
totals and latency, TTFT, ITL, TPOT, output tokens/s (per request, over its whole duration),
prompt and output token counts, requests/s. Not filled (GuideLLM-only): scheduler timings,
per-modality metrics. `incomplete` holds requests cut short by Ctrl-C.

Pure: request rows in, a JSON-ready dict out. Percentiles are nearest-rank (`stats`), so a
p99 here is the ladder's p99, not GuideLLM's interpolated one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.tools.ladder.stats import RequestRow, percentile

_PERCENTILES = (
    ("p001", 0.001), ("p01", 0.01), ("p05", 0.05), ("p10", 0.10), ("p25", 0.25),
    ("p50", 0.50), ("p75", 0.75), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99),
    ("p999", 0.999),
)  # fmt: skip

Metric = Callable[[RequestRow], float | None]
_METRICS: tuple[tuple[str, Metric], ...] = (
    ("request_latency", lambda r: r.e2e_s),
    ("time_to_first_token_ms", lambda r: None if r.ttft_s is None else r.ttft_s * 1000),
    ("inter_token_latency_ms", lambda r: None if r.itl_s is None else r.itl_s * 1000),
    ("time_per_output_token_ms", lambda r: None if r.tpot_s is None else r.tpot_s * 1000),
    ("output_tokens_per_second", lambda r: r.output_tps),
    ("prompt_token_count", lambda r: r.prompt_tokens),
    ("output_token_count", lambda r: r.completion_tokens),
)


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """GuideLLM's DistributionSummary of plain values (zeros when there are none, as there)."""
    if not values:
        zeros = dict.fromkeys(("mean", "median", "mode", "variance", "std_dev", "min", "max"), 0.0)
        return {**zeros, "count": 0, "total_sum": 0.0, "percentiles": _percentiles([0.0])}
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / n
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    mode = min(counts, key=lambda v: (-counts[v], v))
    return {
        "mean": mean,
        "median": percentile(values, 0.5),
        "mode": mode,
        "variance": variance,
        "std_dev": variance**0.5,
        "min": min(values),
        "max": max(values),
        "count": n,
        "total_sum": sum(values),
        "percentiles": _percentiles(values),
    }


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {name: percentile(values, q) for name, q in _PERCENTILES}


def status_distribution(rows: Sequence[RequestRow], metric: Metric) -> dict[str, Any]:
    groups = {
        "successful": [r for r in rows if r.ok],
        "incomplete": [r for r in rows if r.interrupted],
        "errored": [r for r in rows if not r.ok and not r.interrupted],
        "total": list(rows),
    }
    return {
        status: distribution([v for r in group if (v := metric(r)) is not None])
        for status, group in groups.items()
    }


def benchmark(
    concurrency: int, lane: str, rows: Sequence[RequestRow], rps: float
) -> dict[str, Any]:
    ok = sum(1 for r in rows if r.ok)
    cut = sum(1 for r in rows if r.interrupted)
    metrics: dict[str, Any] = {
        "request_totals": {
            "successful": ok,
            "incomplete": cut,
            "errored": len(rows) - ok - cut,
            "total": len(rows),
        },
        "requests_per_second": {"successful": distribution([rps]) if ok else distribution([])},
    }
    metrics.update({name: status_distribution(rows, metric) for name, metric in _METRICS})
    return {
        "type_": "generative_benchmark",
        "config": {"strategy": {"type_": "concurrent", "streams": concurrency}, "lane": lane},
        "metrics": metrics,
    }


def export(
    args: Mapping[str, Any],
    steps: Sequence[tuple[int, str, Sequence[RequestRow], float]],
) -> dict[str, Any]:
    """`steps`: (concurrency, lane, rows, completed req/s) per rung (per lane with --mix)."""
    return {
        "generated_by": "lanegate ladder (GuideLLM report shape; see docs/ladder.md)",
        "args": dict(args),
        "benchmarks": [benchmark(c, lane, rows, rps) for c, lane, rows, rps in steps],
    }
