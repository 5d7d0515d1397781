"""Per-request rows and per-rung summaries: nearest-rank percentiles over recorded requests.

Owns what one request row holds and how a rung is summarised (TTFT, worst gap, end-to-end
latency, throughput, error rate). Must not read the clock or do I/O: rows carry their own
times (seconds since the ladder started, one monotonic clock for requests and signals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

INTERRUPTED = "interrupted"
"""Error text of a request cut short by Ctrl-C: kept in the CSV, left out of the statistics."""


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request the ladder made; times in seconds, `start_s` since the ladder began."""

    rung: int  # the rung's concurrency
    lane: str
    start_s: float
    ttft_s: float | None
    gap_max_s: float | None
    gap_p95_s: float | None
    e2e_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    status: int  # HTTP status; 0 when no response came (connection error, interrupted)
    error: str | None
    itl_s: float | None = None  # mean gap between chunks after the first output
    tpot_s: float | None = None  # (e2e - TTFT) / (completion tokens - 1)
    output_tps: float | None = None  # completion tokens / e2e: the request's own speed

    @property
    def ok(self) -> bool:
        return self.error is None and 200 <= self.status < 300

    @property
    def interrupted(self) -> bool:
        return self.error == INTERRUPTED


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None


NO_PERCENTILES = Percentiles(None, None, None)


@dataclass(frozen=True, slots=True)
class RungStats:
    """One rung (or one lane of a mixed step) summarised."""

    concurrency: int
    lane: str
    duration_s: float  # rung start to the last request's end (in-flight requests drain)
    requests: int  # counted requests (interrupted ones excluded)
    completed: int  # 2xx without an error
    errors: int
    ttft: Percentiles
    gap: Percentiles  # over each request's worst inter-chunk gap
    e2e: Percentiles
    throughput_rps: float  # completed requests per second (see `summarise_rung`)
    tokens_per_s: float  # completion tokens of completed requests per second
    partial: bool = False  # cut short by Ctrl-C
    ttft_samples: int = 0  # how many TTFTs the percentiles rest on
    itl: Percentiles = NO_PERCENTILES
    tpot: Percentiles = NO_PERCENTILES
    output_tps: Percentiles = NO_PERCENTILES
    rate_per_s: float = 0.0  # an open-loop lane's start rate (its `concurrency` is then 0)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def percentiles(values: Sequence[float]) -> Percentiles:
    if not values:
        return NO_PERCENTILES
    return Percentiles(percentile(values, 0.50), percentile(values, 0.95), percentile(values, 0.99))


def summarise_rung(
    concurrency: int,
    rows: Sequence[RequestRow],
    duration_s: float,
    *,
    lane: str = "",
    window: tuple[float, float] | None = None,
    partial: bool = False,
    rate_per_s: float = 0.0,
) -> RungStats:
    """Summarise the requests of one rung (all of them one lane's, or the whole rung's).

    Throughput is the completion rate once the rung is under way: with the completions
    after the ramp (`window[0]`; those of the drain included) at times e1..en, it is
    (n - 1) / (en - e1). Measured from one completion to another, it has no window edge
    to fall on either side of: counting whole requests in a fixed window swings by one
    request's worth, a lot for a short rung. Without a window, or with fewer than two such
    completions, it is completed requests over `duration_s`.
    """
    counted = [row for row in rows if not row.interrupted]
    done = [row for row in counted if row.ok]
    tokens = sum(row.completion_tokens or 0 for row in done)
    rps = _throughput(done, duration_s, window)
    ttfts = [row.ttft_s for row in done if row.ttft_s is not None]
    return RungStats(
        concurrency=concurrency,
        lane=lane,
        duration_s=duration_s,
        requests=len(counted),
        completed=len(done),
        errors=len(counted) - len(done),
        ttft=percentiles(ttfts),
        gap=percentiles([row.gap_max_s for row in done if row.gap_max_s is not None]),
        e2e=percentiles([row.e2e_s for row in done]),
        throughput_rps=rps,
        tokens_per_s=rps * tokens / len(done) if done else 0.0,
        partial=partial,
        ttft_samples=len(ttfts),
        itl=percentiles([row.itl_s for row in done if row.itl_s is not None]),
        tpot=percentiles([row.tpot_s for row in done if row.tpot_s is not None]),
        output_tps=percentiles([row.output_tps for row in done if row.output_tps is not None]),
        rate_per_s=rate_per_s,
    )


def request_speeds(
    ttft_s: float | None, e2e_s: float, completion_tokens: int | None
) -> tuple[float | None, float | None]:
    """(TPOT, output tokens/s) of one request: TPOT is the decode time per token after the
    first, as `vllm bench serve` reports it; tokens/s is over the request's whole duration."""
    tokens = completion_tokens or 0
    tpot = (e2e_s - ttft_s) / (tokens - 1) if ttft_s is not None and tokens > 1 else None
    tps = tokens / e2e_s if tokens and e2e_s > 0 else None
    return tpot, tps


def _throughput(
    done: Sequence[RequestRow], duration_s: float, window: tuple[float, float] | None
) -> float:
    if not done:
        return 0.0
    if window is not None:
        ends = sorted(e for row in done if (e := row.start_s + row.e2e_s) >= window[0])
        if len(ends) >= 2 and ends[-1] > ends[0]:
            return (len(ends) - 1) / (ends[-1] - ends[0])
    return len(done) / max(duration_s, 1e-9)


def rung_span(rows: Sequence[RequestRow], started_s: float) -> float:
    """Seconds from the rung's start to the end of its last request (0 with no requests)."""
    ends = [row.start_s + row.e2e_s for row in rows]
    return max(ends) - started_s if ends else 0.0
