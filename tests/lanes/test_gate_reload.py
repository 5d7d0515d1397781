"""The lane gate across a policy reload and a drain: slots held under the old policy keep
counting, new caps apply to new admissions, removed lanes' waiters are refused, and the
capacity is never oversubscribed while requests of both policies are in flight."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError, RateLimited, ServiceUnavailable
from gateway.lanes.gate import LaneGate, Ticket
from gateway.policy.spec import LaneSpec, Policy, Timeouts, UpstreamKind, UpstreamSpec

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 4, Timeouts())
CHAT = LaneSpec("chat", priority=100, max_concurrency=4, max_queue=50, queue_timeout_s=5)
BATCH = LaneSpec("batch", priority=10, max_concurrency=2, max_queue=50, queue_timeout_s=5)
OLD = Policy("old", (UPSTREAM,), (CHAT, BATCH), default_lane="chat")
EMBED = LaneSpec("embed", priority=50, max_concurrency=2, max_queue=50, queue_timeout_s=5)
NEW = Policy("new", (UPSTREAM,), (replace(CHAT, max_concurrency=1), EMBED), default_lane="chat")


class CheckedGate(LaneGate):
    """The real gate, noting every admission that goes past the current limits (noted rather
    than raised: an admission may happen inside another task's release)."""

    def __init__(self, policy: Policy, capacity: int) -> None:
        self.violations: list[str] = []
        super().__init__(policy, capacity, time.monotonic)

    def _count_names(self, lane: str, client: str | None, delta: int) -> None:
        super()._count_names(lane, client, delta)
        if delta < 0:
            return
        if self.in_flight > self.capacity or self.by_lane[lane] > self.lanes[lane].max_concurrency:
            self.violations.append(f"{lane}: {self.by_lane} capacity {self.capacity}")


def _gate(capacity: int = 4) -> CheckedGate:
    return CheckedGate(OLD, capacity)


async def _queued(gate: LaneGate, lane: LaneSpec) -> asyncio.Future[Ticket]:
    future = asyncio.ensure_future(gate.acquire(lane, None))
    await asyncio.sleep(0)
    assert not future.done()
    return future


async def test_removed_lane_waiters_are_refused_and_its_slots_still_count() -> None:
    gate = _gate(capacity=2)
    held = [await gate.acquire(BATCH, None) for _ in range(2)]
    waiting = await _queued(gate, BATCH)
    gate.reconfigure(NEW, 2)
    with pytest.raises(ServiceUnavailable) as caught:
        await waiting
    assert caught.value.code == "lane_removed" and "policy reload" in caught.value.message
    embed = await _queued(gate, EMBED)  # both slots are still held by the removed lane
    held[0].release()
    (await asyncio.wait_for(embed, 1)).release()
    held[1].release()
    assert gate.in_flight == 0 and "batch" not in gate.by_lane and gate.snapshot()["embed"]


async def test_stale_spec_of_a_removed_lane_is_refused_and_of_a_kept_lane_gets_new_cap() -> None:
    gate = _gate()
    gate.reconfigure(NEW, 4)
    with pytest.raises(ServiceUnavailable):
        await gate.acquire(BATCH, None)  # classified under the old policy, before the swap
    first = await gate.acquire(CHAT, None)  # old spec allowed 4; the new cap is 1
    second = await _queued(gate, CHAT)
    first.release()
    (await asyncio.wait_for(second, 1)).release()


async def test_raised_cap_admits_waiters_at_once() -> None:
    gate = _gate()
    held = [await gate.acquire(BATCH, None) for _ in range(2)]
    waiting = [await _queued(gate, BATCH) for _ in range(2)]
    gate.reconfigure(Policy("wider", (UPSTREAM,), (CHAT, replace(BATCH, max_concurrency=4))), 4)
    admitted = [await asyncio.wait_for(w, 1) for w in waiting]
    assert gate.by_lane["batch"] == 4
    for ticket in held + admitted:
        ticket.release()


async def test_close_refuses_waiters_and_later_arrivals() -> None:
    gate = _gate(capacity=1)
    held = await gate.acquire(CHAT, None)
    waiting = await _queued(gate, CHAT)

    def refuse(lane: str) -> GatewayError:
        return ServiceUnavailable(f"draining ({lane})", code="gateway_draining")

    gate.close(refuse)
    with pytest.raises(ServiceUnavailable, match=r"draining \(chat\)"):
        await waiting
    with pytest.raises(ServiceUnavailable):
        await gate.acquire(BATCH, None)
    held.release()  # in flight goes on and releases normally
    assert gate.in_flight == 0 and not gate._futures


async def _traffic_with_reloads(seed: int, requests: int) -> None:
    rng = random.Random(seed)
    gate = _gate()
    policies = [(OLD, 4), (NEW, 3), (OLD, 2), (NEW, 4)]

    async def request() -> None:
        await asyncio.sleep(rng.random() * 0.02)
        lane = rng.choice((CHAT, BATCH, EMBED))
        try:
            ticket = await gate.acquire(lane, None)
        except (RateLimited, ServiceUnavailable):
            return
        try:
            await asyncio.sleep(rng.random() * 0.01)
        finally:
            ticket.release()

    async def reloads() -> None:
        for _ in range(rng.randint(1, 6)):
            await asyncio.sleep(rng.random() * 0.01)
            gate.reconfigure(*rng.choice(policies))

    tasks = [asyncio.ensure_future(request()) for _ in range(requests)]
    reloading = asyncio.ensure_future(reloads())
    await asyncio.sleep(0.01)
    for task in rng.sample(tasks, k=requests // 5):
        task.cancel()
    await asyncio.gather(*tasks, reloading, return_exceptions=True)
    assert reloading.exception() is None
    assert gate.in_flight == 0 and not any(gate.queues.values()) and not gate._futures
    assert not gate.violations


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(5, 60))
def test_reloads_under_traffic_never_oversubscribe_or_leak(seed: int, requests: int) -> None:
    asyncio.run(_traffic_with_reloads(seed, requests))
