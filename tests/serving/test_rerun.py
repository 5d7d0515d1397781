"""`send_rerunning` with a real lane gate and exchange: a preemption's cancel that lands where
the relay cannot turn it into `Preempted` (the `await response.aclose()` of its `finally`,
which httpx's client does after a retryable 502/503, with `exchange.preemptible` still set)
is still a re-run, never a bare cancellation that skips the flow's settle and record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.lanes.gate import LaneGate, Ticket
from gateway.observe.measurement import RequestMeasurement, RequestRecord
from gateway.policy.spec import LaneSpec, Policy, Timeouts, UpstreamKind, UpstreamSpec
from gateway.serving.exchange import Exchange
from gateway.serving.rerun import Reruns, send_rerunning
from tests.support.clock import FakeClock

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 1, Timeouts())
CHAT = LaneSpec("chat", priority=100, max_concurrency=1)
BATCH = LaneSpec("batch", priority=10, max_concurrency=1, preemptible=True)
POLICY = Policy("test", (UPSTREAM,), (CHAT, BATCH), (), default_lane="chat")


@dataclass
class Holder:
    ticket: Ticket


@dataclass
class Sent:
    exchange: Exchange
    upstream: str = "u"
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)


async def test_a_cut_landing_outside_the_relays_handler_is_still_a_rerun() -> None:
    clock = FakeClock()
    gate = LaneGate(POLICY, capacity=1, clock=clock)
    runs: list[int] = []
    upstream = asyncio.Event()

    async def send_once() -> RequestRecord:
        runs.append(len(runs) + 1)
        upstream.set()
        if len(runs) == 1:  # an await whose cancellation nobody turns into `Preempted`
            await asyncio.sleep(3600)
        return RequestMeasurement(None, 0.0).finish(clock(), status=200)

    async def handler() -> RequestRecord:
        exchange = Exchange("r1", clock(), clock)
        holder = Holder(await gate.acquire(BATCH, None))
        try:
            return await send_rerunning(send_once, holder, Sent(exchange), True, clock, Reruns())
        finally:  # as the flow does
            holder.ticket.release()

    task = asyncio.ensure_future(handler())
    await asyncio.wait_for(upstream.wait(), 1)  # on its way upstream, preemptible
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))  # it cuts the batch request
    await asyncio.wait({task, chat}, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    assert not task.done(), "the cut ended the request instead of running it again"
    (await asyncio.wait_for(chat, 1)).release()
    record = await asyncio.wait_for(task, 1)
    assert record.status == 200 and runs == [1, 2]
    assert gate.in_flight == 0 and not gate.tickets
