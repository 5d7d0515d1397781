"""The ladder's outputs: requests.csv, signals.csv, report.json, report.md, benchmarks.json.

`build_report` gathers everything a reader needs to trust (or redo) the run into one plain
dict: tool, server and OS versions, model and digest, machine, the frozen client contract,
the per-rung table with the host's signals and the reading of each rung's tail, the knee and
the gate verdicts. `markdown.render_markdown` reads only that dict, so `report.md` never says
anything `report.json` does not; `benchmarks.json` is the same run in GuideLLM's shape.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.tools.ladder.gates import GateReport
from gateway.tools.ladder.guidellm import export
from gateway.tools.ladder.host_summary import CSV_EXCLUDED, HostSummary, SignalRow, TopProcess
from gateway.tools.ladder.knee import Knee
from gateway.tools.ladder.markdown import render_markdown
from gateway.tools.ladder.session import RungResult
from gateway.tools.ladder.stats import Percentiles, RequestRow, RungStats
from gateway.tools.ladder.tail import RungSignals, TailReading, read_tails

SCHEMA = 2  # 2: host signals, tail readings, ITL/TPOT, provenance facts
REQUEST_FIELDS = [f.name for f in dataclasses.fields(RequestRow)]
SIGNAL_FIELDS = [f.name for f in dataclasses.fields(SignalRow) if f.name not in CSV_EXCLUDED]


def _ms(p: Percentiles) -> dict[str, float | None]:
    return _scaled(p, 1000, 1)


def _scaled(p: Percentiles, by: float, digits: int) -> dict[str, float | None]:
    return {
        name: None if value is None else round(value * by, digits)
        for name, value in (("p50", p.p50), ("p95", p.p95), ("p99", p.p99))
    }


def stats_dict(stats: RungStats) -> dict[str, Any]:
    return {
        "concurrency": stats.concurrency,
        "rate_per_s": stats.rate_per_s,
        "partial": stats.partial,
        "duration_s": round(stats.duration_s, 3),
        "requests": stats.requests,
        "completed": stats.completed,
        "errors": stats.errors,
        "error_rate": round(stats.error_rate, 4),
        "ttft_samples": stats.ttft_samples,
        "ttft_ms": _ms(stats.ttft),
        "itl_ms": _ms(stats.itl),
        "tpot_ms": _ms(stats.tpot),
        "output_tps": _scaled(stats.output_tps, 1, 1),
        "gap_max_ms": _ms(stats.gap),
        "e2e_ms": _ms(stats.e2e),
        "throughput_rps": round(stats.throughput_rps, 3),
        "tokens_per_s": round(stats.tokens_per_s, 1),
    }


def host_dict(host: HostSummary) -> dict[str, Any]:
    def top(items: Sequence[TopProcess]) -> list[dict[str, Any]]:
        return [dataclasses.asdict(item) for item in items]

    return {
        "samples": host.samples,
        "cpu_busy_max_pct": host.cpu_busy_max_pct,
        "cpu_busy_mean_pct": host.cpu_busy_mean_pct,
        "clusters_max_pct": dict(host.clusters_max_pct),
        "disk_read_bps": None if host.disk_read_bps is None else round(host.disk_read_bps),
        "disk_write_bps": None if host.disk_write_bps is None else round(host.disk_write_bps),
        "thermal_level": host.thermal_level,
        "speed_limit_pct": host.speed_limit_pct,
        "temp_max_c": host.temp_max_c,
        "cpufreq_min_pct": host.cpufreq_min_pct,
        "pressure": host.pressure,
        "min_available_bytes": host.min_available_bytes,
        "top_cpu": top(host.top_cpu),
        "top_disk": top(host.top_disk),
    }


def rung_dict(rung: RungResult, tail: TailReading | None) -> dict[str, Any]:
    return {
        **stats_dict(rung.overall),
        "started_s": round(rung.started_s, 3),
        "ended_s": round(rung.ended_s, 3),
        "peak_rss_bytes": rung.peak_rss_bytes,
        "swap_growth_bytes": rung.swap_growth_bytes,
        "host": host_dict(rung.host),
        "tail": None if tail is None else dataclasses.asdict(tail),
        "lanes": {name: stats_dict(stats) for name, stats in rung.lanes.items()},
    }


def rung_signals(rung: RungResult) -> RungSignals:
    host = rung.host
    return RungSignals(
        concurrency=rung.concurrency,
        p95_ttft_s=rung.overall.ttft.p95,
        p99_ttft_s=rung.overall.ttft.p99,
        error_rate=rung.overall.error_rate,
        swap_growth_bytes=rung.swap_growth_bytes,
        pressure=host.pressure,
        min_available_bytes=host.min_available_bytes,
        peak_rss_bytes=rung.peak_rss_bytes,
        disk_read_bps=host.disk_read_bps,
        disk_write_bps=host.disk_write_bps,
        cpu_busy_pct=host.cpu_busy_max_pct,
        cluster_busy_pct=host.clusters_max_pct,
        thermal_level=host.thermal_level,
        speed_limit_pct=host.speed_limit_pct,
    )


def knee_dict(knee: Knee | None) -> dict[str, Any] | None:
    if knee is None:
        return None
    return {
        "concurrency": knee.concurrency,
        "index": knee.index,
        "rule": knee.rule,
        "rules": list(knee.rules),
        "detail": knee.detail,
    }


def gates_dict(thresholds: Mapping[str, Any], gates: GateReport) -> dict[str, Any]:
    return {
        "thresholds": dict(thresholds),
        "passed": gates.passed,
        "operating_rungs": gates.operating_rungs,
        "signable_concurrency": gates.signable,
        "results": [
            {
                "name": r.name,
                "threshold": r.threshold,
                "worst": r.worst,
                "passed": r.passed,
                "per_rung": list(r.per_rung),
            }
            for r in gates.results
        ],
    }


def build_report(
    *,
    meta: Mapping[str, Any],
    rungs: Sequence[RungResult],
    knee: Knee | None,
    thresholds: Mapping[str, Any],
    gates: GateReport,
) -> dict[str, Any]:
    """The whole report; `meta` holds tool, target, host, contract, ladder and run facts."""
    whole = [rung for rung in rungs if not rung.partial]
    tails = dict(zip((id(r) for r in whole), read_tails([rung_signals(r) for r in whole]),
                     strict=True))  # fmt: skip
    return {
        "schema": SCHEMA,
        **meta,
        "rungs": [rung_dict(rung, tails.get(id(rung))) for rung in rungs],
        "knee": knee_dict(knee),
        "gates": gates_dict(thresholds, gates),
    }


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Any]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for row in rows:
            writer.writerow(["" if (v := getattr(row, f)) is None else _cell(v) for f in fields])


def _cell(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def write_outputs(
    out: Path,
    report: Mapping[str, Any],
    requests: Sequence[RequestRow],
    signals: Sequence[SignalRow],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "requests.csv", REQUEST_FIELDS, sorted(requests, key=lambda r: r.start_s))
    write_csv(out / "signals.csv", SIGNAL_FIELDS, signals)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    (out / "benchmarks.json").write_text(json.dumps(guidellm_export(report, requests)) + "\n")


def guidellm_export(report: Mapping[str, Any], requests: Sequence[RequestRow]) -> dict[str, Any]:
    """One benchmark per rung (per lane with --mix), the rows of that rung (and lane)."""
    steps = []
    for rung in report["rungs"]:
        mine = [r for r in requests if r.rung == rung["concurrency"]]
        lanes = rung["lanes"] if len(rung["lanes"]) > 1 else {"": rung}
        for lane, stats in lanes.items():
            rows = [r for r in mine if r.lane == lane] if lane else mine
            steps.append((stats["concurrency"], lane, rows, stats["throughput_rps"]))
    target, contract = report["target"], report["contract"]
    args = {
        "target": target["base_url"],
        "model": target["model"],
        "profile": "concurrent",
        "rate": [rung["concurrency"] for rung in report["rungs"]],
        "max_seconds": report["ladder"]["rung_seconds"],
        "data": {
            "prompt_tokens": contract["prompt_tokens"],
            "output_tokens": contract["max_tokens"],
        },
    }
    return export(args, steps)
