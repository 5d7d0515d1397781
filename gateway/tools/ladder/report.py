"""The ladder's outputs: requests.csv, signals.csv, report.json and report.md.

`build_report` gathers everything a reader needs to trust (or redo) the run into one plain
dict: tool version and git revision, model and digest, host, the frozen client contract, the
per-rung table, the knee and the gate verdicts. `render_markdown` reads only that dict, so
`report.md` never says anything `report.json` does not.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.tools.ladder.gates import GateReport
from gateway.tools.ladder.knee import Knee
from gateway.tools.ladder.session import RungResult
from gateway.tools.ladder.signals import SignalRow
from gateway.tools.ladder.stats import Percentiles, RequestRow, RungStats

SCHEMA = 1
REQUEST_FIELDS = [f.name for f in dataclasses.fields(RequestRow)]
SIGNAL_FIELDS = [f.name for f in dataclasses.fields(SignalRow)]


def _ms(p: Percentiles) -> dict[str, float | None]:
    return {
        name: None if value is None else round(value * 1000, 1)
        for name, value in (("p50", p.p50), ("p95", p.p95), ("p99", p.p99))
    }


def stats_dict(stats: RungStats) -> dict[str, Any]:
    return {
        "concurrency": stats.concurrency,
        "partial": stats.partial,
        "duration_s": round(stats.duration_s, 3),
        "requests": stats.requests,
        "completed": stats.completed,
        "errors": stats.errors,
        "error_rate": round(stats.error_rate, 4),
        "ttft_ms": _ms(stats.ttft),
        "gap_max_ms": _ms(stats.gap),
        "e2e_ms": _ms(stats.e2e),
        "throughput_rps": round(stats.throughput_rps, 3),
        "tokens_per_s": round(stats.tokens_per_s, 1),
    }


def rung_dict(rung: RungResult) -> dict[str, Any]:
    return {
        **stats_dict(rung.overall),
        "peak_rss_bytes": rung.peak_rss_bytes,
        "swap_growth_bytes": rung.swap_growth_bytes,
        "lanes": {name: stats_dict(stats) for name, stats in rung.lanes.items()},
    }


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
    return {
        "schema": SCHEMA,
        **meta,
        "rungs": [rung_dict(rung) for rung in rungs],
        "knee": knee_dict(knee),
        "gates": gates_dict(thresholds, gates),
    }


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Any]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for row in rows:
            writer.writerow(["" if v is None else _cell(v) for v in dataclasses.astuple(row)])


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


# -- report.md -------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _triple(p: Mapping[str, float | None]) -> str:
    return " / ".join(_fmt(p[k]) for k in ("p50", "p95", "p99"))


def _bytes(value: int | None) -> str:
    return "–" if value is None else f"{value / (1 << 30):.2f} GiB"


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Load ladder: {report['target']['model']}", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted (Ctrl-C): partial results.**", ""]
    lines += [*_facts(report), "", *_contract(report), ""]
    lines += ["## Rungs", "", *_rung_table(report["rungs"]), ""]
    if any(len(rung["lanes"]) > 1 for rung in report["rungs"]):
        lines += ["## Lanes", "", *_lane_table(report["rungs"]), ""]
    lines += ["## Knee", "", _knee_line(report["knee"]), ""]
    lines += ["## Gates", "", *_gate_table(report["gates"]), ""]
    return "\n".join(lines)


def _facts(report: Mapping[str, Any]) -> list[str]:
    tool, target, host = report["tool"], report["target"], report["host"]
    revision = tool.get("git_revision") or "none (not a git checkout)"
    return [
        "| | |",
        "|---|---|",
        f"| tool | lanegate {tool['version']}, git {revision} |",
        f"| started | {report['started_at']} |",
        f"| endpoint | `{target['base_url']}`"
        + (f", lane `{target['lane']}`" if target.get("lane") else "")
        + " |",
        f"| model | `{target['model']}` |",
        f"| model digest | `{target['digest']}` ({target['digest_source']}) |",
        f"| server version | {target.get('server_version') or 'unknown'} |",
        f"| host | {host['platform']}, {host['cpus']} CPUs, {_bytes(host['memory_bytes'])} RAM, "
        f"Python {host['python']} |",
        f"| watched process | {report['signals']['watch'] or 'none'} |",
    ]


def _contract(report: Mapping[str, Any]) -> list[str]:
    c, ladder = report["contract"], report["ladder"]
    return [
        "## Client contract",
        "",
        f"- `POST {c['endpoint']}`, stream={c['stream']}, keep-alive={c['keep_alive']}, "
        f"max_tokens={c['max_tokens']}, temperature={c['temperature']}, "
        f"timeout {c['timeout_s']:g} s",
        f"- prompts: {c['prompt_count']} seeded prompts (seed {c['prompt_seed']}) of about "
        f"{c['prompt_tokens']} tokens, sha256 `{c['prompt_set_sha256'][:16]}…`",
        f"- rungs {ladder['rungs']}, {ladder['rung_seconds']:g} s each, closed loop"
        + (f", mix `{ladder['mix']}`" if ladder.get("mix") else "")
        + (", stop at knee" if ladder.get("stop_at_knee") else ""),
    ]


_HEADER = (
    "| concurrency | requests | errors | TTFT ms p50/p95/p99 | max gap ms p50/p95/p99 | "
    "e2e ms p50/p95/p99 | req/s | tokens/s |"
)


def _stat_cells(s: Mapping[str, Any]) -> str:
    partial = " (partial)" if s["partial"] else ""
    return (
        f"| {s['concurrency']}{partial} | {s['requests']} | {s['errors']} ({s['error_rate']:.1%}) "
        f"| {_triple(s['ttft_ms'])} | {_triple(s['gap_max_ms'])} | {_triple(s['e2e_ms'])} "
        f"| {s['throughput_rps']:.2f} | {s['tokens_per_s']:.1f} |"
    )


def _rung_table(rungs: Sequence[Mapping[str, Any]]) -> list[str]:
    header = _HEADER + " peak RSS | swap Δ |"
    lines = [header, _rule(header)]
    for rung in rungs:
        lines.append(
            _stat_cells(rung)
            + f" {_bytes(rung['peak_rss_bytes'])} | {_bytes(rung['swap_growth_bytes'])} |"
        )
    return lines


def _rule(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _lane_table(rungs: Sequence[Mapping[str, Any]]) -> list[str]:
    header = "| lane " + _HEADER
    lines = [header, _rule(header)]
    for rung in rungs:
        for name, stats in rung["lanes"].items():
            lines.append(f"| {name or '–'} " + _stat_cells(stats))
    return lines


def _knee_line(knee: Mapping[str, Any] | None) -> str:
    if knee is None:
        return "No knee: every rung scaled (no rule fired)."
    also = knee["rules"][1:]
    extra = f"; also {', '.join(also)}" if also else ""
    return (
        f"Knee at concurrency **{knee['concurrency']}**: rule `{knee['rule']}` "
        f"({knee['detail']}){extra}."
    )


def _gate_table(gates: Mapping[str, Any]) -> list[str]:
    verdict = {True: "pass", False: "**FAIL**", None: "not checked"}
    lines = [
        f"Verdicts cover the first {gates['operating_rungs']} rung(s) (below the knee). "
        f"Highest concurrency meeting every gate: **{gates['signable_concurrency'] or 'none'}**. "
        f"Overall: **{'pass' if gates['passed'] else 'FAIL'}**.",
        "",
        "| gate | threshold | worst measured | verdict |",
        "|---|---|---|---|",
    ]
    for r in gates["results"]:
        lines.append(f"| {r['name']} | {r['threshold']} | {r['worst']} | {verdict[r['passed']]} |")
    return lines
