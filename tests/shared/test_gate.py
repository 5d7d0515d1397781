"""Two lane gates (two "gateways" in one process) sharing one real Redis: caps hold across both.

The gates, the leases, the scripts and the freed-slot subscription are the real ones; only the
two gateways share a process here (tests/shared/test_state.py runs them as real processes).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.lanes.budget_store import Budgets
from gateway.lanes.budgets import Refusal
from gateway.lanes.gate import LaneGate
from gateway.policy.spec import (
    Budget,
    ClientSpec,
    LaneSpec,
    Policy,
    Timeouts,
    UpstreamKind,
    UpstreamSpec,
)
from gateway.shared.budgets import SharedBudgets, SharedReservation
from gateway.shared.state import SharedState
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 8, Timeouts())
LANES = (
    LaneSpec("interactive", priority=100, max_concurrency=3, reserved=1, queue_timeout_s=20),
    LaneSpec("batch", priority=10, max_concurrency=2, queue_timeout_s=20, on_redis_down="closed"),
)
CLIENTS = (ClientSpec("greedy", "env:X", ("interactive", "batch"), max_concurrency=1),)
POLICY = Policy("test", (UPSTREAM,), LANES, CLIENTS, default_lane="interactive")


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[list[SharedState]]:  # noqa: F811
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    states = [SharedState(redis_server.url, lease_ttl_s=5, prefix=prefix) for _ in range(2)]
    for state in states:
        await state.start()
    yield states
    for state in states:
        await state.stop()


async def _zcard(state: SharedState, key: str) -> int:
    return int(await state.client.zcard(key))


async def _run_load(gates: list[LaneGate], lane: LaneSpec, client: ClientSpec | None) -> int:
    """40 requests spread over both gates; returns the most ever in flight at once."""
    in_flight, most = 0, 0

    async def one(gate: LaneGate) -> None:
        nonlocal in_flight, most
        ticket = await gate.acquire(lane, client)
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(random.uniform(0.005, 0.03))
        finally:
            in_flight -= 1
            ticket.release()

    await asyncio.gather(*(one(gates[i % 2]) for i in range(40)))
    return most


async def test_lane_cap_holds_across_two_gates(pair: list[SharedState]) -> None:
    gates = [LaneGate(POLICY, 8, time.monotonic, state) for state in pair]
    most = await _run_load(gates, LANES[1], None)
    assert most == LANES[1].max_concurrency  # reached, never passed (each alone would allow 2)
    await _settled(pair[0], pair[0].keys.lane_leases("batch"))


async def test_client_cap_holds_across_two_gates(pair: list[SharedState]) -> None:
    gates = [LaneGate(POLICY, 8, time.monotonic, state) for state in pair]
    most = await _run_load(gates, LANES[0], CLIENTS[0])
    assert most == 1
    await _settled(pair[0], pair[0].keys.client_leases("greedy"))


async def test_reserved_slot_is_kept_across_gates(pair: list[SharedState]) -> None:
    tight = Policy(
        "test",
        (UPSTREAM,),
        (LANES[0], LaneSpec("batch", priority=10, max_concurrency=3, queue_timeout_s=0.3)),
        default_lane="interactive",
    )
    gates = [LaneGate(tight, 3, time.monotonic, state) for state in pair]
    batch = tight.lanes[1]
    held = [await gates[0].acquire(batch, None), await gates[1].acquire(batch, None)]
    # The pool has 3 slots and interactive reserves 1: batch on either gate must wait...
    with pytest.raises(RateLimited):
        await gates[1].acquire(batch, None)
    # ... while interactive, on the other gate, gets the reserved slot at once.
    ticket = await gates[0].acquire(tight.lanes[0], None)
    assert ticket.lease is not None
    for t in [*held, ticket]:
        t.release()


async def test_waiter_on_one_gate_gets_a_slot_freed_on_the_other(pair: list[SharedState]) -> None:
    gates = [LaneGate(POLICY, 8, time.monotonic, state) for state in pair]
    batch = LANES[1]
    held = [await gates[0].acquire(batch, None) for _ in range(2)]
    waiter = asyncio.ensure_future(gates[1].acquire(batch, None))
    await asyncio.sleep(0.1)
    assert not waiter.done() and gates[1].queue_depth("batch") == 1
    held[0].release()
    ticket = await asyncio.wait_for(waiter, 10)
    assert ticket.lease is not None and gates[1].in_flight == 1
    for t in (held[1], ticket):
        t.release()
    await _settled(pair[0], pair[0].keys.lane_leases("batch"))


async def test_without_redis_open_lanes_run_locally_and_closed_lanes_refuse() -> None:
    state = SharedState(f"redis://127.0.0.1:{free_port()}/0", lease_ttl_s=5, prefix="down")
    await state.start()
    try:
        assert state.healthy is False and state.status()["redis_ok"] is False
        gate = LaneGate(POLICY, 8, time.monotonic, state)
        ticket = await gate.acquire(LANES[0], None)
        assert state.local_admissions == 1 and gate.in_flight == 1
        with pytest.raises(ServiceUnavailable) as caught:
            await gate.acquire(LANES[1], None)
        assert caught.value.code == "shared_state_unavailable"
        assert gate.in_flight == 1 and not any(gate.queues.values())  # nothing leaked
        ticket.release()
        assert gate.in_flight == 0
    finally:
        await state.stop()


async def test_budget_is_never_overspent_across_two_gateways(pair: list[SharedState]) -> None:
    lane = LaneSpec("metered", 10, 4, budget=Budget(tokens_per_day=1000))
    shared = [SharedBudgets(state, Budgets(None)) for state in pair]
    granted = 0
    refusals = []
    for i in range(30):
        result = await shared[i % 2].reserve(lane, None, 150)
        if isinstance(result, Refusal):
            refusals.append(result)
            continue
        assert isinstance(result, SharedReservation)
        granted += 1
        shared[i % 2].settle(result, 120)  # used less than reserved
        await asyncio.sleep(0.01)
    # Both gateways alone would grant 6 + 6 = 12 reservations of 150.
    assert 6 <= granted <= 8 and granted * 120 <= 1000
    assert refusals and all(r.window == "day" and not r.never_fits for r in refusals)


async def _settled(state: SharedState, key: str) -> None:
    """Releases run off the request path: wait (bounded) until they all reached Redis."""
    for _ in range(100):
        if await _zcard(state, key) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} still holds leases")


async def test_settles_during_an_outage_land_after_the_reconnect(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    state = SharedState(server.url, lease_ttl_s=5, prefix="outage")
    await state.start()
    lane = LaneSpec("metered", 10, 4, budget=Budget(tokens_per_day=1000))
    budgets = SharedBudgets(state, Budgets(None))
    try:
        held = await budgets.reserve(lane, None, 300)
        assert isinstance(held, SharedReservation)
        server.stop()
        budgets.settle(held, 250)  # Redis is gone: kept for later
        await _until(lambda: not state.healthy)
        server.start()  # empty: no persistence
        await _until(lambda: state.healthy)
        window = held.windows[0].key
        for _ in range(100):
            if await state.client.hget(window, "settled") is not None:
                break
            await asyncio.sleep(0.02)
        spend = await state.client.hgetall(window)
        assert spend == {b"settled": b"250", b"reserved": b"0"}  # never below zero
    finally:
        await state.stop()
        server.stop()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in 5 s")
