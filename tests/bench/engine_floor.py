"""What capping batch can buy on an inference engine, with no gateway at all: its floor.

Issue #5's goal (interactive p95 TTFT ≤ 1.5 times the single-stream baseline, batch ≥ 70% of its
uncapped throughput) rests on a by-hand experiment: batch held to 3 of 4 slots. This measures
that trade-off directly, one chat at a time (so chats never queue behind each other and no
scheduler is involved): the chat's TTFT while exactly k batch requests decode on the other
slots, and the batch throughput those k give, against 16 batch requests left uncapped.
Any scheduler that keeps k batch requests running when a chat arrives can do no better than
row k. Bodies are S5/S6's (tests/bench/mixed.py); `--engine simulator` asks S5's simulated
M2 mini the same question.

    python -m tests.bench.engine_floor [--engine llama-server|simulator] [--threads N]
                                       [--chats 20] [--fresh-prompts]

Prints a markdown table and writes bench-results/engine-floor-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import loadgen, mixed
from tests.bench.harness import machine, percentile
from tests.bench.mixed import CHAT, MixedLoad
from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model
from tests.support.processes import REPO, start_lanegate

SLOTS = 4
UNCAPPED = 16


async def _batch_loop(
    http: aiohttp.ClientSession, url: str, load: MixedLoad, worker: int, done: list[float]
) -> None:
    body = load.body(f"Summarise document {worker}.", load.batch_tokens, False)
    while True:
        sample = await loadgen.one(http, url, body, False)
        if sample.status == 200:
            done.append(time.perf_counter())


async def _with_batch(
    url: str, load: MixedLoad, running: int, chats: int, seconds: float | None = None
) -> dict[str, Any]:
    """`running` batch requests kept in flight; chats one at a time (or none, for `seconds`)."""
    done: list[float] = []
    async with loadgen.session(running + 1) as http:
        workers = [
            asyncio.ensure_future(_batch_loop(http, url, load, w, done)) for w in range(running)
        ]
        try:
            await asyncio.sleep(2.0)  # every batch slot busy before measuring
            started = time.perf_counter()
            ttfts = await mixed.chats(http, url, load, chats, 0.5, running) if chats else []
            if seconds is not None:
                await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - started
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    completed = sum(1 for at in done if at >= started)
    row: dict[str, Any] = {"batch_running": running, "batch_per_s": completed / elapsed}
    if ttfts:
        row |= {
            "chats": len(ttfts),
            "ttft_p50_ms": percentile(ttfts, 0.5) * 1000,
            "ttft_p95_ms": percentile(ttfts, 0.95) * 1000,
        }
    return row


async def _rows(base_url: str, load: MixedLoad, chats: int) -> dict[str, Any]:
    url = base_url + CHAT
    async with loadgen.session(1) as http:
        await mixed.chats(http, url, load, 5, 0.1, user=0)  # warm-up
        base = await mixed.chats(http, url, load, 30, 0.1, user=9)
    uncapped = await _with_batch(url, load, UNCAPPED, 0, seconds=15.0)
    rows = [await _with_batch(url, load, k, chats) for k in range(1, SLOTS)]
    return {"baseline": base, "uncapped": uncapped, "rows": rows}


async def measure(
    engine: str, threads: int | None, chats: int, fresh_prompts: bool
) -> dict[str, Any]:
    if engine == "simulator":  # S5's upstream: the M2-mini profile, 4 slots
        args = ["simulate", "--profile", "m2-mini-16gb", "--seed", "5"]
        with tempfile.TemporaryDirectory() as logs:
            sim = start_lanegate("floor-sim", args, ready_path="/health", log_dir=Path(logs))
            try:
                load = MixedLoad(model="llama3.1:8b", fresh_prompts=fresh_prompts)
                found = await _rows(sim.url, load, chats)
            finally:
                sim.stop()
    else:
        binary, model = ensure_llama_server(), ensure_model("large")
        with LlamaServer(binary, model, parallel=SLOTS, ctx=4096, threads=threads) as server:
            load = MixedLoad(model=server.alias, fresh_prompts=fresh_prompts)
            found = await _rows(server.base_url.removesuffix("/"), load, chats)
    base, uncapped, rows = found["baseline"], found["uncapped"], found["rows"]
    base_p95 = percentile(base, 0.95)
    for row in rows:
        row["p95_ratio"] = row["ttft_p95_ms"] / (base_p95 * 1000)
        row["batch_share"] = row["batch_per_s"] / uncapped["batch_per_s"]
    return {
        "machine": machine(),
        "engine": engine,
        "llama_server_threads": threads,
        "fresh_prompts": fresh_prompts,
        "baseline_ttft_p50_ms": percentile(base, 0.5) * 1000,
        "baseline_ttft_p95_ms": base_p95 * 1000,
        "uncapped_batch_per_s": uncapped["batch_per_s"],
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"baseline (chat alone) TTFT p50/p95: {result['baseline_ttft_p50_ms']:.1f} / "
        f"{result['baseline_ttft_p95_ms']:.1f} ms; {UNCAPPED} batch uncapped: "
        f"{result['uncapped_batch_per_s']:.2f} req/s",
        "",
        "| batch running | chat TTFT p50 / p95 | p95 / baseline p95 | batch req/s | share |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['batch_running']} | {row['ttft_p50_ms']:.0f} / {row['ttft_p95_ms']:.0f} ms "
            f"| ×{row['p95_ratio']:.2f} | {row['batch_per_s']:.2f} | {row['batch_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engine",
        choices=("llama-server", "simulator"),
        default="llama-server",
        help="S6's llama.cpp server, or S5's simulated M2 mini",
    )
    parser.add_argument("--threads", type=int, help="llama-server --threads (default: its own)")
    parser.add_argument("--chats", type=int, default=20, help="chats measured per row")
    parser.add_argument(
        "--fresh-prompts", action="store_true", help="a new chat message every turn"
    )
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    args = parser.parse_args()
    result = asyncio.run(measure(args.engine, args.threads, args.chats, args.fresh_prompts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"engine-floor-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
