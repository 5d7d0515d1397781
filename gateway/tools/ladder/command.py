"""The shell of `lanegate ladder`: arguments → a run → files. Called by gateway.commands.ladder.

Ctrl-C cancels the climb only: the rows and samples taken so far are summarised, the partial
rung marked, and every output written before the process exits with 130.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.tools.ladder.endpoint import ModelInfo, Unreachable, live_gateway_warning, model_info
from gateway.tools.ladder.gates import GateRung, SloThresholds, evaluate
from gateway.tools.ladder.knee import KneeRules
from gateway.tools.ladder.meta import host_info, tool_info
from gateway.tools.ladder.mix import LaneShare, parse_assignments, parse_mix, parse_rungs
from gateway.tools.ladder.progress import Progress
from gateway.tools.ladder.prompts import PromptSet, make_prompts
from gateway.tools.ladder.report import build_report, write_outputs
from gateway.tools.ladder.runner import Contract, LaneLoad, LoadRunner
from gateway.tools.ladder.session import Ladder, LadderState, RungResult
from gateway.tools.ladder.signals import ProcessWatch, SignalRecorder
from gateway.tools.ladder.verbs import LadderUsageError

INTERACTIVE = "interactive"
EXIT_GATE_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class Plan:
    base_url: str
    model: str
    api_key: str | None
    rungs: tuple[int, ...]
    mix: tuple[LaneShare, ...]
    lane_keys: dict[str, str]
    contract: Contract
    rules: KneeRules
    thresholds: SloThresholds
    out: Path
    note: str | None


def plan_from(args: argparse.Namespace) -> Plan:
    if not args.base_url or not args.model:
        raise LadderUsageError("--base-url and --model are required")
    if args.rung_seconds <= 0 or args.max_tokens < 1:
        raise LadderUsageError("--rung-seconds must be above 0 and --max-tokens at least 1")
    try:
        rungs = parse_rungs(args.rungs)
        mix = parse_mix(args.mix) if args.mix else ()
        lane_keys = parse_assignments(args.lane_key, "--lane-key")
        rules = KneeRules(args.knee_ratio, args.knee_error_rate, args.knee_min_gain)
    except ValueError as exc:
        raise LadderUsageError(str(exc)) from None
    if mix:  # one step with every lane at once: its rung is the total in flight
        rungs = (sum(share.concurrency for share in mix),)
    contract = Contract(stream=args.stream, max_tokens=args.max_tokens, timeout_s=args.timeout)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Plan(
        base_url=args.base_url.rstrip("/"),
        model=args.model,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY") or None,
        rungs=rungs,
        mix=mix,
        lane_keys=lane_keys,
        contract=contract,
        rules=rules,
        thresholds=thresholds_from(args),
        out=Path(args.out) if args.out else Path("ladder-runs") / stamp,
        note=args.note,
    )


def thresholds_from(args: argparse.Namespace) -> SloThresholds:
    """The policy's `slo` section (or the defaults), each flag given overriding its field."""
    base = SloThresholds()
    if args.policy:
        from gateway.policy import PolicyError, load_policy

        try:
            policy = load_policy(args.policy)
        except (PolicyError, OSError) as exc:
            raise LadderUsageError(f"--policy {args.policy}: {exc}") from None
        base = policy.slo or base
    overrides = {
        "interactive_p95_ttft_ms": args.gate_p95_ttft_ms,
        "p95_ratio": args.gate_p95_ratio,
        "error_rate": args.gate_error_rate,
        "swap_growth_gb": args.gate_swap_growth_gb,
    }
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def loads_for(plan: Plan, lane: str | None) -> Any:
    def single(concurrency: int) -> list[LaneLoad]:
        headers = {"X-Lane": lane} if lane else {}
        return [LaneLoad(lane or "", concurrency=concurrency, headers=headers)]

    def mixed(_: int) -> list[LaneLoad]:
        loads = []
        for share in plan.mix:
            headers = {"X-Lane": share.lane}
            if share.lane in plan.lane_keys:
                headers["Authorization"] = f"Bearer {plan.lane_keys[share.lane]}"
            loads.append(LaneLoad(share.lane, share.concurrency, share.rate_per_s, headers))
        return loads

    return mixed if plan.mix else single


def run_ladder(args: argparse.Namespace) -> int:
    plan = plan_from(args)
    prompts = make_prompts(args.seed, args.prompt_tokens)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        state, (runner, recorder, info, warnings) = asyncio.run(_climb(plan, args, prompts))
    except Unreachable as exc:
        raise LadderUsageError(f"{exc} (is the server running, and --base-url right?)") from None
    except KeyboardInterrupt:  # before the first rung: nothing was measured
        print("lanegate ladder: interrupted before the first request", file=sys.stderr)
        return EXIT_INTERRUPTED
    meta = _meta(plan, args, prompts, started_at, state, recorder, info)
    report = build_report(
        meta={**meta, "warnings": warnings},
        rungs=state.rungs,
        knee=state.knee,
        thresholds=dataclasses.asdict(plan.thresholds),
        gates=evaluate(plan.thresholds, _gate_rungs(state), _knee_index(state)),
    )
    report["plot"] = _plot(plan, args, report, recorder)
    write_outputs(plan.out, report, runner.rows, recorder.rows)
    _summary(plan, report)
    if state.interrupted:
        return EXIT_INTERRUPTED
    return 0 if report["gates"]["passed"] else EXIT_GATE_FAILED


def _plot(
    plan: Plan, args: argparse.Namespace, report: dict[str, Any], recorder: SignalRecorder
) -> dict[str, Any]:
    """Draw ladder.png; without matplotlib, say how to get it and go on."""
    if args.no_plot:
        return {"written": False, "why": "--no-plot"}
    from gateway.tools.ladder.plot import PlotUnavailable, draw

    plan.out.mkdir(parents=True, exist_ok=True)
    try:
        draw(report, plan.out / "ladder.png", recorder.rows)
    except PlotUnavailable as exc:
        print(
            f"lanegate ladder: ladder.png skipped: {exc}; then `lanegate ladder plot {plan.out}` "
            "draws it",
            file=sys.stderr,
        )
        return {"written": False, "why": str(exc)}
    return {"written": True, "file": "ladder.png"}


def plot_run(run: Path) -> int:
    """`lanegate ladder plot RUN`: ladder.png beside a finished run's report.json, for a run
    made without matplotlib."""
    from gateway.tools.ladder.plot import PlotUnavailable, draw
    from gateway.tools.ladder.verbs import load_report

    report = load_report(run)
    directory = run.parent if run.is_file() else run
    try:
        draw(report, directory / "ladder.png")
    except PlotUnavailable as exc:
        print(f"lanegate ladder: {exc}", file=sys.stderr)
        return 2
    return 0


def _meta(
    plan: Plan,
    args: argparse.Namespace,
    prompts: PromptSet,
    started_at: str,
    state: LadderState,
    recorder: SignalRecorder,
    info: ModelInfo,
) -> dict[str, Any]:
    """Everything about the run but its measurements: who, what, where, and how."""
    host = host_info()
    probe = recorder.probe
    host["clusters"] = ", ".join(f"{c.name} {c.logical_cpus}" for c in probe.clusters) or None
    return {
        "started_at": started_at,
        "note": plan.note,
        "interrupted": state.interrupted,
        "tool": tool_info(),
        "target": {
            "base_url": plan.base_url,
            "model": plan.model,
            "lane": args.lane,
            "digest": info.digest,
            "digest_source": info.digest_source,
            "server_version": info.server_version,
        },
        "host": host,
        "contract": {
            **dataclasses.asdict(plan.contract),
            "prompt_tokens": prompts.tokens,
            "prompt_seed": prompts.seed,
            "prompt_count": len(prompts.prompts),
            "prompt_set_sha256": prompts.sha256,
        },
        "ladder": {
            "rungs": list(plan.rungs),
            "rung_seconds": args.rung_seconds,
            "stop_at_knee": args.stop_at_knee,
            "mix": args.mix,
            "knee_rules": dataclasses.asdict(plan.rules),
        },
        "signals": {
            "samples": len(recorder.rows),
            "interval_s": args.sample_interval,
            "watch": _watch_text(args),
            "error": recorder.error,
            "host_errors": dict(probe.errors),
            "failed_samples": recorder.failures,
            "last_failure": recorder.failure,
        },
    }


async def _climb(
    plan: Plan, args: argparse.Namespace, prompts: PromptSet
) -> tuple[LadderState, tuple[LoadRunner, SignalRecorder, ModelInfo, list[str]]]:
    info = await model_info(plan.base_url, plan.model, api_key=plan.api_key)
    warning = await live_gateway_warning(plan.base_url)
    if warning:
        print(f"lanegate ladder: warning: {warning}", file=sys.stderr)
    runner = LoadRunner(
        plan.base_url,
        plan.model,
        plan.contract,
        prompts,
        api_key=plan.api_key,
        clock=time.monotonic,
    )
    watch = ProcessWatch(args.watch_pid, args.watch_name)
    recorder = SignalRecorder(runner.now, watch=watch, interval_s=args.sample_interval)
    progress = Progress(runner, sys.stderr, rungs=len(plan.rungs), rung_seconds=args.rung_seconds)
    ladder = Ladder(
        runner,
        recorder,
        rungs=plan.rungs,
        rung_seconds=args.rung_seconds,
        loads_for=loads_for(plan, args.lane),
        rules=plan.rules,
        stop_at_knee=args.stop_at_knee,
        on_rung=progress.on_rung,
    )
    interrupted = await _run_interruptibly(ladder, recorder, progress)
    await runner.aclose()
    warnings = [warning] if warning else []
    return ladder.finish(interrupted=interrupted), (runner, recorder, info, warnings)


async def _run_interruptibly(ladder: Ladder, recorder: SignalRecorder, progress: Progress) -> bool:
    loop = asyncio.get_running_loop()
    await recorder.start()
    progress.start()
    climb = asyncio.create_task(ladder.run(), name="ladder")
    loop.add_signal_handler(signal.SIGINT, climb.cancel)
    loop.add_signal_handler(signal.SIGTERM, climb.cancel)
    interrupted = False
    try:
        await climb
    except asyncio.CancelledError:
        if not climb.cancelled():
            raise
        interrupted = True
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        await progress.stop()
        await recorder.sample()  # the last reading, so a short rung has one too
        await recorder.stop()
    return interrupted


def _gate_rungs(state: LadderState) -> list[GateRung]:
    return [_gate_rung(rung) for rung in state.rungs if not rung.partial]


def _gate_rung(rung: RungResult) -> GateRung:
    lane = rung.lanes.get(INTERACTIVE) if len(rung.lanes) > 1 else None
    ttft = (lane or rung.overall).ttft.p95
    return GateRung(rung.concurrency, ttft, rung.overall.error_rate, rung.swap_growth_bytes)


def _knee_index(state: LadderState) -> int | None:
    return state.knee.index if state.knee else None


def _watch_text(args: argparse.Namespace) -> str | None:
    if args.watch_pid is not None:
        return f"pid {args.watch_pid}"
    return f"processes named {args.watch_name!r}" if args.watch_name else None


def _summary(plan: Plan, report: dict[str, Any]) -> None:
    knee = report["knee"]
    gates = report["gates"]
    knee_text = f"knee at {knee['concurrency']} ({knee['rule']})" if knee else "no knee"
    verdict = "gates pass" if gates["passed"] else "a gate FAILED"
    print(f"{knee_text}; {verdict}; wrote {plan.out}/", file=sys.stderr)
