"""The lane gate's preemption shell with a fake clock: a waiting chat interrupts the youngest
preemptible batch ticket, gets its slot once that ticket is released, and the cut request
waits again in its first place; a refused interrupt (its answer started) moves on to the next,
and a ticket at MAX_RERUNS is left alone."""

from __future__ import annotations

import asyncio

from gateway.lanes.gate import LaneGate, Ticket
from gateway.lanes.preempt import MAX_RERUNS
from gateway.policy.spec import LaneSpec, Policy, Timeouts, UpstreamKind, UpstreamSpec
from tests.support.clock import FakeClock

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 2, Timeouts())
CHAT = LaneSpec("chat", priority=100, max_concurrency=2)
BATCH = LaneSpec("batch", priority=10, max_concurrency=2, preemptible=True)
POLICY = Policy("test", (UPSTREAM,), (CHAT, BATCH), (), default_lane="chat")


class Interrupts:
    """Stands in for the exchanges' `preempt`: records whom the gate interrupted."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refuse: set[str] = set()

    def arm(self, ticket: Ticket, name: str) -> None:
        def interrupt() -> bool:
            self.calls.append(name)
            return name not in self.refuse

        ticket.interrupt = interrupt


async def _two_batches(clock: FakeClock, interrupts: Interrupts) -> tuple[LaneGate, list[Ticket]]:
    gate = LaneGate(POLICY, capacity=2, clock=clock)
    tickets = []
    for name in ("old", "young"):
        ticket = await gate.acquire(BATCH, None)
        interrupts.arm(ticket, name)
        tickets.append(ticket)
        clock.advance(1.0)
    return gate, tickets


async def test_a_waiting_chat_cuts_the_youngest_and_goes_first() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    assert interrupts.calls == ["young"] and young.preempting and not old.preempting
    assert not chat.done()  # the slot frees when the cut request gives it back

    gate._pump()  # another round while the cut is on its way: nobody else is cut
    assert interrupts.calls == ["young"]

    young.release()
    again = asyncio.ensure_future(gate.requeue(young))
    chat_ticket = await asyncio.wait_for(chat, 1)
    await asyncio.sleep(0)
    assert not again.done() and gate.queue_depth("batch") == 1  # the chat went first
    chat_ticket.release()
    rerun = await asyncio.wait_for(again, 1)
    assert rerun.preemptions == 1 and rerun.id == young.id  # its first place and waiter
    assert rerun.enqueued_at == young.enqueued_at and not rerun.preempting
    for ticket in (old, rerun):
        ticket.release()
    assert gate.in_flight == 0 and not gate.tickets


async def test_a_refused_interrupt_moves_on_to_the_next() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)
    interrupts.refuse.add("young")  # its answer started: too late
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    assert interrupts.calls == ["young", "old"] and young.interrupt is None
    assert old.preempting
    old.release()
    (await asyncio.wait_for(chat, 1)).release()
    young.release()


async def test_no_preemption_at_max_reruns_or_without_an_interrupt() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)
    old.preemptions = MAX_RERUNS
    young.interrupt = None  # streamed, or not yet on its way upstream
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    assert interrupts.calls == [] and not chat.done()
    old.release()
    (await asyncio.wait_for(chat, 1)).release()
    young.release()
    assert gate.in_flight == 0


async def test_leaving_while_requeued_leaks_no_slot() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    young.release()
    again = asyncio.ensure_future(gate.requeue(young))
    chat_ticket = await asyncio.wait_for(chat, 1)
    await asyncio.sleep(0)
    again.cancel()  # the client left while it waited again
    await asyncio.gather(again, return_exceptions=True)
    for ticket in (old, chat_ticket):
        ticket.release()
    assert gate.in_flight == 0 and gate.queue_depth("batch") == 0 and not gate.tickets


async def test_a_rerun_counts_its_waits_as_queue_time_not_its_cut_run() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)
    clock.advance(5.0)  # young runs upstream for 6 s before the chat comes
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    young.release()
    again = asyncio.ensure_future(gate.requeue(young))
    chat_ticket = await asyncio.wait_for(chat, 1)
    clock.advance(2.0)  # the chat holds the slot for 2 s while young waits again
    chat_ticket.release()
    rerun = await asyncio.wait_for(again, 1)
    # x-lanegate-queue-ms and the ledger's queue_ms: the waits (0 s first, 2 s again); the
    # 6 s upstream are the ledger's preempted_ms, not queue time.
    assert young.queue_s == 0.0 and rerun.queue_s == 2.0
    for ticket in (old, rerun):
        ticket.release()


async def test_a_reload_turning_preemptible_off_protects_running_requests() -> None:
    clock, interrupts = FakeClock(), Interrupts()
    gate, (old, young) = await _two_batches(clock, interrupts)  # armed under preemptible: true
    kept = LaneSpec("batch", priority=10, max_concurrency=2)
    gate.reconfigure(Policy("test", (UPSTREAM,), (CHAT, kept), (), default_lane="chat"), 2)
    chat = asyncio.ensure_future(gate.acquire(CHAT, None))
    await asyncio.sleep(0)
    assert interrupts.calls == [] and not chat.done()  # it waits for a slot to free
    old.release()
    (await asyncio.wait_for(chat, 1)).release()
    young.release()
    assert gate.in_flight == 0 and not gate.tickets
