"""Lane isolation arms on one engine, each over >= 100 chats: what protects chats beside batch.

The load is mixed.py's (2 chat users with 2 s think time, 16 batch requests kept in flight,
heartbeats at 1/s). Arms, one after another on the same engine, in one run:
- ``direct``: nothing in front;
- ``direct_hand_capped``: batch held to ``slots - 1`` in flight by the client itself;
- ``lanegate_hand_caps``: the lanes with hand-set caps (interactive reserved 1, batch 3,
  heartbeat 1: the compact example docs/policy.md used to ship), adaptive limits off;
- ``lanegate_adaptive``: a policy that names only the upstream's slots and the lanes'
  priorities; the adaptive limits (on by default) do the rest.
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
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import loadgen, mixed
from tests.bench.harness import machine, percentile
from tests.bench.mixed import MixedLoad
from tests.support.processes import REPO, start_lanegate

ARMS = ("direct", "direct_hand_capped", "lanegate_hand_caps", "lanegate_adaptive")
WARM_CHATS = 8
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
    lanes = HAND_CAPS if arm == "lanegate_hand_caps" else PRIORITIES_ONLY
    policy = workdir / f"{arm}.yaml"
    policy.write_text(policy_text(upstream_url, kind, slots, lanes))
    gateway = mixed.start_gateway(policy, workdir)
    try:
        # Chats alone, before batch, with messages of their own: the baseline's (user 9) would
        # be answered from the engine's prompt cache and teach a baseline no fresh chat gets.
        async with loadgen.session(1) as http:
            await mixed.chats(http, gateway.url + mixed.CHAT, load, WARM_CHATS, 0.1, user=8)
        data = await mixed.run_mixed(gateway.url, own)
        changes = [line for line in gateway.log().splitlines() if "adaptive limit: lane" in line]
        data["limit_changes"] = len(changes)
        data["limit_changes_last"] = changes[-12:]  # what the controller did, with reasons
    finally:
        gateway.stop()
    return data | {"ttft_samples": own.ttft}


async def measure(
    upstream_url: str, kind: str, slots: int, load: MixedLoad, arms: tuple[str, ...], workdir: Path
) -> dict[str, Any]:
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
        data = await run_arm(arm, upstream_url, kind, slots, load, workdir)
        data["interactive_p95_ratio"] = data["interactive_ttft_p95_ms"] / (base_p95 * 1000)
        low, high = p95_interval(data.pop("ttft_samples"))
        data["interactive_p95_ratio_90ci"] = [low / base_p95, high / base_p95]
        result["arms"][arm] = data
        await asyncio.sleep(2)  # let the engine drain between arms
    direct = result["arms"].get("direct", {}).get("batch_per_s")
    for data in result["arms"].values():
        data["batch_share_of_direct"] = data["batch_per_s"] / direct if direct else None
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"baseline (chat alone) TTFT p50 / p95: {result['baseline_ttft_p50_ms']:.1f} / "
        f"{result['baseline_ttft_p95_ms']:.1f} ms over {result['baseline_samples']} chats",
        "",
        "| arm | chats | chat p50 / p95 | p95 ÷ baseline p95 (90% interval) | batch req/s "
        "| batch ÷ direct | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, d in result["arms"].items():
        low, high = d["interactive_p95_ratio_90ci"]
        share = d["batch_share_of_direct"]
        lines.append(
            f"| {arm} | {d['interactive_samples']} | {d['interactive_ttft_p50_ms']:.0f} / "
            f"{d['interactive_ttft_p95_ms']:.0f} ms | ×{d['interactive_p95_ratio']:.2f} "
            f"(×{low:.2f}–×{high:.2f}) | {d['batch_per_s']:.2f} | "
            f"{'—' if share is None else f'{share:.0%}'} | {d['errors']} |"
        )
    return "\n".join(lines)


async def on_engine(engine: str, load_args: dict[str, Any], arms: tuple[str, ...]) -> Any:
    with tempfile.TemporaryDirectory(prefix="lanegate-isolation-") as tmp:
        workdir = Path(tmp)
        if engine == "simulator":  # S5's upstream: the M2-mini profile, 4 slots
            args = ["simulate", "--profile", "m2-mini-16gb", "--seed", "5"]
            sim = start_lanegate("iso-sim", args, ready_path="/health", log_dir=workdir)
            try:
                load = MixedLoad(model="llama3.1:8b", **load_args)
                return await measure(sim.url, "ollama", 4, load, arms, workdir)
            finally:
                sim.stop()
        from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model

        binary, model = ensure_llama_server(), ensure_model("large")
        with LlamaServer(binary, model, parallel=4, ctx=4096) as server:
            load = MixedLoad(model=server.alias, **load_args)
            url = server.base_url.removesuffix("/")
            return await measure(url, "llamacpp", 4, load, arms, workdir)


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
