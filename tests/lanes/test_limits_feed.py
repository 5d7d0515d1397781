"""The adaptive limits in the real lane gate: applied at a chat's arrival, shrunk by a slow chat,
opened when chats stop, never starving batch, logged with their reason, kept across a reload.

The decision itself is property-tested in test_limits.py; this drives the shell (the feed) and
the real asyncio gate with a fake clock, except where a loop timer must fire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from gateway.lanes.gate import LaneGate, Ticket
from gateway.lanes.limits_feed import AdaptiveLimits, adaptive_on
from gateway.policy.spec import LaneSpec, Policy, Protection, Timeouts, UpstreamKind, UpstreamSpec

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.LLAMACPP, "http://x:1", 4, Timeouts())
CHAT = LaneSpec("chat", priority=100, max_concurrency=4, max_queue=50, queue_timeout_s=30)
BATCH = LaneSpec("batch", priority=10, max_concurrency=4, max_queue=50, queue_timeout_s=30)
BASE_S = 0.1
PROTECTION = Protection(ttft_ratio=1.3, chat_idle_s=30.0, baseline_ttft_s=BASE_S)
POLICY = Policy("t", (UPSTREAM,), (CHAT, BATCH), default_lane="chat", protection=PROTECTION)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gate(policy: Policy = POLICY, clock: FakeClock | None = None) -> LaneGate:
    adaptive = AdaptiveLimits(policy, policy.upstreams)
    return LaneGate(policy, 4, clock or FakeClock(), adaptive=adaptive)


def _adaptive(gate: LaneGate) -> AdaptiveLimits:
    assert gate.adaptive is not None
    return gate.adaptive


async def _queued(gate: LaneGate, lane: LaneSpec) -> asyncio.Future[Ticket]:
    future = asyncio.ensure_future(gate.acquire(lane, None))
    await asyncio.sleep(0)
    assert not future.done(), "admitted at once, expected to wait"
    return future


def _advance(gate: LaneGate, seconds: float) -> None:
    clock = gate.clock
    assert isinstance(clock, FakeClock)
    clock.now += seconds


def _chat_done(gate: LaneGate, ticket: Ticket, ttft_s: float) -> None:
    """What the recorder tells the limits when a chat finished."""
    ticket.release()
    now = gate.clock()
    _adaptive(gate).observed("chat", "u", ttft_s, now - ticket.enqueued_at, now)


def test_on_only_when_lanes_have_different_priorities() -> None:
    assert adaptive_on(POLICY)
    same = replace(POLICY, lanes=(CHAT, replace(BATCH, priority=100)))
    assert not adaptive_on(same) and not AdaptiveLimits(same, same.upstreams).enabled
    off = replace(POLICY, protection=replace(PROTECTION, enabled=False))
    assert not adaptive_on(off)


async def test_batch_takes_every_slot_while_no_chat_is_active() -> None:
    gate = _gate()
    held = [await gate.acquire(BATCH, None) for _ in range(4)]
    assert gate.by_lane["batch"] == 4
    for ticket in held:
        ticket.release()


async def test_a_chat_arrival_applies_the_protective_limit_before_it_is_admitted() -> None:
    gate = _gate()
    chat = await gate.acquire(CHAT, None)
    limit = _adaptive(gate).limits()["batch"]
    assert limit < 4
    batch = [await gate.acquire(BATCH, None) for _ in range(limit)]
    waiting = await _queued(gate, BATCH)  # held at the limit, though slots are free
    assert gate.in_flight < gate.capacity
    _chat_done(gate, chat, BASE_S)
    for ticket in batch:
        ticket.release()
    (await asyncio.wait_for(waiting, 1)).release()


async def test_a_slow_chat_shrinks_batch_at_once_and_the_change_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = _gate()
    chat = await gate.acquire(CHAT, None)
    before = _adaptive(gate).limits()["batch"]
    batch = [await gate.acquire(BATCH, None) for _ in range(before)]
    _advance(gate, 1.0)
    with caplog.at_level(logging.INFO, logger="lanegate.limits"):
        _chat_done(gate, chat, BASE_S * 5)
    after = _adaptive(gate).limits()["batch"]
    assert after < before
    logged = [r.getMessage() for r in caplog.records if r.name == "lanegate.limits"]
    assert any(f"batch on u {before} -> {after}" in m and "over the target" in m for m in logged)
    reason = _adaptive(gate).status()["upstreams"][0]["reason"]
    assert "over the target 130 ms" in reason
    for ticket in batch:
        ticket.release()


async def test_slow_chats_never_starve_batch() -> None:
    """The attacker's side: a stream of very slow chats (a huge prompt each) drives the limit
    to its floor, never to zero: one batch request still runs. Once those chats are seen to be
    as slow with one batch request as the engine's floor, holding batch there buys them
    nothing; the target says so and the limit may grow again."""
    gate = _gate()
    running = await gate.acquire(BATCH, None)
    lowest = 4
    for _ in range(50):
        chat = await gate.acquire(CHAT, None)
        _advance(gate, 1.0)
        _chat_done(gate, chat, 100.0)
        lowest = min(lowest, _adaptive(gate).limits()["batch"])
    assert lowest == 1
    upstream = _adaptive(gate).status()["upstreams"][0]
    assert upstream["engine_floor_ratio"] == 1000.0
    assert upstream["effective_target_ratio"] == 1100.0
    running.release()
    ticket = await asyncio.wait_for(gate.acquire(BATCH, None), 1)
    ticket.release()


async def test_batch_gets_every_slot_back_when_chats_stop() -> None:
    """A real timer (the one place the gate wakes itself): chat_idle after the last chat, a
    batch request held back by the limit is admitted without any other event."""
    policy = replace(POLICY, protection=replace(PROTECTION, chat_idle_s=0.05))
    gate = LaneGate(policy, 4, time.monotonic, adaptive=AdaptiveLimits(policy, policy.upstreams))
    chat = await gate.acquire(CHAT, None)
    limit = _adaptive(gate).limits()["batch"]
    batch = [await gate.acquire(BATCH, None) for _ in range(limit)]
    waiting = await _queued(gate, BATCH)
    _chat_done(gate, chat, BASE_S)
    (await asyncio.wait_for(waiting, 5)).release()  # liveness bound, not a timing goal
    assert _adaptive(gate).limits()["batch"] == 4
    assert "no chat for 0.05 s" in _adaptive(gate).status()["upstreams"][0]["reason"]
    for ticket in batch:
        ticket.release()


async def test_chats_alone_teach_the_baseline() -> None:
    learned = replace(POLICY, protection=replace(PROTECTION, baseline_ttft_s=None))
    gate = _gate(learned)
    for ttft in (0.05, 0.06, 0.07, 0.08, 0.09):
        chat = await gate.acquire(CHAT, None)
        _advance(gate, 0.5)
        _chat_done(gate, chat, ttft)
    upstream = _adaptive(gate).status()["upstreams"][0]
    assert upstream["baseline_ttft_ms"] == 90.0 and "solo" in upstream["baseline_source"]
    # A chat that ran beside batch does not teach it.
    batch = await gate.acquire(BATCH, None)
    chat = await gate.acquire(CHAT, None)
    _advance(gate, 0.5)
    _chat_done(gate, chat, 0.01)
    batch.release()
    assert _adaptive(gate).status()["upstreams"][0]["baseline_ttft_ms"] == 90.0


async def test_a_reload_keeps_what_was_learned_and_takes_new_bounds() -> None:
    gate = _gate()
    running = await gate.acquire(BATCH, None)
    chat = await gate.acquire(CHAT, None)
    _chat_done(gate, chat, BASE_S * 5)
    running.release()
    shrunk = _adaptive(gate).limits()["batch"]
    capped = replace(POLICY, lanes=(CHAT, replace(BATCH, max_concurrency=3)))
    _adaptive(gate).configure(capped, capped.upstreams)
    gate.reconfigure(capped, 4)
    assert _adaptive(gate).limits()["batch"] == min(shrunk, 3)
    lane = _adaptive(gate).status()["upstreams"][0]["lanes"][0]
    assert lane["bound"] == 3 and lane["protected"] is not None


async def test_an_slo_below_the_engine_floor_is_said_in_status_and_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Chats beside one batch request at x2 of the pinned baseline (the SLO is x1.3): until
    the floor is learned the status says null and the SLO; then the crossing is logged once,
    and the status shows the floor and the effective target."""
    gate = _gate()
    upstream = _adaptive(gate).status()["upstreams"][0]
    assert upstream["engine_floor_ratio"] is None and upstream["effective_target_ratio"] == 1.3
    running = await gate.acquire(BATCH, None)
    with caplog.at_level(logging.INFO, logger="lanegate.limits"):
        for _ in range(12):
            chat = await gate.acquire(CHAT, None)
            _advance(gate, 1.0)
            _chat_done(gate, chat, BASE_S * 2)
    running.release()
    upstream = _adaptive(gate).status()["upstreams"][0]
    assert upstream["engine_floor_ratio"] == 2.0 and upstream["effective_target_ratio"] == 2.2
    logged = [r.getMessage() for r in caplog.records if "adaptive target on u" in r.getMessage()]
    assert len(logged) == 1 and "the SLO x1.3 is below this engine's floor (x2.00" in logged[0]
    assert "below this engine's floor" in upstream["reason"]


@pytest.mark.parametrize(("chat_ratio", "below_limit_held"), [(1.1, False), (2.0, True)])
async def test_early_offload_is_asked_for_batch_that_would_slow_a_chat(
    chat_ratio: float, below_limit_held: bool
) -> None:
    """`holds_back` (what early offload asks): no chat active, never; a chat active and the
    engine's floor unknown, always (any batch beside a chat may cost it more than the SLO);
    once chats are seen within the SLO beside one batch request (x1.1), only at the limit;
    with a floor above the SLO (x2.0), batch below its limit is still held back."""
    gate = _gate()
    adaptive = _adaptive(gate)
    assert not adaptive.holds_back("batch", 0)  # no chat yet
    running = await gate.acquire(BATCH, None)
    first = await gate.acquire(CHAT, None)
    assert adaptive.holds_back("batch", 0)  # a chat is active, the floor unknown
    _advance(gate, 1.0)
    _chat_done(gate, first, BASE_S * chat_ratio)
    for _ in range(11):
        chat = await gate.acquire(CHAT, None)
        _advance(gate, 1.0)
        _chat_done(gate, chat, BASE_S * chat_ratio)
    assert adaptive.status()["upstreams"][0]["engine_floor_ratio"] == chat_ratio
    limit = adaptive.limits()["batch"]
    assert adaptive.holds_back("batch", limit)
    assert adaptive.holds_back("batch", limit - 1) is below_limit_held
    running.release()
