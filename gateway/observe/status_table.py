"""The status document (`GET /admin/status`) as terminal tables, for `lanegate status`.

Pure: a dict in, text out; no I/O, no clock (times are shown relative to the document's own
`generated_at`). Missing or null fields print as "-", so an older or newer gateway's document
still renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Doc = Mapping[str, Any]
WINDOWS = ("1m", "5m", "15m")
DASH = "-"


def ms(value: Any) -> str:
    """A duration in milliseconds, at a precision a person reads: 4.2 ms, 340 ms, 1.25 s."""
    if not isinstance(value, int | float):
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def size(value: Any) -> str:
    """Bytes in binary units (GiB), as Activity Monitor shows them."""
    if not isinstance(value, int | float):
        return DASH
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _text(value: Any) -> str:
    return DASH if value is None else str(value)


def _tokens(lane: Doc) -> str:
    windows = lane.get("budget") or []
    if not windows:
        return "no budget"
    return ", ".join(
        f"{w.get('used', 0) + w.get('reserved', 0)}/{w.get('limit')} per {w.get('window')}"
        for w in windows
    )


def lanes_table(lanes: Sequence[Doc]) -> str:
    rows = [
        [
            _text(lane.get("name")),
            f"{_text(lane.get('in_flight'))}/{_text(lane.get('max_concurrency'))}",
            f"{_text(lane.get('queued'))}/{_text(lane.get('max_queue'))}",
            _text(_get(lane, "requests", "1m")),
            ms(_get(lane, "queue_wait", "1m", "p95_ms")),
            ms(_get(lane, "ttft", "1m", "p50_ms")),
            ms(_get(lane, "ttft", "1m", "p95_ms")),
            ms(_get(lane, "gap_p95", "1m", "p95_ms")),
            ms(_get(lane, "duration", "1m", "p95_ms")),
            _tokens(lane),
        ]
        for lane in lanes
    ]
    headers = [
        "LANE", "IN FLIGHT", "QUEUE", "REQ 1m", "WAIT p95",
        "TTFT p50", "TTFT p95", "GAP p95", "DUR p95", "TOKENS",
    ]  # fmt: skip
    return table(headers, rows)


def latency_table(lanes: Sequence[Doc]) -> str:
    """TTFT p50/p95/p99 and gap p95 per lane over each window, with the sample count."""
    rows = []
    for lane in lanes:
        for window in WINDOWS:
            ttft = _get(lane, "ttft", window) or {}
            rows.append(
                [
                    _text(lane.get("name")),
                    window,
                    _text(ttft.get("count")),
                    ms(ttft.get("p50_ms")),
                    ms(ttft.get("p95_ms")),
                    ms(ttft.get("p99_ms")),
                    ms(_get(lane, "gap_p95", window, "p95_ms")),
                ]
            )
    headers = ["LANE", "WINDOW", "N", "TTFT p50", "TTFT p95", "TTFT p99", "GAP p95"]
    return table(headers, rows)


def _breaker(upstream: Doc) -> str:
    state = _text(_get(upstream, "breaker", "state"))
    if state in ("closed", DASH):
        return state
    retry = _get(upstream, "breaker", "retry_in_s")
    suffix = f", retry in {retry:g} s" if isinstance(retry, int | float) else ""
    return f"{state} ({_get(upstream, 'breaker', 'reason')}{suffix})"


def upstreams_table(upstreams: Sequence[Doc]) -> str:
    rows = [
        [
            _text(up.get("name")),
            _text(up.get("pool")),
            "ok" if up.get("healthy") else "DOWN",
            f"{_text(up.get('in_flight'))}/{_text(up.get('max_concurrency'))}",
            ms(_get(up, "ttft", "1m", "p95_ms")),
            ", ".join(up.get("resident") or []) or DASH,
            _breaker(up),
        ]
        for up in upstreams
    ]
    headers = ["UPSTREAM", "POOL", "HEALTH", "IN FLIGHT", "TTFT p95", "RESIDENT", "BREAKER"]
    return table(headers, rows)


def host_line(host: Doc | None) -> str:
    if not host:
        return "host: no signals"
    trend = host.get("swap_trend_bytes_per_s")
    trend_text = DASH if trend is None else f"{'+' if trend >= 0 else ''}{size(trend * 60)}/min"
    line = (
        f"host ({_text(host.get('source'))}): pressure {_text(host.get('pressure'))}, "
        f"swap {size(host.get('swap_used_bytes'))} of {size(host.get('swap_total_bytes'))} "
        f"({trend_text}), memory available {size(host.get('memory_available_bytes'))} "
        f"of {size(host.get('memory_total_bytes'))}"
    )
    return line + (f"\n  signal error: {host['error']}" if host.get("error") else "")


def _counts(doc: Doc) -> str:
    """Requests in flight, what they hold (local slots, remote ones) and how many wait; an
    older gateway's document (no `totals`) shows its local slots only."""
    totals = doc.get("totals")
    if not isinstance(totals, Mapping):
        return f"{_text(doc.get('in_flight'))}/{_text(doc.get('capacity'))} in flight"
    local, remote = totals.get("local") or {}, totals.get("remote")
    where = f"{_text(local.get('in_flight'))} of {_text(local.get('capacity'))} local slots"
    if isinstance(remote, Mapping):
        where += f", {_text(remote.get('in_flight'))} of {_text(remote.get('capacity'))} remote"
    return (
        f"{_text(totals.get('in_flight'))} requests in flight ({where}), "
        f"{_text(totals.get('queued'))} queued"
    )


def header_lines(doc: Doc) -> list[str]:
    policy = doc.get("policy") or {}
    generated = doc.get("generated_at")
    loaded = policy.get("loaded_at")
    age = (
        f", loaded {generated - loaded:.0f} s ago"
        if isinstance(generated, int | float) and isinstance(loaded, int | float)
        else ""
    )
    lines = [
        f"lanegate {_text(doc.get('version'))}: {_counts(doc)}; "
        f"policy v{_text(policy.get('version'))} ({_text(policy.get('source'))}{age})"
    ]
    if policy.get("reload_error"):
        lines.append(f"last reload refused: {policy['reload_error']}")
    access = policy.get("access_change")
    if isinstance(access, Mapping):
        lines.append(f"reload to v{_text(access.get('version'))} changed who may call:")
        lines.extend(f"  {change}" for change in access.get("changes") or [])
    offload = doc.get("offload") or {}
    if offload.get("configured"):
        lines.append(
            f"offload: {_text(offload.get('state'))} (mode {_text(offload.get('mode'))}): "
            f"{_text(offload.get('reason'))}"
        )
    else:
        lines.append("offload: not configured")
    return lines


def render_status(doc: Doc) -> str:
    """The whole document as text: header, host, lanes, latency windows, upstreams."""
    lanes = doc.get("lanes") or []
    parts = [
        "\n".join(header_lines(doc)),
        host_line(doc.get("host")),
        lanes_table(lanes) if lanes else "no lanes",
        latency_table(lanes) if lanes else "",
        upstreams_table(doc.get("upstreams") or []),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"
