"""S8: what sharing lanes through Redis costs per request, on loopback.

Two gateways with the same policy (one lane with a token budget, so both the lease and the
budget scripts run) in front of the same fast responder: one keeps its limits in memory (and
SQLite), the other in a local `redis-server`. Measured interleaved, round by round:
- one request at a time: TTFT p50/p99 through each, and the difference (the admission cost:
  budget reserve + lease acquire before the upstream call; release and settle run after);
- 16 concurrent streams: TTFT p50/p99 and req/s through each;
- the admission alone, in this process: budget reserve + slot acquire with the real services,
  in memory vs through Redis (no HTTP, no other process's scheduling in the figure);
- the hand-off: a slot freed on one gateway, a waiter on another: time from the release to the
  waiter's admission (the "freed" pub/sub message), measured in this process with the real
  gates and leases.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from gateway.lanes.budget_store import Budgets
from gateway.lanes.gate import LaneGate
from gateway.policy.spec import Budget, LaneSpec, Policy, Timeouts, UpstreamKind, UpstreamSpec
from gateway.shared.budgets import SharedBudgets
from gateway.shared.state import SharedState
from tests.bench import harness, loadgen
from tests.bench.harness import median, percentile
from tests.support.processes import Service, start_lanegate
from tests.support.redis_server import RedisServer

CHAT = "/v1/chat/completions"
BODY = json.dumps(
    {
        "model": "bench",
        "stream": True,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()


def _policy(path: Path, upstream: str) -> Path:
    path.write_text(f"""
upstreams:
  - {{name: bench, kind: openai, base_url: '{upstream}', max_concurrency: 64}}
lanes:
  - {{name: metered, priority: 10, max_concurrency: 64, tokens_per_day: 1000000000}}
classify: {{default_lane: metered}}
""")
    return path


async def s8_shared(workdir: Path, responder: harness.Responder, quick: bool, rounds: int) -> Any:
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed (make system-deps)"}
    server = RedisServer(workdir).start()
    policy = _policy(workdir / "s8.yaml", responder.url)
    args = ["serve", "--policy", str(policy), "--host", "127.0.0.1"]
    env = {"LANEGATE_ACCESS_LOG": "true"}
    sides: dict[str, Service] = {}
    try:
        sides["local"] = start_lanegate(
            "s8-local", args, ready_path="/healthz", log_dir=workdir, env=env
        )
        redis_env = {**env, "LANEGATE_REDIS_URL": server.url, "LANEGATE_REDIS_PREFIX": "s8"}
        sides["redis"] = start_lanegate(
            "s8-redis", args, ready_path="/healthz", log_dir=workdir, env=redis_env
        )
        result = await _requests(sides, quick, rounds)
        result["handoff"] = await _handoff(server.url, 50 if quick else 200)
        result["admission"] = await _admission(server.url, 1000 if quick else 5000)
        return result
    finally:
        for service in sides.values():
            service.stop()
        server.stop()


async def _requests(sides: dict[str, Service], quick: bool, rounds: int) -> dict[str, Any]:
    count = 60 if quick else 200
    seconds = 1.5 if quick else 3.0
    one: list[dict[str, Any]] = []
    many: list[dict[str, Any]] = []
    meter = harness.CpuMeter({name: service.process.pid for name, service in sides.items()})
    async with loadgen.session(16) as http:
        for service in sides.values():  # warm-up: connections, scripts loaded
            await loadgen.sequential(http, service.url + CHAT, BODY, True, 10)
        for index in range(rounds):
            entry: dict[str, Any] = {}
            crowd: dict[str, Any] = {}
            for name, service in sides.items():
                with meter.measure() as cpu:
                    started = time.perf_counter()
                    samples = await loadgen.sequential(http, service.url + CHAT, BODY, True, count)
                    entry[name] = harness.summarize(samples, time.perf_counter() - started)
                entry[name]["cpu_ms_per_request"] = cpu[f"{name}_cpu_s"] / count * 1000
                with meter.measure() as cpu:
                    samples, wall = await loadgen.closed_loop(
                        http, service.url + CHAT, BODY, True, 16, duration=seconds
                    )
                    crowd[name] = harness.summarize(samples, wall)
                crowd[name]["cpu_ms_per_request"] = (
                    cpu[f"{name}_cpu_s"] / max(1, crowd[name]["requests"]) * 1000
                )
            one.append(entry)
            many.append(crowd)
            print(f"  S8 round {index + 1}/{rounds}", flush=True)
    return {
        "one_at_a_time": one,
        "concurrent_16": many,
        **_added("", one),
        **_added("concurrent_", many),
        "added_cpu_ms_per_request": median(
            [r["redis"]["cpu_ms_per_request"] - r["local"]["cpu_ms_per_request"] for r in one]
        ),
        "redis_rps_share": median(
            [r["redis"]["req_per_s"] / r["local"]["req_per_s"] for r in many]
        ),
    }


def _added(prefix: str, rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {
        f"{prefix}added_ttft_p50_ms": median(
            [r["redis"]["ttft_p50_ms"] - r["local"]["ttft_p50_ms"] for r in rounds]
        ),
        f"{prefix}added_ttft_p99_ms": median(
            [r["redis"]["ttft_p99_ms"] - r["local"]["ttft_p99_ms"] for r in rounds]
        ),
        f"{prefix}local_ttft_p50_ms": median([r["local"]["ttft_p50_ms"] for r in rounds]),
    }


async def _handoff(url: str, count: int) -> dict[str, float]:
    """A lane of cap 1 on two gates: release on one, how long until the other's waiter runs."""
    upstream = UpstreamSpec("u", "local", UpstreamKind.OPENAI, "http://x:1", 4, Timeouts())
    lane = LaneSpec("solo", 10, max_concurrency=1, queue_timeout_s=30)
    policy = Policy("s8", (upstream,), (lane,), default_lane="solo")
    prefix = f"s8-{uuid.uuid4().hex[:6]}"
    states = [SharedState(url, lease_ttl_s=10, prefix=prefix) for _ in range(2)]
    for state in states:
        await state.start()
    gates = [LaneGate(policy, 4, time.monotonic, state) for state in states]
    waits: list[float] = []
    try:
        for _ in range(count):
            held = await gates[0].acquire(lane, None)
            waiter = asyncio.ensure_future(gates[1].acquire(lane, None))
            await asyncio.sleep(0.02)  # the waiter lost the lease and is queued
            released = time.perf_counter()
            held.release()
            ticket = await waiter
            waits.append(time.perf_counter() - released)
            ticket.release()
            await asyncio.sleep(0.01)  # let the release reach Redis before the next round
    finally:
        for state in states:
            await state.stop()
    return {
        "handoff_p50_ms": percentile(waits, 0.5) * 1000,
        "handoff_p99_ms": percentile(waits, 0.99) * 1000,
        "samples": len(waits),
    }


async def _admission(url: str, count: int) -> dict[str, float]:
    """Budget reserve + slot acquire, in memory vs through Redis, alternating request by request;
    release and settle follow each (off the measured path, as in the gateway)."""
    upstream = UpstreamSpec("u", "local", UpstreamKind.OPENAI, "http://x:1", 64, Timeouts())
    lane = LaneSpec("metered", 10, 64, budget=Budget(tokens_per_day=10**12))
    policy = Policy("s8", (upstream,), (lane,), default_lane="metered")
    state = SharedState(url, lease_ttl_s=10, prefix=f"s8-{uuid.uuid4().hex[:6]}")
    await state.start()
    local_budgets = Budgets(None)
    local_gate = LaneGate(policy, 64, time.monotonic)
    shared_budgets = SharedBudgets(state, Budgets(None))
    shared_gate = LaneGate(policy, 64, time.monotonic, state)
    local: list[float] = []
    shared: list[float] = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            reservation = local_budgets.reserve(lane, None, 100)
            ticket = await local_gate.acquire(lane, None)
            local.append(time.perf_counter() - started)
            ticket.release()
            local_budgets.settle(reservation, 90)  # type: ignore[arg-type]
            started = time.perf_counter()
            held = await shared_budgets.reserve(lane, None, 100)
            ticket = await shared_gate.acquire(lane, None)
            shared.append(time.perf_counter() - started)
            ticket.release()
            shared_budgets.settle(held, 90)  # type: ignore[arg-type]
            await asyncio.sleep(0.0005)  # let the settle and release reach Redis
    finally:
        await state.stop()
    return {
        "local_p50_ms": percentile(local, 0.5) * 1000,
        "local_p99_ms": percentile(local, 0.99) * 1000,
        "redis_p50_ms": percentile(shared, 0.5) * 1000,
        "redis_p99_ms": percentile(shared, 0.99) * 1000,
        "samples": len(shared),
    }
