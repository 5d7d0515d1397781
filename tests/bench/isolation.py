"""Lane isolation arms on one engine, each over >= 100 chats: what protects chats beside batch.

The load is mixed.py's (2 chat users with 2 s think time, 16 batch requests kept in flight,
heartbeats at 1/s). Arms, one after another on the same engine, in one run:
- ``direct``: nothing in front;
- ``direct_hand_capped``: batch held to ``slots - 1`` in flight by the client itself;
- ``lanegate_hand_caps``: the lanes with hand-set caps (interactive reserved 1, batch 3,
  heartbeat 1: the compact example docs/policy.md used to ship), adaptive limits off;
- ``lanegate_adaptive``: a policy that names only the upstream's slots and the lanes'
  priorities; the adaptive limits (on by default) do the rest;
- ``lanegate_preempt``: the same with ``preemptible: true`` on batch: a batch request not yet
  answering is cancelled upstream and re-run when a chat needs its slot. Reported: the
  preemptions and the tokens they threw away (the gateway's /metrics, read before it stops) as a
  share of the completion tokens batch's answers carried. A gateway that does not know the
  field yet skips the arm, saying so (its figures are null).
Before a lanegate arm, a few chats run alone through it, as they would before batch starts
on a real machine (the gateway learns its no-load baseline from such chats).

Each arm's chat p95 comes with a 90% interval from order statistics (the ranks between which
the true p95 lies with 90% confidence), so two arms can be told apart from noise. Batch is
completed requests per second, and its share of direct's.

    python -m tests.bench.isolation [--engine llama-server|simulator] [--seconds 160]
                                    [--fresh-prompts] [--arms direct,lanegate_adaptive]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.policy.loader import PolicyError, check_policy_text
from tests.bench import loadgen, mixed
from tests.bench.figures import MIN_CHATS, metric_total, thrown_share
from tests.bench.harness import machine, percentile
from tests.bench.mixed import MixedLoad
from tests.support.processes import REPO, start_lanegate

ARMS = (
    "direct",
    "direct_hand_capped",
    "lanegate_hand_caps",
    "lanegate_adaptive",
    "lanegate_preempt",
)
WARM_CHATS = 8
# Batch still running 30 s after an arm's phase is cut: a backlog queued behind a cap of 3 took
# up to 117 s to drain on a busy machine, time that measures nothing (it ends after the phase).
DRAIN_S = 30.0
HAND_CAPS = """lanes:
  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 1, max_queue: 20}
  - {name: batch, priority: 10, max_concurrency: 3, max_queue: 200, queue_timeout: 120}
  - {name: heartbeat, priority: 50, max_concurrency: 1, max_queue: 10, queue_timeout: 10}
slo: {adaptive_limits: false}
"""
PRIORITIES_ONLY = """lanes:
  - {name: interactive, priority: 100, max_queue: 20}
  - {name: batch, priority: 10, max_queue: 200, queue_timeout: 120}
  - {name: heartbeat, priority: 50, max_queue: 10, queue_timeout: 10}
"""
PREEMPTIBLE = PRIORITIES_ONLY.replace(
    "queue_timeout: 120}", "queue_timeout: 120, preemptible: true}"
)
LANES = {
    "lanegate_hand_caps": HAND_CAPS,
    "lanegate_adaptive": PRIORITIES_ONLY,
    "lanegate_preempt": PREEMPTIBLE,
}
BATCH = {"lane": "batch"}


def p95_interval(samples: list[float], confidence_z: float = 1.645) -> tuple[float, float]:
    """The order statistics that bracket the true p95 with ~90% confidence (normal
    approximation to the binomial count of samples below it)."""
    ordered = sorted(samples)
    n = len(ordered)
    half = confidence_z * math.sqrt(n * 0.95 * 0.05)
    low = max(0, math.floor(n * 0.95 - half) - 1)
    high = min(n - 1, math.ceil(n * 0.95 + half) - 1)
    return ordered[low], ordered[high]


def policy_text(upstream_url: str, kind: str, slots: int, lanes: str) -> str:
    """One upstream of `slots` slots, these lanes, and the shipped demo policy's rules."""
    demo = mixed.DEMO_POLICY.read_text()
    classify = demo[demo.index("\nclassify:") : demo.index("\noffload:")]
    upstream = (
        f"  - {{name: bench, pool: local, kind: {kind}, base_url: '{upstream_url}', "
        f"max_concurrency: {slots}}}\n"
    )
    return "version: 1\nupstreams:\n" + upstream + lanes + classify + "\n"


async def run_arm(
    arm: str, upstream_url: str, kind: str, slots: int, load: MixedLoad, workdir: Path
) -> dict[str, Any]:
    """One arm's run_mixed result, with its chat TTFTs (``ttft_samples``)."""
    cap = slots - 1 if arm == "direct_hand_capped" else None
    own = mixed.fresh(load, batch_cap=cap)
    if not arm.startswith("lanegate"):
        data = await mixed.run_mixed(upstream_url, own)
        return data | {"ttft_samples": own.ttft}
    text = policy_text(upstream_url, kind, slots, LANES[arm])
    refused = refusal(text)
    if refused is not None:
        return {"skipped": refused, **preemption(None, 0)}
    policy = workdir / f"{arm}.yaml"
    policy.write_text(text)
    gateway = mixed.start_gateway(policy, workdir)
    try:
        # Chats alone, before batch, with messages of their own: the baseline's (user 9) would
        # be answered from the engine's prompt cache and teach a baseline no fresh chat gets.
        async with loadgen.session(1) as http:
            await mixed.chats(http, gateway.url + mixed.CHAT, load, WARM_CHATS, 0.1, user=8)
        data = await mixed.run_mixed(gateway.url, own)
        exposition = await scrape(gateway.url)
        changes = [line for line in gateway.log().splitlines() if "adaptive limit: lane" in line]
        data["limit_changes"] = len(changes)
        data["limit_changes_last"] = changes[-12:]  # what the controller did, with reasons
    finally:
        gateway.stop()
    figures = preemption(exposition, own.batch_generated_tokens)
    return data | figures | {"policy_warnings": warnings(text), "ttft_samples": own.ttft}


def refusal(text: str) -> str | None:
    """Why this gateway would refuse the arm's policy (e.g. a field it does not know yet)."""
    try:
        check_policy_text(text, "arm")
    except PolicyError as exc:
        return f"policy refused by this gateway: {exc}"
    return None


def warnings(text: str) -> list[str]:
    """What `lanegate policy check` warns about the arm's policy (e.g. preemption on an engine
    that may go on generating a cut request): the arm runs, and says so."""
    return [f"{w.field}: {w.message}" for w in check_policy_text(text, "arm").warnings]


async def scrape(base_url: str) -> str:
    async with loadgen.session(1) as http, http.get(base_url + "/metrics") as response:
        return await response.text()


def preemption(exposition: str | None, generated: int) -> dict[str, Any]:
    """Batch's preemptions and the tokens they threw away, from a /metrics text (None: the
    gateway does not count them), with the share of batch's generated tokens."""
    count = thrown = None
    if exposition is not None:
        count = metric_total(exposition, "lanegate_preemptions_total", BATCH)
        thrown = metric_total(exposition, "lanegate_preempted_tokens_total", BATCH)
    return {
        "preemptions": count,
        "preempted_tokens": thrown,
        "batch_generated_tokens": generated,
        "thrown_share": thrown_share(thrown, generated),
    }


async def measure(
    upstream_url: str,
    kind: str,
    slots: int,
    load: MixedLoad,
    arms: tuple[str, ...],
    workdir: Path,
    direct_batch_per_s: float | None = None,
) -> dict[str, Any]:
    """Every arm over the same load; batch's share is of this run's `direct` arm, else of
    `direct_batch_per_s` (another run's direct, e.g. S6's for S6f)."""
    began = time.perf_counter()
    base = await mixed.baseline(upstream_url, load, 30)
    base_p95 = percentile(base, 0.95)
    result: dict[str, Any] = {
        "machine": machine(),
        "load": {
            "interactive_users": load.interactive_users,
            "batch_in_flight": load.batch_in_flight,
            "batch_tokens": load.batch_tokens,
            "seconds_per_arm": load.duration_s,
            "fresh_prompts": load.fresh_prompts,
        },
        "baseline_samples": len(base),
        "baseline_ttft_p50_ms": percentile(base, 0.5) * 1000,
        "baseline_ttft_p95_ms": base_p95 * 1000,
        "arms": {},
    }
    for arm in arms:
        started = time.perf_counter()
        data = await run_arm(arm, upstream_url, kind, slots, load, workdir)
        data["arm_seconds"] = round(time.perf_counter() - started, 1)
        result["arms"][arm] = data | chat_figures(data.pop("ttft_samples", []), base_p95)
        await asyncio.sleep(2)  # let the engine drain between arms
    direct = result["arms"].get("direct", {}).get("batch_per_s", direct_batch_per_s)
    result["direct_batch_per_s"] = direct
    result["seconds"] = round(time.perf_counter() - began, 1)
    for data in result["arms"].values():
        per_s = data.get("batch_per_s")
        data["batch_share_of_direct"] = per_s / direct if direct and per_s is not None else None
    return result


def chat_figures(ttfts: list[float], base_p95: float) -> dict[str, Any]:
    """An arm's chat count, whether it is enough, and its p95 over baseline with the interval."""
    figures: dict[str, Any] = {"enough_samples": len(ttfts) >= MIN_CHATS}
    if ttfts:
        low, high = p95_interval(ttfts)
        figures["interactive_p95_ratio"] = percentile(ttfts, 0.95) / base_p95
        figures["interactive_p95_ratio_90ci"] = [low / base_p95, high / base_p95]
    return figures


def table(result: dict[str, Any]) -> str:
    load = result["load"]
    prompts = "a new message every chat turn" if load["fresh_prompts"] else "one repeated message"
    lent = ""
    if "direct" not in result["arms"] and result.get("direct_batch_per_s") is not None:
        lent = " (batch ÷ direct: the previous run's direct)"
    lines = [
        f"{load['seconds_per_arm']:.0f} s per arm, {prompts}{lent}; baseline (chat alone) TTFT "
        f"p50 / p95: {result['baseline_ttft_p50_ms']:.1f} / "
        f"{result['baseline_ttft_p95_ms']:.1f} ms over {result['baseline_samples']} chats",
        "",
        "| arm | chats | chat p50 / p95 | p95 ÷ baseline p95 (90% interval) | batch req/s "
        "| batch ÷ direct | preemptions (tokens thrown away ÷ batch's) | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, d in result["arms"].items():
        if "skipped" in d:
            lines.append(f"| {arm} | skipped: {d['skipped'].splitlines()[0]} | | | | | | |")
            continue
        low, high = d["interactive_p95_ratio_90ci"]
        share = d["batch_share_of_direct"]
        enough = "" if d["enough_samples"] else f" (< {MIN_CHATS})"
        lines.append(
            f"| {arm} | {d['interactive_samples']}{enough} | {d['interactive_ttft_p50_ms']:.0f} / "
            f"{d['interactive_ttft_p95_ms']:.0f} ms | ×{d['interactive_p95_ratio']:.2f} "
            f"(×{low:.2f}–×{high:.2f}) | {d['batch_per_s']:.2f} | "
            f"{'—' if share is None else f'{share:.0%}'} | {_preempted(d)} | {d['errors']} |"
        )
    for arm, d in result["arms"].items():
        lines += [f"\n{arm}'s policy warns: {warning}" for warning in d.get("policy_warnings", [])]
    return "\n".join(lines)


def _preempted(d: dict[str, Any]) -> str:
    if d.get("preemptions") is None:
        return "—"
    share = d["thrown_share"]
    return f"{d['preemptions']:.0f} ({'—' if share is None else f'{share:.1%}'})"


async def on_engine(engine: str, load_args: dict[str, Any], arms: tuple[str, ...]) -> Any:
    (result,) = await runs_on_engine(engine, [(load_args, arms)])
    return result


async def runs_on_engine(
    engine: str, runs: list[tuple[dict[str, Any], tuple[str, ...]]]
) -> list[dict[str, Any]]:
    """Several runs of arms (e.g. repeated prompts, then fresh ones) on one engine started
    once; a run without a `direct` arm takes batch's share of the last run's direct."""
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lanegate-isolation-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        url, kind, model = _engine(engine, workdir, stack)
        direct = None
        for load_args, arms in runs:
            load = MixedLoad(model=model, **({"drain_s": DRAIN_S} | load_args))
            result = await measure(url, kind, 4, load, arms, workdir, direct)
            direct = result["direct_batch_per_s"]
            results.append(result)
    return results


def _engine(engine: str, workdir: Path, stack: contextlib.ExitStack) -> tuple[str, str, str]:
    """(base URL, kind, model) of the engine, started for the stack's lifetime."""
    if engine == "simulator":  # S5's upstream: the M2-mini profile, 4 slots
        args = ["simulate", "--profile", "m2-mini-16gb", "--seed", "5"]
        sim = start_lanegate("iso-sim", args, ready_path="/health", log_dir=workdir)
        stack.callback(sim.stop)
        return sim.url, "ollama", "llama3.1:8b"
    from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model

    binary, model = ensure_llama_server(), ensure_model("large")
    server = stack.enter_context(LlamaServer(binary, model, parallel=4, ctx=4096))
    return server.base_url.removesuffix("/"), "llamacpp", server.alias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("llama-server", "simulator"), default="llama-server")
    parser.add_argument("--seconds", type=float, default=160.0, help="per arm (>= 100 chats)")
    parser.add_argument("--batch-tokens", type=int, default=256)
    parser.add_argument("--fresh-prompts", action="store_true")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    args = parser.parse_args()
    arms = tuple(arm for arm in args.arms.split(",") if arm)
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    load_args = {
        "duration_s": args.seconds,
        "batch_tokens": args.batch_tokens,
        "fresh_prompts": args.fresh_prompts,
    }
    result = asyncio.run(on_engine(args.engine, load_args, arms))
    result["engine"] = args.engine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"isolation-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
