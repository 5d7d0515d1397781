"""The isolation benches' pure figures: the chats after a moment, a counter read from a
Prometheus exposition, the share of generated tokens thrown away, a response's token count.

Plain functions over plain values (no I/O, no clock): the scenarios (mixed.py, isolation.py,
run.py) read the clock and the network and call these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

MIN_CHATS = 100  # chat samples an arm needs for a p95 whose 90% interval is worth reading

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def started_after(values: Sequence[float], started: Sequence[float], since: float) -> list[float]:
    """The values whose request started at or after `since` (`started` pairs with `values`)."""
    if len(values) != len(started):
        raise ValueError(f"{len(values)} values but {len(started)} start times")
    return [value for value, began in zip(values, started, strict=True) if began >= since]


def metric_total(text: str, name: str, labels: Mapping[str, str]) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`, in a Prometheus text
    exposition; 0 when the family is declared with no such sample yet; None when the exposition
    does not know the metric at all (e.g. a gateway built before it existed)."""
    family = name.removesuffix("_total")
    declared = False
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split()
            declared |= len(parts) >= 3 and parts[1] == "TYPE" and parts[2] in (name, family)
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        declared = True
        found = dict(_LABEL.findall(match.group(3) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(4))
    return total if declared else None


def thrown_share(thrown_tokens: float | None, generated_tokens: int) -> float | None:
    """Tokens thrown away by preemption as a share of the tokens batch's answers carried
    (None when the gateway does not report preemption, or batch generated nothing)."""
    if thrown_tokens is None or generated_tokens <= 0:
        return None
    return thrown_tokens / generated_tokens


def completion_tokens(body: bytes) -> int | None:
    """`usage.completion_tokens` of a non-streamed OpenAI chat answer (None: not there)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    usage = document.get("usage") if isinstance(document, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def ratio(value: float | None, base: float) -> float | None:
    return None if value is None or base <= 0 else value / base


def dashboard_view(status: Mapping[str, Any], lane: str = "interactive") -> dict[str, Any]:
    """What the dashboard draws from one `/admin/status` document (gateway/observe/static/
    dashboard.js): `lane`'s 1-minute TTFT p50/p95 and queue-wait p95, every lane's adaptive
    limit and requests on the remote pool now, and the offload banner (whose state is the
    sustained-breach controller's: early offload moves batch without changing it)."""
    lanes = {row["name"]: row for row in status["lanes"]}
    chat = lanes[lane]
    offload = status["offload"]
    return {
        "ttft_p50_ms": chat["ttft"]["1m"]["p50_ms"],
        "ttft_p95_ms": chat["ttft"]["1m"]["p95_ms"],
        "ttft_count": chat["ttft"]["1m"]["count"],
        "queue_wait_p95_ms": chat["queue_wait"]["1m"]["p95_ms"],
        "adaptive_limits": {name: row.get("adaptive_limit") for name, row in lanes.items()},
        "remote_in_flight": {name: row.get("remote_in_flight") for name, row in lanes.items()},
        "offload": {key: offload.get(key) for key in ("configured", "state", "mode", "reason")},
        # Each local upstream card's "chats held to xN of baseline" (the SLO, or just above the
        # engine's floor) and the baseline the gateway learned.
        "chat_targets": {
            row["upstream"]: {key: row.get(key) for key in _TARGET_KEYS}
            for row in status.get("adaptive", {}).get("upstreams", [])
        },
    }


_TARGET_KEYS = ("baseline_ttft_ms", "engine_floor_ratio", "effective_target_ratio", "reason")
