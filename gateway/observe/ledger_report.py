"""The arithmetic of `lanegate report`: durations, per-group summaries, and a plain text table.

Owns: turning ledger rows (plain tuples, as read from SQLite) into per-lane / per-upstream
summaries: request count, 4xx / 5xx counts, error rate, TTFT p50/p95/p99 and token totals.
Must not: read the clock, open files or print: the command does that and passes `now` and
the rows in.

Definitions.
- An error is any row with status >= 400: rejections (401, 429, 503...), upstream failures
  (502, 504, passed-through 5xx) and client disconnects (499). The 4xx and 5xx columns show
  which side failed.
- TTFT percentiles are nearest-rank over the rows that have a TTFT (streamed responses that
  produced output); a group without any shows "-".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

# The ledger's columns, in table order; `LedgerRow` tuples follow this order exactly.
COLUMNS = (
    "ts",
    "request_id",
    "client",
    "lane",
    "model",
    "upstream",
    "path",
    "status",
    "error",
    "queue_ms",
    "ttft_ms",
    "gap_max_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "trace_id",
)
LedgerRow = tuple[
    float,  # ts: wall-clock seconds since the epoch when the request finished
    str,  # request_id
    str | None,  # client (policy client name; None when the gateway has no clients)
    str,  # lane ("-" when refused before classification)
    str | None,  # model
    str,  # upstream ("-" when none was tried)
    str,  # path
    int,  # status
    str | None,  # error code
    float | None,  # queue_ms
    float | None,  # ttft_ms
    float | None,  # gap_max_ms
    float,  # duration_ms
    int | None,  # prompt_tokens
    int | None,  # completion_tokens
    str | None,  # trace_id: the client's W3C trace id (32 hex), if it sent a traceparent
]
_COL = {name: i for i, name in enumerate(COLUMNS)}
# Typed positions of the columns the summary reads (Final: mypy keeps the tuple item types).
_STATUS: Final = 7
_TTFT: Final = 10
_PROMPT: Final = 13
_COMPLETION: Final = 14

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `30m`, `24h`, `7d` (also `s`, `w`); ValueError with a usable message."""
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: write a positive number and a unit, "
            "e.g. 30m, 24h or 7d (units: s, m, h, d, w)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def retention_cutoff(now: float, retention_days: float) -> float:
    """Rows that finished before this wall-clock time are past retention."""
    return now - retention_days * 86400


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    name: str
    count: int
    client_errors: int  # 4xx, including 499 (client left)
    server_errors: int  # 5xx
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def error_rate(self) -> float:
        return (self.client_errors + self.server_errors) / self.count if self.count else 0.0


def summarize(rows: Iterable[LedgerRow], by: str) -> list[Summary]:
    """One summary per value of column `by` (e.g. "lane", "upstream"), sorted by name."""
    key = _COL[by]
    groups: dict[str, list[LedgerRow]] = {}
    for row in rows:
        groups.setdefault(str(row[key] if row[key] is not None else "-"), []).append(row)
    return [_summary(name, groups[name]) for name in sorted(groups)]


def _summary(name: str, rows: list[LedgerRow]) -> Summary:
    statuses = [row[_STATUS] for row in rows]
    ttfts = sorted(v for row in rows if (v := row[_TTFT]) is not None)
    return Summary(
        name=name,
        count=len(rows),
        client_errors=sum(1 for s in statuses if 400 <= s < 500),
        server_errors=sum(1 for s in statuses if s >= 500),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        ttft_p99_ms=percentile(ttfts, 99),
        prompt_tokens=sum(row[_PROMPT] or 0 for row in rows),
        completion_tokens=sum(row[_COMPLETION] or 0 for row in rows),
    )


SUMMARY_HEADERS = (
    "requests",
    "4xx",
    "5xx",
    "error %",
    "ttft p50 ms",
    "p95 ms",
    "p99 ms",
    "prompt tok",
    "completion tok",
)


def summary_cells(summary: Summary) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    return [
        summary.name,
        str(summary.count),
        str(summary.client_errors),
        str(summary.server_errors),
        f"{summary.error_rate * 100:.1f}",
        ms(summary.ttft_p50_ms),
        ms(summary.ttft_p95_ms),
        ms(summary.ttft_p99_ms),
        str(summary.prompt_tokens),
        str(summary.completion_tokens),
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        aligned: list[Callable[[int], str]] = [
            (cell.ljust if i == 0 else cell.rjust) for i, cell in enumerate(cells)
        ]
        return "  ".join(pad(w) for pad, w in zip(aligned, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def render_summaries(title: str, summaries: Sequence[Summary]) -> str:
    rows = [summary_cells(s) for s in summaries]
    return render_table((title, *SUMMARY_HEADERS), rows)
