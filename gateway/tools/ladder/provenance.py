"""Is run B comparable with run A: what each run says it measured with, and the differences.

Owns the list of facts two runs must share for their numbers to mean the same thing (tool,
server and OS versions, model digest, prompt set, client contract, machine), how they are read
from `report.json` dicts (old reports without a field read as "unknown"), and the
`ladder history` table: p95 TTFT at each rung, one line per run, oldest first.

Pure: report dicts in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

UNKNOWN = "unknown"

# (label, path in report.json): what must match for two runs to be compared as like for like.
FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lanegate version", ("tool", "version")),
    ("lanegate git revision", ("tool", "git_revision")),
    ("server version", ("target", "server_version")),
    ("OS build", ("host", "os_build")),
    ("machine", ("host", "machine_sku")),
    ("model", ("target", "model")),
    ("model digest", ("target", "digest")),
    ("prompt set", ("contract", "prompt_set_sha256")),
    ("max_tokens", ("contract", "max_tokens")),
    ("stream", ("contract", "stream")),
)


def fact(report: Mapping[str, Any], path: tuple[str, ...]) -> str:
    value: Any = report
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return UNKNOWN if value is None or value == "" else str(value)


def mismatches(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Every fact that differs, as "label: A → B". An "unknown" digest on both sides (llama.cpp
    publishes none) is no proof of the same model, so it is listed too."""
    found = []
    for label, path in FACTS:
        va, vb = fact(a, path), fact(b, path)
        if va != vb or (label == "model digest" and va == UNKNOWN):
            found.append(f"{label}: {_short(va)} → {_short(vb)}")
    return found


def _short(value: str) -> str:
    return value[:12] + "…" if len(value) > 16 and " " not in value else value


def history_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table: one line per run, oldest first, p95 TTFT (ms) at each rung."""
    ordered = sorted(reports, key=lambda r: str(r.get("started_at", "")))
    rungs = sorted({int(r["concurrency"]) for rep in ordered for r in _rungs(rep)})
    header = ["started", "model", "digest", "lanegate", "server", "OS build", "note"]
    header += [f"p95 @{c}" for c in rungs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for report in ordered:
        p95 = {int(r["concurrency"]): r.get("ttft_ms", {}).get("p95") for r in _rungs(report)}
        cells = [
            str(report.get("started_at", "?")),
            fact(report, ("target", "model")),
            _short(fact(report, ("target", "digest"))),
            fact(report, ("tool", "version")),
            fact(report, ("target", "server_version")),
            fact(report, ("host", "os_build")),
            str(report.get("note") or ""),
        ]
        cells += [_ms(p95.get(c)) for c in rungs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rungs(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rungs = report.get("rungs")
    return [r for r in rungs if isinstance(r, Mapping) and "concurrency" in r] if rungs else []


def _ms(value: Any) -> str:
    return "–" if not isinstance(value, int | float) else f"{value:.0f}"
