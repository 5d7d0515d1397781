"""The arithmetic of `lanegate report`: durations, per-group summaries, and a plain text table.

Owns: turning ledger rows (plain tuples, as read from SQLite) into summaries grouped by any
combination of lane, upstream, client and model: request count, 4xx / 5xx counts, error rate,
errors by code, queue wait, TTFT and duration percentiles, token totals; and explaining the
rows that have no lane. Must not: read the clock, open files or print: the command does that
and passes `now` and the rows in.

Definitions.
- An error is any row with status >= 400: rejections (401, 429, 503...), upstream failures
  (502, 504, passed-through 5xx) and client disconnects (499). The 4xx and 5xx columns show
  which side failed; `errors` counts each `status code` pair.
- Percentiles are nearest-rank over the rows that have the figure: queue wait over admitted
  requests, TTFT over streamed responses that produced output, duration (arrival to last
  byte) over every request that reached an upstream, streamed or not. A group without any
  shows "-".
- A row has no lane ("-") when it never needed one (model lists and other metadata calls) or
  was refused before classification (no or unknown key, a body that is not JSON...):
  `unclassified` says which, with what each code means.
"""

from __future__ import annotations

import math
import re
from collections import Counter
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
    "preemptions",
    "preempted_ms",
    "preempted_tokens",
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
    int,  # preemptions: times its slot went to a chat (it ran again)
    float,  # preempted_ms: upstream time of the runs thrown away
    int,  # preempted_tokens: completion tokens those runs threw away (counted or estimated)
]
_COL = {name: i for i, name in enumerate(COLUMNS)}
# Typed positions of the columns the summary reads (Final: mypy keeps the tuple item types).
_LANE: Final = 3
_UPSTREAM: Final = 5
_PATH: Final = 6
_STATUS: Final = 7
_ERROR: Final = 8
_QUEUE: Final = 9
_TTFT: Final = 10
_DURATION: Final = 12
_PROMPT: Final = 13
_COMPLETION: Final = 14

# What `--by` may group on (combinable, in the order given).
GROUPABLE = ("lane", "upstream", "client", "model")
NONE = "-"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `30m`, `24h`, `7d` (also `s`, `w`); ValueError with a usable message."""
    match = _DURATION_TEXT.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{text!r} is not a duration: write a positive number and a unit, "
            "e.g. 30m, 24h or 7d (units: s, m, h, d, w)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_by(values: Sequence[str]) -> tuple[str, ...]:
    """`--by lane,client` or `--by lane --by client` → ("lane", "client"); ValueError else."""
    names = tuple(n.strip() for value in values for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in GROUPABLE]
    if unknown or not names:
        raise ValueError(
            f"cannot group by {', '.join(unknown) or 'nothing'}: "
            f"choose from {', '.join(GROUPABLE)} (combine with commas, e.g. lane,client)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{', '.join(names)} names a column twice")
    return names


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
    key: tuple[str, ...]  # one value per grouped column
    count: int
    client_errors: int  # 4xx, including 499 (client left)
    server_errors: int  # 5xx
    errors: tuple[tuple[str, int], ...]  # ("429 queue_full", n), most frequent first
    queue_p50_ms: float | None
    queue_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    duration_p50_ms: float | None
    duration_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def name(self) -> str:
        return " / ".join(self.key)

    @property
    def error_rate(self) -> float:
        return (self.client_errors + self.server_errors) / self.count if self.count else 0.0


def summarize(rows: Iterable[LedgerRow], by: str | Sequence[str]) -> list[Summary]:
    """One summary per value (tuple of values) of the `by` column(s), sorted by key."""
    columns = [_COL[name] for name in ((by,) if isinstance(by, str) else by)]
    groups: dict[tuple[str, ...], list[LedgerRow]] = {}
    for row in rows:
        key = tuple(NONE if row[i] is None else str(row[i]) for i in columns)
        groups.setdefault(key, []).append(row)
    return [_summary(key, groups[key]) for key in sorted(groups)]


def _sorted(rows: Iterable[LedgerRow], pick: Callable[[LedgerRow], float | None]) -> list[float]:
    return sorted(v for row in rows if (v := pick(row)) is not None)


def error_label(status: int, code: str | None) -> str:
    return f"{status} {code or NONE}"


def _summary(key: tuple[str, ...], rows: list[LedgerRow]) -> Summary:
    statuses = [row[_STATUS] for row in rows]
    errors = Counter(error_label(r[_STATUS], r[_ERROR]) for r in rows if r[_STATUS] >= 400)
    queue = _sorted(rows, lambda r: r[_QUEUE])
    ttfts = _sorted(rows, lambda r: r[_TTFT])
    durations = _sorted(rows, lambda r: r[_DURATION] if r[_UPSTREAM] != NONE else None)
    return Summary(
        key=key,
        count=len(rows),
        client_errors=sum(1 for s in statuses if 400 <= s < 500),
        server_errors=sum(1 for s in statuses if s >= 500),
        errors=tuple(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
        queue_p50_ms=percentile(queue, 50),
        queue_p95_ms=percentile(queue, 95),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        ttft_p99_ms=percentile(ttfts, 99),
        duration_p50_ms=percentile(durations, 50),
        duration_p95_ms=percentile(durations, 95),
        prompt_tokens=sum(row[_PROMPT] or 0 for row in rows),
        completion_tokens=sum(row[_COMPLETION] or 0 for row in rows),
    )


# -- rows without a lane -------------------------------------------------------------------------

# What a refusal before classification means, by error code (the ledger stores codes only).
_MEANINGS = {
    "invalid_api_key": "no API key, or one no client has (clients are configured)",
    "invalid_json": "the body is not a JSON object",
    "missing_model": "the body names no model",
    "invalid_stream": "`stream` is not true or false",
    "body_timeout": "the body did not arrive in time (LANEGATE_BODY_TIMEOUT)",
    "body_too_large": "the body is over LANEGATE_MAX_BODY_BYTES",
    "unknown_lane": "X-Lane names a lane the policy does not have",
    "lane_not_allowed": "X-Lane names a lane this caller may not use",
    "model_not_allowed": "the lane does not allow the model",
    "client_disconnected": "the client left before its request was read",
    "gateway_draining": "the gateway was shutting down",
}


@dataclass(frozen=True, slots=True)
class Unclassified:
    """Rows with no lane, split into metadata calls and refusals (by status and code)."""

    metadata: tuple[tuple[str, int], ...]  # (path, n): model lists and the like, no lane needed
    refused: tuple[tuple[str, int, str], ...]  # ("401 invalid_api_key", n, meaning)

    @property
    def count(self) -> int:
        return sum(n for _, n in self.metadata) + sum(n for _, n, _ in self.refused)


def unclassified(rows: Iterable[LedgerRow]) -> Unclassified:
    laneless = [row for row in rows if row[_LANE] == NONE]
    metadata = Counter(r[_PATH] for r in laneless if r[_STATUS] < 400)
    refused = Counter((r[_STATUS], r[_ERROR]) for r in laneless if r[_STATUS] >= 400)
    return Unclassified(
        metadata=tuple(sorted(metadata.items(), key=lambda item: (-item[1], item[0]))),
        refused=tuple(
            (error_label(status, code), n, _MEANINGS.get(code or "", "refused before a lane"))
            for (status, code), n in sorted(refused.items(), key=lambda item: -item[1])
        ),
    )


def render_unclassified(found: Unclassified) -> str:
    if not found.count:
        return ""
    lines = [f"{found.count} rows have no lane (lane -):"]
    for path, n in found.metadata:
        lines.append(f"  {n:>6}  {path}: a metadata call, which takes no lane (not an error)")
    for label, n, meaning in found.refused:
        lines.append(f"  {n:>6}  {label}: refused before a lane was chosen: {meaning}")
    return "\n".join(lines)


# -- text ----------------------------------------------------------------------------------------

SUMMARY_HEADERS = (
    "requests",
    "4xx",
    "5xx",
    "error %",
    "queue p50",
    "queue p95",
    "ttft p50",
    "ttft p95",
    "ttft p99",
    "dur p50",
    "dur p95",
    "prompt tok",
    "compl tok",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def summary_cells(summary: Summary) -> list[str]:
    return [
        summary.name,
        str(summary.count),
        str(summary.client_errors),
        str(summary.server_errors),
        f"{summary.error_rate * 100:.1f}",
        _ms(summary.queue_p50_ms),
        _ms(summary.queue_p95_ms),
        _ms(summary.ttft_p50_ms),
        _ms(summary.ttft_p95_ms),
        _ms(summary.ttft_p99_ms),
        _ms(summary.duration_p50_ms),
        _ms(summary.duration_p95_ms),
        str(summary.prompt_tokens),
        str(summary.completion_tokens),
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain text table: the first `left` columns left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        aligned: list[Callable[[int], str]] = [
            (cell.ljust if i < left else cell.rjust) for i, cell in enumerate(cells)
        ]
        return "  ".join(pad(w) for pad, w in zip(aligned, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def render_summaries(title: str, summaries: Sequence[Summary]) -> str:
    """The summary table (times in ms), then each group's errors by status and code."""
    table = render_table((f"{title} (ms)", *SUMMARY_HEADERS), [summary_cells(s) for s in summaries])
    errors = [[s.name, label, str(n)] for s in summaries for label, n in s.errors]
    if not errors:
        return table
    return f"{table}\n\n{render_table((title, 'errors: status code', 'count'), errors, 2)}"
