"""report.md from report.json: a recorded simulator run, and the same run as a Mac would say it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from gateway.tools.ladder.markdown import render_markdown

# A real run's report.json (the docs/ladder.md example: knee-demo on a busy 2-core VM).
RECORDED = Path(__file__).resolve().parents[2] / "data" / "ladder" / "report_knee_demo.json"


def recorded() -> dict[str, Any]:
    report: dict[str, Any] = json.loads(RECORDED.read_text())
    return report


def test_every_rung_has_a_host_row_and_a_tail_line() -> None:
    report = recorded()
    text = render_markdown(report)
    host = text[text.index("## Host during each rung") : text.index("## Why the tail moved")]
    tails = text[text.index("## Why the tail moved") : text.index("## Knee")]
    for rung in report["rungs"]:
        assert f"\n| {rung['concurrency']} | {rung['host']['samples']} | " in host
        assert f"- concurrency {rung['concurrency']}: {rung['tail']['line']}" in tails
    first = report["rungs"][0]["host"]["top_cpu"][0]
    assert f"{first['name']}[{first['pid']}] {first['cpu_pct']:.0f}" in host
    assert "| n |" in text and "ITL ms p50/p95/p99" in text and "TPOT ms" in text


def test_a_mac_run_names_its_clusters_heat_and_missing_process_io() -> None:
    report = copy.deepcopy(recorded())
    report["host"].update(process_io=False, clusters="Performance 8, Efficiency 2")
    host = report["rungs"][3]["host"]
    host.update(
        clusters_max_pct={"Efficiency": 98.0, "Performance": 41.5},
        thermal_level=2,
        speed_limit_pct=62,
        top_disk=[],
    )
    report["warnings"] = ["a lanegate gateway with offload configured"]
    text = render_markdown(report)
    assert "| core clusters | Performance 8, Efficiency 2 |" in text
    host_table = text[text.index("## Host during each rung") :]
    row = next(line for line in host_table.splitlines() if line.startswith("| 8 | "))
    assert "Efficiency 98, Performance 42" in row and "level 2, speed 62%" in row
    assert "Top disk: this OS reports no per-process disk I/O (macOS)." in text
    assert "**Warning:** a lanegate gateway with offload configured" in text


def test_an_old_report_without_host_signals_still_renders() -> None:
    report = recorded()
    for rung in report["rungs"]:
        for key in ("host", "tail", "itl_ms", "tpot_ms", "output_tps", "ttft_samples"):
            rung.pop(key)
    for key in ("note", "warnings"):
        report.pop(key)
    text = render_markdown(report)
    assert "partial rung: not read" in text and "| note | – |" in text
