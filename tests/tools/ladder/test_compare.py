"""`lanegate ladder compare`: two reports side by side, with ratios (pure)."""

from __future__ import annotations

from gateway.tools.ladder.compare import compare_reports


def _report(ttft95: float, rps: float) -> dict[str, object]:
    return {
        "started_at": "t",
        "target": {"model": "m", "digest": "abc"},
        "tool": {"git_revision": "r"},
        "knee": {"concurrency": 8, "rule": "ttft_ratio"},
        "rungs": [
            {
                "concurrency": 1,
                "ttft_ms": {"p50": 100.0, "p95": 100.0},
                "e2e_ms": {"p95": 500.0},
                "throughput_rps": 2.0,
                "error_rate": 0.0,
                "lanes": {"": {}},
            },
            {
                "concurrency": 2,
                "ttft_ms": {"p50": 100.0, "p95": ttft95},
                "e2e_ms": {"p95": 500.0},
                "throughput_rps": rps,
                "error_rate": 0.0,
                "lanes": {"": {}},
            },
        ],
    }


def test_compare_puts_rungs_side_by_side_with_ratios() -> None:
    text = compare_reports(_report(120.0, 3.0), _report(240.0, 1.5))
    line = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[4:7] == ["120", "240", "2.00x"]  # p95 TTFT doubled
    assert cells[10:13] == ["3", "1.5", "0.50x"]  # throughput halved
    assert "knee: A 8 (ttft_ratio), B 8 (ttft_ratio)" in text
