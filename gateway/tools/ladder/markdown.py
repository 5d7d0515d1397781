"""`report.md`: the report dict for people. Reads only `report.json`'s dict, so it can say
nothing the JSON does not. Pure: a dict in, markdown out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

GIB = 1 << 30


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _triple(p: Mapping[str, float | None] | None, digits: int = 0) -> str:
    if not p:
        return "–"
    return " / ".join(_fmt(p.get(k), digits) for k in ("p50", "p95", "p99"))


def _bytes(value: int | None) -> str:
    return "–" if value is None else f"{value / GIB:.2f} GiB"


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Load ladder: {report['target']['model']}", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted (Ctrl-C): partial results.**", ""]
    for warning in report.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    lines += [*_facts(report), "", *_contract(report), ""]
    rungs = report["rungs"]
    lines += ["## Rungs", "", *_rung_table(rungs), ""]
    if any(len(rung["lanes"]) > 1 for rung in rungs):
        lines += ["## Lanes", "", *_lane_table(rungs), ""]
    lines += ["## Host during each rung", "", *_host_table(rungs), ""]
    if not report["host"].get("process_io", True):
        lines += ["Top disk: this OS reports no per-process disk I/O (macOS).", ""]
    lines += ["## Why the tail moved", "", *_tail_lines(rungs), ""]
    lines += ["## Knee", "", _knee_line(report["knee"]), ""]
    lines += ["## Gates", "", *_gate_table(report["gates"]), ""]
    return "\n".join(lines)


def _facts(report: Mapping[str, Any]) -> list[str]:
    tool, target, host = report["tool"], report["target"], report["host"]
    revision = tool.get("git_revision") or "none (not a git checkout)"
    lane = f", lane `{target['lane']}`" if target.get("lane") else ""
    return [
        "| | |",
        "|---|---|",
        f"| tool | lanegate {tool['version']}, git {revision} |",
        f"| started | {report['started_at']} |",
        f"| endpoint | `{target['base_url']}`{lane} |",
        f"| model | `{target['model']}` |",
        f"| model digest | `{target['digest']}` ({target['digest_source']}) |",
        f"| server version | {target.get('server_version') or 'unknown'} |",
        f"| host | {host['platform']}, {host['cpus']} CPUs, {_bytes(host['memory_bytes'])} RAM, "
        f"Python {host['python']} |",
        f"| machine | {host.get('machine_sku') or 'unknown'}, OS build "
        f"{host.get('os_build') or 'unknown'} |",
        f"| core clusters | {host.get('clusters') or 'not split (per core)'} |",
        f"| note | {report.get('note') or '–'} |",
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
    "| concurrency | requests | errors | n | TTFT ms p50/p95/p99 | ITL ms p50/p95/p99 | "
    "TPOT ms p50/p95/p99 | out tok/s per request p50/p95/p99 | max gap ms p50/p95/p99 | "
    "e2e ms p50/p95/p99 | req/s | tokens/s |"
)


def _load(s: Mapping[str, Any]) -> str:
    rate = s.get("rate_per_s") or 0
    partial = " (partial)" if s["partial"] else ""
    return (f"{rate:g}/s" if rate else str(s["concurrency"])) + partial


def _stat_cells(s: Mapping[str, Any]) -> str:
    return (
        f"| {_load(s)} | {s['requests']} | {s['errors']} ({s['error_rate']:.1%}) "
        f"| {s.get('ttft_samples', '–')} | {_triple(s['ttft_ms'])} | {_triple(s.get('itl_ms'), 1)} "
        f"| {_triple(s.get('tpot_ms'), 1)} | {_triple(s.get('output_tps'), 1)} "
        f"| {_triple(s['gap_max_ms'])} | {_triple(s['e2e_ms'])} "
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


def _host_table(rungs: Sequence[Mapping[str, Any]]) -> list[str]:
    header = (
        "| concurrency | samples | CPU busy % mean / max | clusters max % | disk read / write MB/s "
        "| thermal | pressure | top CPU (% of a core) | top disk |"
    )
    lines = [header, _rule(header)]
    for rung in rungs:
        h = rung.get("host") or {}
        clusters = ", ".join(f"{k} {v:.0f}" for k, v in (h.get("clusters_max_pct") or {}).items())
        lines.append(
            f"| {_load(rung)} | {h.get('samples', 0)} "
            f"| {_fmt(h.get('cpu_busy_mean_pct'))} / {_fmt(h.get('cpu_busy_max_pct'))} "
            f"| {clusters or '–'} | {_mb(h.get('disk_read_bps'))} / {_mb(h.get('disk_write_bps'))} "
            f"| {_thermal(h)} | {h.get('pressure') or '–'} | {_top(h.get('top_cpu'), 'cpu')} "
            f"| {_top(h.get('top_disk'), 'disk')} |"
        )
    return lines


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / 1e6:.1f}"


def _thermal(host: Mapping[str, Any]) -> str:
    level, limit = host.get("thermal_level"), host.get("speed_limit_pct")
    parts = [] if level is None else [f"level {level}"]
    if limit is not None:
        parts.append(f"speed {limit}%")
    if host.get("temp_max_c") is not None:
        parts.append(f"{host['temp_max_c']:.0f} C")
    if host.get("cpufreq_min_pct") is not None:
        parts.append(f"freq {host['cpufreq_min_pct']}% of max")
    return ", ".join(parts) or "–"


def _top(items: Sequence[Mapping[str, Any]] | None, kind: str) -> str:
    if not items:
        return "–"
    if kind == "cpu":
        return ", ".join(f"{p['name']}[{p['pid']}] {p['cpu_pct']:.0f}" for p in items)
    return ", ".join(
        f"{p['name']}[{p['pid']}] {(p['disk_bytes'] or 0) / 1e6:.1f} MB" for p in items
    )


def _tail_lines(rungs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for rung in rungs:
        tail = rung.get("tail")
        text = tail["line"] if tail else "partial rung: not read"
        lines.append(f"- concurrency {_load(rung)}: {text}")
    return lines or ["No rung ran."]


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
