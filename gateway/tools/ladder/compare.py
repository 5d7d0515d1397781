"""`lanegate ladder compare RUN_A RUN_B`: two runs side by side, rung by rung, with ratios.

Pure over the two `report.json` dicts: rungs are matched by concurrency (and lane in a mixed
run); a ratio B/A above 1 means B was slower (TTFT, e2e) or, for throughput, faster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_COLUMNS = (
    ("p50 TTFT ms", ("ttft_ms", "p50")),
    ("p95 TTFT ms", ("ttft_ms", "p95")),
    ("p95 e2e ms", ("e2e_ms", "p95")),
    ("req/s", ("throughput_rps",)),
    ("error rate", ("error_rate",)),
)


def _get(stats: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = stats
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    if a == 0:
        return "=" if b == 0 else "∞"
    return f"{b / a:.2f}x"


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def _by_rung(report: Mapping[str, Any]) -> dict[tuple[int, str], Mapping[str, Any]]:
    table: dict[tuple[int, str], Mapping[str, Any]] = {}
    for rung in report.get("rungs", []):
        lanes = rung.get("lanes", {})
        if len(lanes) > 1:
            for name, stats in lanes.items():
                table[(rung["concurrency"], name)] = stats
        else:
            table[(rung["concurrency"], "")] = rung
    return table


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """A markdown table: for each rung, A, B and B/A of every column."""
    rows_a, rows_b = _by_rung(a), _by_rung(b)
    header = "| rung | " + " | ".join(f"{name} A | B | B/A" for name, _ in _COLUMNS) + " |"
    lines = [
        f"A: {_describe(a)}",
        f"B: {_describe(b)}",
        "",
        header,
        "|" + "---|" * (1 + 3 * len(_COLUMNS)),
    ]
    for key in sorted(set(rows_a) | set(rows_b)):
        concurrency, lane = key
        sa, sb = rows_a.get(key, {}), rows_b.get(key, {})
        cells = []
        for _, path in _COLUMNS:
            va, vb = _get(sa, path), _get(sb, path)
            cells += [_num(va), _num(vb), _ratio(va, vb)]
        label = f"{concurrency} {lane}".strip()
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"knee: A {_knee(a)}, B {_knee(b)}"]
    return "\n".join(lines) + "\n"


def _describe(report: Mapping[str, Any]) -> str:
    target = report.get("target", {})
    tool = report.get("tool", {})
    return (
        f"{report.get('started_at', '?')} model {target.get('model', '?')} "
        f"digest {str(target.get('digest', '?'))[:12]} git {str(tool.get('git_revision'))[:10]}"
    )


def _knee(report: Mapping[str, Any]) -> str:
    knee = report.get("knee")
    return "none" if not knee else f"{knee['concurrency']} ({knee['rule']})"
