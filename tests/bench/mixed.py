"""The lane-isolation benchmark: chat users beside batch jobs and agent heartbeats.

Mixed load in one run: 2 interactive users (each streams a ~32-token chat, then pauses 2 s, as
people do), 16 batch requests kept in flight, heartbeats at 1/s. Measured (a) direct to the
upstream and (b) through lanegate with the shipped demo policy's lanes, against the simulator's
M2-mini profile and against llama.cpp's server with 4 slots. Interactive TTFT is reported as a
ratio to the single-stream baseline measured in the same run; batch as completed requests/s.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import loadgen
from tests.bench.figures import started_after
from tests.bench.harness import percentile
from tests.support.processes import REPO, Service, start_lanegate

CHAT = "/v1/chat/completions"
TOPICS = ("the sea", "a mountain", "the city at night", "autumn rain", "a lighthouse", "snow")
DEMO_POLICY = REPO / "policies" / "demo.yaml"
SETTLE_S = 5.0  # issue #17: chat p95 within 2x baseline from 5 s after batch starts


@dataclass
class MixedLoad:
    model: str
    interactive_users: int = 2
    interactive_tokens: int = 32
    pause_s: float = 2.0
    batch_in_flight: int = 16
    batch_tokens: int = 64
    heartbeat_interval_s: float = 1.0
    duration_s: float = 30.0
    batch_cap: int | None = None  # batch held to this many in flight by the client itself
    # Batch requests still running this long after the phase are cut (they end after it, so
    # they could not count): bounds the time a backlog of queued batch takes to drain.
    drain_s: float | None = None
    # Each chat turn a new message, as people type (True), or the same message every turn,
    # which an engine's prompt cache answers without any prefill (False).
    fresh_prompts: bool = False
    # Sets this run's messages apart from earlier runs' (which the engine may still cache).
    salt: str = field(default_factory=lambda: secrets.token_hex(2))
    ttft: list[float] = field(default_factory=list)
    ttft_started: list[float] = field(default_factory=list)  # when each of those began
    remote_upstream: str = "m4"  # the remote pool's upstream, as x-lanegate-upstream names it
    first_remote_s: float | None = None  # when a batch answer first came from the remote pool
    batch_done: int = 0
    # Completion tokens of every batch answer, those ending after the deadline included: the
    # same window as the gateway's counters read when the phase is over.
    batch_generated_tokens: int = 0
    batch_cut: int = 0  # cut after the drain (drain_s)
    heartbeats: int = 0
    errors: int = 0

    def chat_text(self, user: int, turn: int) -> str:
        if not self.fresh_prompts:
            return f"User {user}: write a haiku about the sea."
        topic = TOPICS[turn % len(TOPICS)]
        return f"User {user}, turn {turn} of {self.salt}: write a haiku about {topic}."

    def body(self, text: str, tokens: int, stream: bool) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "stream": stream,
                "max_tokens": tokens,
                "temperature": 0,
                "messages": [{"role": "user", "content": text}],
            }
        ).encode()


async def chats(
    http: aiohttp.ClientSession, url: str, load: MixedLoad, count: int, pause_s: float, user: int
) -> list[float]:
    """`count` chats of `user`, one after another; the TTFT of each that answered."""
    ttfts = []
    for turn in range(count):
        body = load.body(load.chat_text(user, turn), load.interactive_tokens, True)
        sample = await loadgen.one(http, url, body, True)
        if sample.status == 200 and sample.ttft is not None:
            ttfts.append(sample.ttft)
        await asyncio.sleep(pause_s)
    return ttfts


async def baseline(base_url: str, load: MixedLoad, samples: int) -> list[float]:
    """Single-stream interactive TTFT with nothing else running."""
    async with loadgen.session(1) as http:
        return await chats(http, base_url + CHAT, load, samples, 0.1, user=9)


async def run_mixed(base_url: str, load: MixedLoad) -> dict[str, Any]:
    deadline = time.perf_counter() + load.duration_s
    url = base_url + CHAT
    async with loadgen.session(64) as http:

        async def interactive(user: int) -> None:
            await asyncio.sleep(user * load.pause_s / 2)  # users are not in lockstep
            turn = 0
            while time.perf_counter() < deadline:
                body = load.body(load.chat_text(user, turn), load.interactive_tokens, True)
                turn += 1
                began = time.perf_counter()
                sample = await loadgen.one(http, url, body, True)
                if sample.status == 200:
                    load.ttft_started.append(began)
                _count(load, sample, lambda s: load.ttft.append(s.ttft))
                await asyncio.sleep(load.pause_s)

        cap = asyncio.Semaphore(load.batch_cap or load.batch_in_flight)

        async def batch(worker: int) -> None:
            body = load.body(f"Summarise document {worker}.", load.batch_tokens, False)
            while time.perf_counter() < deadline:
                left = (
                    None if load.drain_s is None else deadline + load.drain_s - time.perf_counter()
                )
                try:
                    async with asyncio.timeout(left), cap:
                        sample = await loadgen.one(http, url, body, False, {"x-lane": "batch"})
                except TimeoutError:  # past the drain: it could not have counted anyway
                    load.batch_cut += 1
                    return
                load.batch_generated_tokens += sample.completion_tokens or 0
                if sample.upstream == load.remote_upstream and load.first_remote_s is None:
                    load.first_remote_s = time.perf_counter()
                if time.perf_counter() < deadline:
                    _count(load, sample, lambda s: setattr(load, "batch_done", load.batch_done + 1))

        async def one_heartbeat(body: bytes) -> None:
            sample = await loadgen.one(http, url, body, False, {"user-agent": "agent-heartbeat/1"})
            _count(load, sample, lambda s: setattr(load, "heartbeats", load.heartbeats + 1))

        async def heartbeat() -> None:
            body = load.body("ping", 4, False)
            tasks = []
            while time.perf_counter() < deadline:
                tasks.append(asyncio.ensure_future(one_heartbeat(body)))
                await asyncio.sleep(load.heartbeat_interval_s)
            await asyncio.gather(*tasks)

        started = time.perf_counter()
        await asyncio.gather(
            *(interactive(u) for u in range(load.interactive_users)),
            *(batch(w) for w in range(load.batch_in_flight)),
            heartbeat(),
            return_exceptions=False,
        )
        wall = time.perf_counter() - started
    result: dict[str, Any] = {
        "interactive_samples": len(load.ttft),
        "interactive_ttft_p50_ms": percentile(load.ttft, 0.5) * 1000,
        "interactive_ttft_p95_ms": percentile(load.ttft, 0.95) * 1000,
        "batch_completed": load.batch_done,
        "batch_per_s": load.batch_done / load.duration_s,
        "heartbeats": load.heartbeats,
        "errors": load.errors,
        "wall_s": wall,
    }
    # Batch starts with the phase: the chats that began SETTLE_S or more after it.
    settled = started_after(load.ttft, load.ttft_started, started + SETTLE_S)
    result["settled_samples"] = len(settled)
    result["settled_ttft_p95_ms"] = percentile(settled, 0.95) * 1000 if settled else None
    result["batch_generated_tokens"] = load.batch_generated_tokens
    result["batch_cut_after_drain"] = load.batch_cut
    if load.first_remote_s is not None:  # offload moved batch: chat from that moment on
        after = started_after(load.ttft, load.ttft_started, load.first_remote_s)
        result["moved_after_s"] = load.first_remote_s - started
        result["after_move_samples"] = len(after)
        if after:
            result["after_move_ttft_p50_ms"] = percentile(after, 0.5) * 1000
            result["after_move_ttft_p95_ms"] = percentile(after, 0.95) * 1000
    return result


def _count(load: MixedLoad, sample: loadgen.Sample, on_ok: Any) -> None:
    if sample.status == 200:
        on_ok(sample)
    else:
        load.errors += 1


def demo_lanes() -> str:
    """The shipped demo policy's `lanes` and `classify` sections, as YAML text."""
    text = DEMO_POLICY.read_text()
    end = text.find("\noffload:")
    return text[text.index("\nlanes:") : end if end >= 0 else len(text)]


def demo_lanes_policy(
    path: Path, upstream_url: str, slots: int, kind: str, extra: str = ""
) -> Path:
    """The shipped demo policy's lanes and rules, in front of one upstream of `slots` slots
    (plus `extra` YAML: more upstreams, an offload section)."""
    signals = f", signals_url: '{upstream_url}/sim/signals'" if extra else ""
    upstream = (
        f"  - {{name: bench, pool: local, kind: {kind}, base_url: '{upstream_url}', "
        f"max_concurrency: {slots}{signals}}}\n"
    )
    path.write_text("version: 1\nupstreams:\n" + upstream + extra + demo_lanes())
    return path


def fresh(load: MixedLoad, **overrides: Any) -> MixedLoad:
    """The same load, with empty counters (and `overrides`, e.g. no batch at all)."""
    names = (
        "model",
        "interactive_users",
        "interactive_tokens",
        "pause_s",
        "batch_in_flight",
        "batch_tokens",
        "heartbeat_interval_s",
        "duration_s",
        "fresh_prompts",
        "remote_upstream",
        "drain_s",
    )
    return MixedLoad(**({name: getattr(load, name) for name in names} | overrides))


def start_gateway(policy: Path, workdir: Path) -> Service:
    # Default logging (info): the JSON access log line per request is part of the cost measured.
    args = ["serve", "--policy", str(policy), "--host", "127.0.0.1"]
    return start_lanegate("gw-mixed", args, ready_path="/healthz", log_dir=workdir)


async def compare(
    upstream_url: str,
    gateway_url: str,
    load: MixedLoad,
    baseline_samples: int,
    hand_cap: int | None = None,
) -> dict[str, Any]:
    """Baseline, then direct and through the gateway, in one run; with `hand_cap`, also
    direct with batch held to that many in flight by the client: the isolation that capping
    alone can buy on this engine, the reference for what a gateway can reach."""
    base = await baseline(upstream_url, load, baseline_samples)
    base_p95 = percentile(base, 0.95)
    result: dict[str, Any] = {
        "baseline_samples": len(base),
        "baseline_ttft_p50_ms": percentile(base, 0.5) * 1000,
        "baseline_ttft_p95_ms": base_p95 * 1000,
    }
    sides = [("direct", upstream_url, None), ("gateway", gateway_url, None)]
    if hand_cap is not None:
        sides.append(("direct_hand_capped", upstream_url, hand_cap))
    for side, url, cap in sides:
        data = await run_mixed(url, fresh(load, batch_cap=cap))
        data["interactive_p95_ratio"] = data["interactive_ttft_p95_ms"] / (base_p95 * 1000)
        data["interactive_p50_ratio"] = data["interactive_ttft_p50_ms"] / (base_p95 * 1000)
        result[side] = data
        await asyncio.sleep(2)  # let the upstream drain between phases
    result["batch_throughput_ratio"] = (
        result["gateway"]["batch_per_s"] / result["direct"]["batch_per_s"]
        if result["direct"]["batch_per_s"]
        else float("nan")
    )
    return result


__all__ = ["MixedLoad", "aiohttp", "compare", "demo_lanes_policy", "start_gateway"]
