"""The async lane gate under random arrivals, cancellations and timeouts: no slot ever leaks.

The pure admission rules are property-tested in test_admission.py; this drives the real gate
(asyncio futures, wait_for timeouts, cancellation) and checks the shell keeps its promises:
caps are never exceeded, and when everything has finished nothing is in flight or queued.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RateLimited
from gateway.lanes.gate import LaneGate
from gateway.policy.spec import ClientSpec, LaneSpec, Policy, Timeouts, UpstreamKind, UpstreamSpec

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 4, Timeouts())
LANES = (
    LaneSpec(
        "interactive",
        priority=100,
        max_concurrency=4,
        reserved=1,
        max_queue=50,
        queue_timeout_s=0.05,
    ),
    LaneSpec("batch", priority=10, max_concurrency=3, max_queue=5, queue_timeout_s=0.08),
    LaneSpec("heartbeat", priority=50, max_concurrency=1, max_queue=3, queue_timeout_s=0.03),
)
CLIENTS = (ClientSpec("greedy", "env:X", ("batch",), max_concurrency=1),)
POLICY = Policy("test", (UPSTREAM,), LANES, CLIENTS, default_lane="interactive")


def _gate() -> LaneGate:
    return LaneGate(POLICY, capacity=4, clock=time.monotonic)


async def test_admits_at_once_when_free_and_releases_once() -> None:
    gate = _gate()
    ticket = await gate.acquire(LANES[0], None)
    assert gate.in_flight == 1 and ticket.queue_s == 0
    ticket.release()
    ticket.release()  # idempotent: a cleanup path running twice cannot free twice
    assert gate.in_flight == 0


async def test_retry_after_counts_the_lanes_own_slots() -> None:
    """Issue 18: a lane at its cap said `Retry-After: 1` while other lanes' slots were free,
    however long its own requests took."""
    now = [0.0]
    gate = LaneGate(POLICY, capacity=4, clock=lambda: now[0])
    heartbeat = LANES[2]  # one slot, three queued
    first = await gate.acquire(heartbeat, None)
    now[0] = 6.0
    first.release()  # the lane's requests take 6 s
    held = await gate.acquire(heartbeat, None)
    waiting = [asyncio.ensure_future(gate.acquire(heartbeat, None)) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as caught:
        await gate.acquire(heartbeat, None)
    assert caught.value.code == "lane_queue_full"
    assert int(caught.value.headers["retry-after"]) >= 6 * 4  # four ahead, one slot, 6 s each
    held.release()
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_reserved_slot_is_kept_for_interactive() -> None:
    gate = _gate()
    batch = [await gate.acquire(LANES[1], None) for _ in range(3)]
    with pytest.raises(RateLimited) as caught:  # heartbeat may not take the reserved slot
        await gate.acquire(LANES[2], None)
    assert caught.value.code == "lane_queue_timeout"
    interactive = await asyncio.wait_for(gate.acquire(LANES[0], None), 0.01)
    for ticket in [*batch, interactive]:
        ticket.release()
    assert gate.in_flight == 0 and not any(gate.queues.values())


async def test_full_queue_is_429_with_retry_after() -> None:
    gate = _gate()
    held = [await gate.acquire(LANES[1], None) for _ in range(3)]
    waiting = [asyncio.ensure_future(gate.acquire(LANES[1], None)) for _ in range(5)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited) as caught:
        await gate.acquire(LANES[1], None)
    assert caught.value.code == "lane_queue_full"
    assert 1 <= int(caught.value.headers["retry-after"]) <= 60
    for ticket in held:
        ticket.release()
    for result in await asyncio.gather(*waiting, return_exceptions=True):
        if not isinstance(result, BaseException):
            result.release()
    assert gate.in_flight == 0 and not any(gate.queues.values())


async def test_interactive_goes_before_earlier_batch() -> None:
    gate = _gate()
    held = [await gate.acquire(LANES[0], None) for _ in range(4)]
    batch = asyncio.ensure_future(gate.acquire(LANES[1], None))
    await asyncio.sleep(0)
    interactive = asyncio.ensure_future(gate.acquire(LANES[0], None))
    await asyncio.sleep(0)
    held.pop().release()
    first = await asyncio.wait_for(interactive, 0.01)
    assert not batch.done()
    first.release()
    (await batch).release()
    for ticket in held:
        ticket.release()
    assert gate.in_flight == 0


async def _random_traffic(seed: int, requests: int) -> None:
    rng = random.Random(seed)
    gate = _gate()
    peak: dict[str, int] = {}

    async def request() -> None:
        await asyncio.sleep(rng.random() * 0.02)
        lane = rng.choice(LANES)
        client = CLIENTS[0] if lane.name == "batch" and rng.random() < 0.5 else None
        try:
            ticket = await gate.acquire(lane, client)
        except RateLimited:
            return
        try:
            for name, count in gate.by_lane.items():
                peak[name] = max(peak.get(name, 0), count)
            assert gate.in_flight <= gate.capacity
            assert gate.by_client.get("greedy", 0) <= 1
            await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 0.1:
                raise RuntimeError("upstream failed")
        finally:
            ticket.release()

    tasks = [asyncio.ensure_future(request()) for _ in range(requests)]
    await asyncio.sleep(0.01)
    for task in rng.sample(tasks, k=requests // 5):  # clients that leave, queued or running
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert gate.in_flight == 0, gate.by_lane
    assert not any(gate.queues.values())
    assert not gate._futures
    for lane in LANES:
        assert peak.get(lane.name, 0) <= lane.max_concurrency


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(5, 80))
def test_no_slot_leaks_under_random_traffic(seed: int, requests: int) -> None:
    asyncio.run(_random_traffic(seed, requests))
