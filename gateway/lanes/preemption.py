"""Tickets (one admitted request's hold on a slot), and the shell around
`gateway.lanes.preempt`: after each admission round, interrupt its victims.

The lane gate keeps its running tickets and, after every admission round (`LaneGate._pump`),
hands them here with the gate's state. A ticket is a candidate only while the flow has set its
`interrupt` (the exchange's `preempt`: a non-streamed request of a preemptible lane, on its way
upstream, nothing sent to its client yet). Interrupting is synchronous and only cancels the
request's task; its slot frees when the flow handles `Preempted` and releases the ticket, which
runs the next admission round (the chat goes first). An interrupt that comes too late (the
response started) answers False: that ticket is never a candidate again, and the decision is
asked once more without it.

Only the local decision preempts: a gate with slots shared through Redis never does (another
gateway's requests hold slots this one cannot interrupt). Each request is logged by the flow
when it is preempted (`gateway.serving.rerun`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from gateway.lanes import preempt
from gateway.lanes.admission import Waiter
from gateway.lanes.preempt import Running, Situation
from gateway.policy.spec import ClientSpec, LaneSpec


class SlotGate(Protocol):
    """What a ticket needs of its gate (`gate.LaneGate`)."""

    def _release(self, ticket: Ticket) -> None: ...

    async def requeue(self, preempted: Ticket) -> Ticket: ...


@dataclass(eq=False)
class Ticket:
    """One admitted request's hold on a slot; `release()` gives it back (once)."""

    gate: SlotGate
    lane: LaneSpec
    client: ClientSpec | None
    enqueued_at: float
    admitted_at: float
    lease: str | None = None  # the shared lease, when the gate shares slots with other gateways
    released: bool = field(default=False)
    waiter: Waiter | None = None  # its place in its lane's queue, kept for a re-run
    # Set by the flow while the request may be preempted (the exchange's `preempt`); how
    # often it was; interrupted and on its way out.
    interrupt: Callable[[], bool] | None = None
    preemptions: int = 0
    preempting: bool = False
    # A re-run's: when it began to wait again, and what its earlier admissions waited.
    requeued_at: float | None = None
    waited_s: float = 0.0

    @property
    def id(self) -> int:
        return self.waiter.id if self.waiter is not None else id(self)

    @property
    def queue_s(self) -> float:
        """Time spent waiting for a slot: every wait of a re-run, never its cut runs."""
        since = self.enqueued_at if self.requeued_at is None else self.requeued_at
        return self.waited_s + self.admitted_at - since

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.interrupt = None
            self.gate._release(self)


def running(ticket: Ticket) -> Running:
    return Running(
        id=ticket.id,
        lane=ticket.lane.name,
        client=ticket.client.name if ticket.client is not None else None,
        started_at=ticket.admitted_at,
        preemptions=ticket.preemptions,
        preemptible=ticket.interrupt is not None,
        preempting=ticket.preempting,
    )


def preempt_round(tickets: Collection[Ticket], situation: Situation) -> int:
    """Interrupt the decision's victims; the number interrupted. Bounded: each refused
    interrupt takes one ticket out of the candidates for good."""
    interrupted = 0
    for _ in range(len(tickets) + 1):
        by_id = {ticket.id: ticket for ticket in tickets}
        chosen = preempt.victims([running(ticket) for ticket in tickets], situation)
        refused = False
        for ticket_id in chosen:
            ticket = by_id[ticket_id]
            if ticket.interrupt is not None and ticket.interrupt():
                ticket.preempting = True
                interrupted += 1
            else:  # its response started: it can no longer be preempted
                ticket.interrupt = None
                refused = True
        if not refused:
            break
    return interrupted


def enqueue(queue: deque[Waiter], waiter: Waiter) -> None:
    """Append a new waiter; one back from a lost shared lease or a preemption regains its
    place (ids rise with arrival)."""
    if not queue or queue[-1].id < waiter.id:
        queue.append(waiter)
        return
    for index, other in enumerate(queue):
        if other.id > waiter.id:
            queue.insert(index, waiter)
            return
