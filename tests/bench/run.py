"""`make bench`: relay overhead scenarios, gateway vs direct, interleaved in one run.

S1 one stream at a time (added TTFT); S2 32 concurrent streams (upstream TTFT 20 ms, 32
chunks 5 ms apart); S3 64 concurrent tiny non-streamed requests (max req/s), with the lean
(default), aiohttp and httpx upstream clients; S4 gateway RSS idle and after load; S5/S6
lane isolation under mixed load (tests/bench/mixed.py) on the simulator's M2-mini profile,
and S6 its arms (direct, hand caps, priorities-only adaptive: tests/bench/isolation.py) on
llama.cpp's server, with S6's repeated message, and S6f the protected arms with a new message
every turn; S7 the same load with a remote pool: direct, lanes alone, sustained offload and
issue #17's policy (priorities only, early offload) (tests/bench/remote.py); S8 the admission
cost of lanes shared through Redis (tests/bench/shared.py); S9 the demo (`make run`) under
S7's load for its first minute, with what its dashboard shows.
Writes bench-results/<time>.json and .md, and prints the markdown. Goals are reported,
never asserted.

    python -m tests.bench.run [--quick] [--rounds N] [--only S1,S3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from tests.bench import harness, isolation, loadgen, mixed, remote, report, shared
from tests.bench.harness import median
from tests.support.processes import REPO, Service, start_lanegate

CHAT = "/v1/chat/completions"
S6_SECONDS = 170.0  # per isolation arm: 0.62-0.73 chats/s measured here, so ~105-125 chats
# S6f, a new message every chat turn: the arms the question is about, to save time.
FRESH_ARMS = ("direct_hand_capped", "lanegate_hand_caps", "lanegate_adaptive", "lanegate_preempt")


def _body(stream: bool) -> bytes:
    return json.dumps(
        {"model": "bench", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: dict[str, Any] = {"machine": harness.machine(), "scenarios": {}}
        self.stream_up = harness.start_responder(ttft_ms=20, interval_ms=5, chunks=32)
        self.short_up = harness.start_responder(ttft_ms=20, interval_ms=5, chunks=4)
        self.gateways: dict[str, Service] = {}

    def gateway(self, upstream: harness.Responder, name: str, **env: str) -> Service:
        if name not in self.gateways:
            self.gateways[name] = harness.start_gateway(
                upstream.url, self.workdir, name=name, env=env
            )
        return self.gateways[name]

    def close(self) -> None:
        for service in self.gateways.values():
            service.stop()
        self.stream_up.stop()
        self.short_up.stop()

    async def interleave(
        self,
        name: str,
        gateway: Service,
        upstream: harness.Responder,
        run: Callable[[str], Coroutine[Any, Any, tuple[list[loadgen.Sample], float]]],
        reference: dict[str, str] | None = None,
        count: int | None = None,
    ) -> list[dict[str, Any]]:
        """A, B, A, B ... over the rounds; each entry holds both sides of one round (and a
        reference proxy's, e.g. nginx, when given)."""
        meter = harness.CpuMeter({"gateway": gateway.process.pid, "upstream": upstream.process.pid})
        rounds = []
        sides = [("direct", upstream.url), ("gateway", gateway.url), *(reference or {}).items()]
        total = min(count or self.args.rounds, self.args.rounds)
        for index in range(total):
            entry: dict[str, Any] = {"round": index}
            for side, base in sides:
                with meter.measure() as cpu:
                    samples, wall = await run(base + CHAT)
                entry[side] = {**harness.summarize(samples, wall), **cpu}
            rounds.append(entry)
            print(f"  {name} round {index + 1}/{total}", flush=True)
        return rounds

    async def s1_one_stream(self) -> dict[str, Any]:
        gateway = self.gateway(self.short_up, "gw-short")
        count = 30 if self.args.quick else 60
        async with loadgen.session(1) as http:
            await loadgen.sequential(http, gateway.url + CHAT, _body(True), True, 10)  # warm-up

            async def run(url: str) -> tuple[list[loadgen.Sample], float]:
                started = time.perf_counter()
                samples = await loadgen.sequential(http, url, _body(True), True, count)
                return samples, time.perf_counter() - started

            nginx = harness.start_nginx(self.short_up, self.workdir)
            reference = {"nginx": nginx.url} if nginx else None
            try:
                if nginx:
                    await loadgen.sequential(http, nginx.url + CHAT, _body(True), True, 10)
                rounds = await self.interleave("S1", gateway, self.short_up, run, reference)
            finally:
                if nginx:
                    nginx.stop()
        result = {"rounds": rounds, **_added(rounds)}
        if nginx:  # the physical limit of a proxy on this machine, measured in the same run
            result["nginx_added_ttft_p50_ms"] = _added(rounds, "nginx")["added_ttft_p50_ms"]
            result["nginx_added_ttft_p99_ms"] = _added(rounds, "nginx")["added_ttft_p99_ms"]
        return result

    async def s2_streams(self) -> dict[str, Any]:
        gateway = self.gateway(self.stream_up, "gw-stream")
        seconds = 2.0 if self.args.quick else 4.0
        async with loadgen.session(32) as http:

            async def run(url: str) -> tuple[list[loadgen.Sample], float]:
                return await loadgen.closed_loop(http, url, _body(True), True, 32, duration=seconds)

            await run(gateway.url + CHAT)  # warm-up: fill both connection pools
            rounds = await self.interleave("S2", gateway, self.stream_up, run)
        e2e_ratio = median([r["gateway"]["e2e_p99_ms"] / r["direct"]["e2e_p99_ms"] for r in rounds])
        return {
            "rounds": rounds,
            **_added(rounds),
            "e2e_p99_ratio": e2e_ratio,
            **_cpu_per_request(rounds),
        }

    async def s3_tiny(self, client: str, rounds: int | None = None) -> dict[str, Any]:
        gateway = self.gateway(self.stream_up, f"gw-{client}", LANEGATE_UPSTREAM_CLIENT=client)
        seconds = 1.5 if self.args.quick else 3.0
        async with loadgen.session(64) as http:

            async def run(url: str) -> tuple[list[loadgen.Sample], float]:
                return await loadgen.closed_loop(
                    http, url, _body(False), False, 64, duration=seconds
                )

            await run(gateway.url + CHAT)
            rounds = await self.interleave(
                f"S3-{client}", gateway, self.stream_up, run, count=rounds
            )
        share = median([r["gateway"]["req_per_s"] / r["direct"]["req_per_s"] for r in rounds])
        return {
            "rounds": rounds,
            "share_of_direct_rps": share,
            **_cpu_per_request(rounds),
            "gateway_rps": median([r["gateway"]["req_per_s"] for r in rounds]),
            "direct_rps": median([r["direct"]["req_per_s"] for r in rounds]),
        }

    async def s5_mixed_simulator(self) -> dict[str, Any]:
        args = ["simulate", "--profile", "m2-mini-16gb", "--seed", "5"]
        sim = start_lanegate("sim-m2", args, ready_path="/health", log_dir=self.workdir)
        policy = mixed.demo_lanes_policy(self.workdir / "mixed-sim.yaml", sim.url, 4, "ollama")
        gateway = mixed.start_gateway(policy, self.workdir)
        load = mixed.MixedLoad(model="llama3.1:8b", duration_s=self._mixed_seconds())
        try:
            return await mixed.compare(sim.url, gateway.url, load, baseline_samples=20)
        finally:
            gateway.stop()
            sim.stop()

    async def s6_mixed_llama_server(self) -> dict[str, Any]:
        """The isolation arms (tests/bench/isolation.py) on llama.cpp's server, 4 slots: every
        arm with S6's repeated message (S6), then the protected arms with a new message each
        turn (S6f, batch's share taken of S6's direct); one engine start for both."""
        seconds = 60.0 if self.args.quick else S6_SECONDS
        repeated: dict[str, Any] = {"duration_s": seconds, "batch_tokens": 256}
        runs: list[tuple[dict[str, Any], tuple[str, ...]]] = [(repeated, isolation.ARMS)]
        if not self.args.quick:
            runs.append(({**repeated, "fresh_prompts": True}, FRESH_ARMS))
        results = await isolation.runs_on_engine("llama-server", runs)
        if len(results) > 1:
            self.results["scenarios"]["S6f"] = results[1]
        return results[0]

    def _mixed_seconds(self, long: bool = False) -> float:
        """S5's phase; S7's longer (`long`), so its chats after the first 5 s are enough
        for a p95 to mean something (~20 at 35 s)."""
        if self.args.quick:
            return 15.0
        return 35.0 if long else 25.0

    async def run(self) -> dict[str, Any]:
        only = set(self.args.only.split(",")) if self.args.only else None
        wanted = lambda key: only is None or key in only  # noqa: E731
        scenarios = self.results["scenarios"]
        spent = self.results.setdefault("scenario_seconds", {})
        rss: dict[str, float] = {}

        async def timed(key: str, scenario: Coroutine[Any, Any, dict[str, Any]]) -> None:
            started = time.time()
            scenarios[key] = await scenario
            spent[key] = round(time.time() - started, 1)

        if wanted("S1"):
            await timed("S1", self.s1_one_stream())
        if wanted("S2") or wanted("S4"):
            gateway = self.gateway(self.stream_up, "gw-stream")
            rss["idle_mb"] = harness.rss_mb(gateway.process.pid)
            await timed("S2", self.s2_streams())
            rss["after_s2_mb"] = harness.rss_mb(gateway.process.pid)
        if wanted("S3") or wanted("S4"):
            await timed("S3", self.s3_tiny("lean"))
            rss["after_s3_mb"] = harness.rss_mb(self.gateways["gw-lean"].process.pid)
            for alternative in ("aiohttp", "httpx"):  # the measurement behind the default
                await timed(f"S3-{alternative}", self.s3_tiny(alternative, rounds=3))
        if rss:
            scenarios["S4"] = rss
        if wanted("S5"):
            await timed("S5", self.s5_mixed_simulator())
        if wanted("S6"):
            await timed("S6", self.s6_mixed_llama_server())
            if "S6f" in scenarios:  # one engine, two runs: each its own time
                spent["S6f"] = scenarios["S6f"]["seconds"]
                spent["S6"] = round(spent["S6"] - spent["S6f"], 1)
        if wanted("S7"):
            await timed("S7", remote.s7_offload(self.workdir, self._mixed_seconds(long=True)))
        if wanted("S9"):
            await timed("S9", remote.s9_demo(self.workdir, 30.0 if self.args.quick else 60.0))
        if wanted("S8"):
            rounds = min(3, self.args.rounds)
            await timed(
                "S8", shared.s8_shared(self.workdir, self.short_up, self.args.quick, rounds)
            )
        return self.results


def _added(rounds: list[dict[str, Any]], proxy: str = "gateway") -> dict[str, float]:
    return {
        "added_ttft_p50_ms": median(
            [r[proxy]["ttft_p50_ms"] - r["direct"]["ttft_p50_ms"] for r in rounds]
        ),
        "added_ttft_p99_ms": median(
            [r[proxy]["ttft_p99_ms"] - r["direct"]["ttft_p99_ms"] for r in rounds]
        ),
        "direct_ttft_p50_ms": median([r["direct"]["ttft_p50_ms"] for r in rounds]),
    }


def _cpu_per_request(rounds: list[dict[str, Any]]) -> dict[str, float]:
    per = [r["gateway"]["gateway_cpu_s"] / max(1, r["gateway"]["requests"]) * 1000 for r in rounds]
    return {"gateway_cpu_ms_per_request": median(per)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="shorter phases, 3 rounds")
    parser.add_argument("--only", help="comma-separated scenarios, e.g. S1,S3")
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lanegate-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            started = time.time()
            results = uvloop.run(bench.run())
            results["duration_s"] = round(time.time() - started, 1)
        finally:
            bench.close()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results["timestamp"] = stamp
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    markdown = report.markdown(results)
    (out / f"{stamp}.md").write_text(markdown)
    print(markdown)
    print(f"results: {out / stamp}.json")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
