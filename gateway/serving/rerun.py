"""Re-running a preempted request: give the slot up, wait again in place, send again.

The flow sends an inference request through `send_rerunning`. While the request may be
preempted (its lane is `preemptible`, it is not streamed, it was preempted fewer than
`MAX_RERUNS` times) its ticket carries the exchange's `preempt` as its `interrupt`, so the
gate's preemption round can take its slot back (gateway.lanes.preemption). The relay answers a
preemption with `Preempted` before anything reached the client; here the ticket is released
(the waiting chat takes the slot at once), the request waits in its lane again at its first
place (`LaneGate.requeue`), and is sent again. Its budget reservation stays held throughout and
is settled once, by the flow, with the final run's usage. A client that leaves while it waits
again ends as any queued request does (499; the flow releases what it holds).

One log line per preemption (lane, upstream, request id, seconds thrown away), never a prompt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import Preempted
from gateway.lanes.preempt import MAX_RERUNS, thrown_tokens
from gateway.lanes.preemption import Ticket
from gateway.observe.measurement import RequestRecord
from gateway.serving.exchange import Exchange

log = logging.getLogger("lanegate.preempt")


class Holder(Protocol):
    """Whatever holds the request's ticket (the flow's `Admitted`): a re-run replaces it."""

    ticket: Ticket


class Sent(Protocol):
    """The request on its way (the flow's `Sending`): its exchange, its latest upstream, the
    headers lanegate adds to its answer."""

    exchange: Exchange
    upstream: str
    extra: list[tuple[bytes, bytes]]


QUEUE_HEADER = b"x-lanegate-queue-ms"


def queue_header(ticket: Ticket) -> tuple[bytes, bytes]:
    """How long the request waited for a slot (every wait of a re-run, not its cut runs)."""
    return QUEUE_HEADER, f"{ticket.queue_s * 1000:.1f}".encode()


@dataclass(slots=True)
class Reruns:
    """What preemption cost one request."""

    preemptions: int = 0
    thrown_s: float = 0.0  # upstream seconds of the runs thrown away
    final_s: float = 0.0  # upstream seconds of the run that answered
    max_tokens: int = 0  # the completion tokens one run may generate
    counted: int = 0  # tokens the cut runs that were streamed upstream had sent (counted)
    counted_runs: int = 0
    counted_s: float = 0.0  # their upstream seconds

    def tokens(self, completion_tokens: int | None) -> int:
        """The completion tokens the preempted runs threw away: counted for runs streamed
        upstream (serving.assemble), estimated for the others (see `preempt`)."""
        runs, seconds = self.preemptions - self.counted_runs, self.thrown_s - self.counted_s
        estimate = thrown_tokens(completion_tokens, seconds, self.final_s, runs, self.max_tokens)
        return self.counted + estimate

    def cut(self, seconds: float, counted: int | None) -> None:
        """One run preempted after `seconds` upstream, having sent `counted` tokens if known."""
        self.preemptions += 1
        self.thrown_s += seconds
        if counted is not None:
            self.counted += counted
            self.counted_runs += 1
            self.counted_s += seconds


async def send_rerunning(
    send_once: Callable[[], Awaitable[RequestRecord]],
    holder: Holder,
    sent: Sent,
    preemptible: bool,
    clock: Callable[[], float],
    reruns: Reruns,
) -> RequestRecord:
    exchange = sent.exchange
    while True:
        ticket = holder.ticket
        allowed = preemptible and ticket.preemptions < MAX_RERUNS
        exchange.preemptible = allowed
        ticket.interrupt = exchange.preempt if allowed else None
        started = clock()
        try:
            record = await _preemptible(send_once, exchange)
        except Preempted as cut:
            thrown = clock() - started
            reruns.cut(thrown, cut.counted)
            await _wait_again(holder, sent, thrown, reruns.preemptions)
            continue
        finally:
            exchange.preemptible = False
            ticket.interrupt = None
        reruns.final_s = clock() - started
        return record


async def _preemptible(
    send_once: Callable[[], Awaitable[RequestRecord]], exchange: Exchange
) -> RequestRecord:
    """One run; a preemption's cancel that lands where the relay does not turn it into
    `Preempted` (an await in its `finally`, such as httpx's `aclose` after a retryable 503,
    before `preemptible` was cleared) is one all the same: never a bare cancellation, which
    would skip the flow's settling of the budget and its record."""
    try:
        return await send_once()
    except asyncio.CancelledError:
        if exchange.task is None or not exchange.take_preemption():
            raise
        exchange.task.uncancel()
        raise Preempted("preempted") from None


async def _wait_again(holder: Holder, sent: Sent, thrown_s: float, preemptions: int) -> None:
    """Log the cut, give the slot to the chat, wait in place again (a new ticket)."""
    ticket, exchange = holder.ticket, sent.exchange
    log.info(
        "preempted request %s of lane %s on %s after %.3f s upstream (preemption %d of "
        "at most %d); it waits for a slot again",
        exchange.request_id,
        ticket.lane.name,
        sent.upstream,
        thrown_s,
        preemptions,
        MAX_RERUNS,
    )
    exchange.first_byte_at = None  # the next run gets its own first-byte deadline
    ticket.release()
    holder.ticket = await ticket.gate.requeue(ticket)
    sent.extra[:] = [
        queue_header(holder.ticket) if name == QUEUE_HEADER else (name, value)
        for name, value in sent.extra
    ]
