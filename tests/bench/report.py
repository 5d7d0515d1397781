"""The markdown summary of a benchmark run: a table per scenario and the goals, met or not."""

from __future__ import annotations

from typing import Any

from tests.bench import isolation, remote

# (scenario, key, goal, comparison) — the goals of the benchmark issue.
GOALS = (
    ("S1", "added_ttft_p50_ms", 0.5, "<="),
    ("S1", "added_ttft_p99_ms", 1.0, "<="),
    ("S2", "added_ttft_p50_ms", 3.0, "<="),
    ("S2", "added_ttft_p99_ms", 10.0, "<="),
    ("S2", "e2e_p99_ratio", 1.1, "<="),
    ("S3", "share_of_direct_rps", 0.25, ">="),
    ("S4", "idle_mb", 60.0, "<="),
    ("S4", "after_s2_mb", 90.0, "<="),
    ("S4", "after_s3_mb", 90.0, "<="),
    ("S5", "gateway.interactive_p95_ratio", 1.5, "<="),
    ("S5", "batch_throughput_ratio", 0.7, ">="),
    ("S6", "arms.lanegate_adaptive.interactive_p95_ratio", 1.3, "<="),
    ("S6", "arms.lanegate_adaptive.batch_share_of_direct", 0.8, ">="),
    ("S6", "arms.lanegate_preempt.interactive_p95_ratio", 1.3, "<="),
    ("S6", "arms.lanegate_preempt.batch_share_of_direct", 0.8, ">="),
    # Preemption threw away <= 10% of batch's generated tokens (null: not measured).
    ("S6", "arms.lanegate_preempt.thrown_share", 0.1, "<="),
    ("S6f", "arms.lanegate_adaptive.interactive_p95_ratio", 1.3, "<="),
    ("S6f", "arms.lanegate_adaptive.batch_share_of_direct", 0.8, ">="),
    ("S6f", "arms.lanegate_preempt.interactive_p95_ratio", 1.3, "<="),
    ("S6f", "arms.lanegate_preempt.batch_share_of_direct", 0.8, ">="),
    ("S6f", "arms.lanegate_preempt.thrown_share", 0.1, "<="),
    # Issue #17 on the simulated M2 mini + M4 Max, no hand caps, default early offload.
    ("S7", "early_offload.settled_p95_ratio", 2.0, "<="),
    ("S7", "early_offload.batch_share_of_direct", 1.0, ">="),
    # The demo's first minute, client side and as its dashboard shows it.
    ("S9", "client.settled_p95_ratio", 2.0, "<="),
    ("S9", "dashboard_ttft_p95_ratio", 2.0, "<="),
)


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"## lanegate benchmark {results.get('timestamp', '')}",
        "",
        f"Machine: {machine['cores']} cores ({machine['cpu']}), load average "
        f"{', '.join(f'{x:.2f}' for x in machine['loadavg'])} at start; "
        f"Python {machine['python']}.",
        "",
        "| scenario | metric | value | goal | met |",
        "|---|---|---|---|---|",
    ]
    scenarios = results["scenarios"]
    lines += goal_rows(scenarios)
    lines += [
        "",
        "| scenario | direct | gateway | gateway CPU ms/request | CPU-bound in gateway phase |",
        "|---|---|---|---|---|",
    ]
    for name, data in scenarios.items():
        if "rounds" in data:
            lines.append(_row(name, data))
    if "S7" in scenarios:
        lines += ["", *s7_table(scenarios["S7"])]
    if "S9" in scenarios:
        lines += ["", *s9_lines(scenarios["S9"])]
    if "S8" in scenarios and "handoff" in scenarios["S8"]:
        s8 = scenarios["S8"]
        handoff = s8["handoff"]
        lines += [
            "",
            "| S8 (Redis vs in-memory) | added TTFT p50 | added TTFT p99 | redis req/s share "
            "| freed-slot hand-off p50 / p99 |",
            "|---|---|---|---|---|",
            f"| one at a time | {s8['added_ttft_p50_ms']:.3f} ms "
            f"| {s8['added_ttft_p99_ms']:.3f} ms | - "
            f"| {handoff['handoff_p50_ms']:.2f} / {handoff['handoff_p99_ms']:.2f} ms |",
            f"| 16 concurrent | {s8['concurrent_added_ttft_p50_ms']:.3f} ms "
            f"| {s8['concurrent_added_ttft_p99_ms']:.3f} ms | {s8['redis_rps_share']:.0%} | - |",
        ]
        admission = s8["admission"]
        lines.append(
            f"\nS8 admission alone (reserve + acquire, in process): in memory "
            f"{admission['local_p50_ms']:.3f} / {admission['local_p99_ms']:.3f} ms, through Redis "
            f"{admission['redis_p50_ms']:.3f} / {admission['redis_p99_ms']:.3f} ms (p50 / p99)."
        )
    mixed = [
        (name, data)
        for name, data in scenarios.items()
        if "baseline_ttft_p95_ms" in data and "gateway" in data
    ]
    if mixed:
        lines += [
            "",
            "| scenario | baseline TTFT p50/p95 | path | interactive TTFT p50/p95 "
            "| p95 ÷ baseline p95 | batch req/s | errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, data in mixed:
            for side in ("direct", "gateway", "direct_hand_capped"):
                if side not in data:
                    continue
                d = data[side]
                lines.append(
                    f"| {name} | {data['baseline_ttft_p50_ms']:.0f} / "
                    f"{data['baseline_ttft_p95_ms']:.0f} ms | {side} | "
                    f"{d['interactive_ttft_p50_ms']:.0f} / {d['interactive_ttft_p95_ms']:.0f} ms | "
                    f"×{d['interactive_p95_ratio']:.2f} | {d['batch_per_s']:.2f} | {d['errors']} |"
                )
    for name, data in scenarios.items():
        if "arms" in data:  # the isolation arms (tests/bench/isolation.py)
            lines += ["", f"{name}: {isolation.table(data)}"]
    if "scenario_seconds" in results:
        spent = ", ".join(f"{k} {v:.0f} s" for k, v in results["scenario_seconds"].items())
        lines += ["", f"Time: {results.get('duration_s', 0):.0f} s in all ({spent})."]
    return "\n".join(lines) + "\n"


def goal_rows(scenarios: dict[str, Any]) -> list[str]:
    """A row per goal of a scenario that ran; a figure the run did not produce (e.g. the
    preemption counters of a gateway without them) says so instead of vanishing."""
    rows = []
    for scenario, key, goal, op in GOALS:
        if scenario not in scenarios:
            continue
        value = scenarios[scenario]
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            rows.append(f"| {scenario} | {key} | not measured | {op} {goal} | — |")
            continue
        met = value <= goal if op == "<=" else value >= goal
        rows.append(
            f"| {scenario} | {key} | {value:.3f} | {op} {goal} | {'yes' if met else 'NO'} |"
        )
    return rows


def _row(name: str, data: dict[str, Any]) -> str:
    last = data["rounds"][-1]
    direct, gateway = last["direct"], last["gateway"]
    if "share_of_direct_rps" in data:
        what = (
            f"{data['direct_rps']:.0f} req/s",
            f"{data['gateway_rps']:.0f} req/s ({data['share_of_direct_rps']:.0%})",
        )
    else:
        what = (
            f"TTFT p50 {direct['ttft_p50_ms']:.2f} ms",
            f"TTFT p50 {gateway['ttft_p50_ms']:.2f} ms",
        )
    bound = [
        side for side in ("loadgen", "upstream", "gateway") if gateway[f"{side}_core_share"] > 0.9
    ]
    cpu = data.get("gateway_cpu_ms_per_request")
    cpu_text = f"{cpu:.3f}" if cpu is not None else "-"
    return f"| {name} | {what[0]} | {what[1]} | {cpu_text} | {', '.join(bound) or 'none'} |"


def _x(value: float | None) -> str:
    return "—" if value is None else f"×{value:.2f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def s7_table(s7: dict[str, Any]) -> list[str]:
    """S7's arms (tests/bench/remote.py), issue #17's rows for early offload."""
    lines = [
        f"S7 (M2 mini + M4 Max remote, {s7.get('seconds_per_arm', 0):.0f} s per arm, baseline "
        f"p95 {s7['baseline_ttft_p95_ms']:.0f} ms):",
        "",
        "| arm | chat p50 / p95 (chats) | p95 ÷ baseline | from 5 s after batch: p95 (chats) "
        "| ÷ baseline | ÷ no_batch's | batch req/s | ÷ direct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in remote.S7_ARMS:
        if arm not in s7:
            continue
        d = s7[arm]
        share = d.get("batch_share_of_direct")
        lines.append(
            f"| {arm} | {d['interactive_ttft_p50_ms']:.0f} / {d['interactive_ttft_p95_ms']:.0f} "
            f"ms ({d['interactive_samples']}) | {_x(d['interactive_p95_ratio'])} "
            f"| {_ms(d.get('settled_ttft_p95_ms'))} ({d.get('settled_samples', 0)}) "
            f"| {_x(d.get('settled_p95_ratio'))} | {_x(d.get('settled_p95_over_no_batch'))} "
            f"| {d['batch_per_s']:.2f} "
            f"| {'—' if share is None else f'{share:.0%}'} |"
        )
    moved = s7.get("offload", {})
    if "after_move_ttft_p95_ms" in moved:
        ratio = moved["after_move_ttft_p95_ms"] / s7["baseline_ttft_p95_ms"]
        lines.append(
            f"| offload, after the move at {moved['moved_after_s']:.0f} s "
            f"({moved['after_move_samples']} chats) | {moved['after_move_ttft_p50_ms']:.0f} / "
            f"{moved['after_move_ttft_p95_ms']:.0f} ms | ×{ratio:.2f} | | | | | |"
        )
    for name, met in s7.get("criteria", {}).items():
        lines.append(f"\nS7 early_offload {name}: {_verdict(met)}")
    return lines


def s9_lines(s9: dict[str, Any]) -> list[str]:
    """The demo's first minute: the client's view next to the dashboard's."""
    if "error" in s9:
        return [f"S9 (the demo's first minute): {s9['error']}", *s9.get("log", [])]
    client, view = s9["client"], s9["dashboard"]
    offload = view["offload"]
    limits = ", ".join(f"{lane} {limit}" for lane, limit in view["adaptive_limits"].items())
    remote = ", ".join(f"{lane} {n}" for lane, n in view["remote_in_flight"].items() if n)
    return [
        f"S9 (the demo's first minute, `lanegate demo`; baseline p95 "
        f"{s9['baseline_ttft_p95_ms']:.0f} ms, the mini direct):",
        "",
        "| view | chat TTFT p50 / p95 | p95 ÷ baseline | queue wait p95 |",
        "|---|---|---|---|",
        f"| client, the whole phase ({client['interactive_samples']} chats) "
        f"| {client['interactive_ttft_p50_ms']:.0f} / {client['interactive_ttft_p95_ms']:.0f} ms "
        f"| {_x(client['interactive_p95_ratio'])} | |",
        f"| client, from 5 s after batch ({client['settled_samples']} chats) | — / "
        f"{_ms(client['settled_ttft_p95_ms'])} | {_x(client['settled_p95_ratio'])} | |",
        f"| dashboard, interactive 1m ({view['ttft_count']} chats) | {_ms(view['ttft_p50_ms'])} "
        f"/ {_ms(view['ttft_p95_ms'])} | {_x(s9['dashboard_ttft_p95_ratio'])} "
        f"| {_ms(view['queue_wait_p95_ms'])} |",
        "",
        f"Dashboard at {s9.get('seconds', 60):.0f} s: adaptive limits {limits or 'none'}; "
        f"on the remote pool {remote or 'nothing'}; offload banner {offload['state']} "
        f"({offload['reason']}). "
        f"Early offloads in the phase: {s9['early_offloads']}; limit changes: "
        f"{s9['limit_changes']}; batch {client['batch_per_s']:.2f} req/s; preemptions "
        f"{_preemptions(s9.get('preemption', {}))}.",
        *(
            f"Chats held to {_x(t['effective_target_ratio'])} of a learned baseline of "
            f"{_ms(t['baseline_ttft_ms'])} on {name} (engine floor {_x(t['engine_floor_ratio'])})."
            for name, t in view.get("chat_targets", {}).items()
        ),
    ]


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("yes" if met else "NO")


def _preemptions(figures: dict[str, Any]) -> str:
    count, share = figures.get("preemptions"), figures.get("thrown_share")
    if count is None:
        return "not counted by this gateway"
    return f"{count:.0f} ({'—' if share is None else f'{share:.1%}'} of batch's tokens thrown away)"
