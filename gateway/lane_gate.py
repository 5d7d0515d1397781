"""The async gate in front of the upstream slots: queues, waits, admits, times out, releases.

Every decision (whom to admit, whether a queue is full, an honest Retry-After) is made by the
pure `admission` module; this shell only keeps the queues and in-flight counts, awaits, and
makes sure each admitted request is released exactly once, on every exit path (success,
upstream error, client disconnect, cancellation, timeout). A leaked slot would starve a lane
until restart, so `Ticket.release` is idempotent and the relay calls it in a `finally`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway import admission
from gateway.admission import Occupancy, Waiter
from gateway.errors import RateLimited
from gateway.policy.spec import ClientSpec, LaneSpec, Policy

Clock = Callable[[], float]


class _QueueTimeout(Exception):
    """Set on a waiter's future when its lane's queue_timeout passes."""


@dataclass(eq=False)
class Ticket:
    """One admitted request's hold on a slot; `release()` gives it back (once)."""

    gate: LaneGate
    lane: LaneSpec
    client: ClientSpec | None
    enqueued_at: float
    admitted_at: float
    released: bool = field(default=False)

    @property
    def queue_s(self) -> float:
        return self.admitted_at - self.enqueued_at

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._release(self)


class LaneGate:
    def __init__(self, policy: Policy, capacity: int, clock: Clock) -> None:
        self.clock = clock
        self.capacity = capacity
        self.lanes: dict[str, LaneSpec] = {lane.name: lane for lane in policy.lanes}
        self.clients: dict[str, ClientSpec] = {c.name: c for c in policy.clients}
        self.aging_s = policy.admission.aging_s
        self.queues: dict[str, deque[Waiter]] = {name: deque() for name in self.lanes}
        self.by_lane: dict[str, int] = dict.fromkeys(self.lanes, 0)
        self.by_client: dict[str, int] = {}
        self._futures: dict[int, asyncio.Future[float]] = {}
        self._ids = itertools.count()
        self._service_s: dict[str, float] = {}  # moving mean of time held, per lane

    # -- what status and metrics read -------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(self.by_lane.values())

    def queue_depth(self, lane: str) -> int:
        return len(self.queues.get(lane, ()))

    # -- the request path ---------------------------------------------------------------------
    async def acquire(self, lane: LaneSpec, client: ClientSpec | None) -> Ticket:
        """Wait for a slot for `lane`; raises RateLimited when the queue is full or times out."""
        now = self.clock()
        client_name = client.name if client else None
        waiter = Waiter(next(self._ids), lane.name, client_name, now)
        if not any(self.queues.values()) and admission.can_admit(
            lane, client, self._occupancy(), self.lanes
        ):
            self._count(waiter, +1)
            return Ticket(self, lane, client, now, now)
        queue = self.queues[lane.name]
        full = admission.check_enqueue(lane, len(queue))
        if full is not None:
            raise self._rate_limited(lane, full, "is full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._futures[waiter.id] = future
        queue.append(waiter)
        self._pump()
        # The timeout is a plain callback, not wait_for: it leaves the queue in the same step
        # that fails the future, so no admission can slip in between.
        timer = loop.call_later(lane.queue_timeout_s, self._expire, waiter)
        try:
            admitted_at = await future
        except _QueueTimeout:
            raise self._rate_limited(lane, "lane_queue_timeout", "waited too long") from None
        except asyncio.CancelledError:
            # The client left while queued, or just as it was admitted: give the slot back.
            if future.done() and not future.cancelled() and future.exception() is None:
                self._count(waiter, -1)
                self._pump()
            else:
                self._forget(waiter)
            raise
        finally:
            timer.cancel()
        return Ticket(self, lane, client, now, admitted_at)

    def _release(self, ticket: Ticket) -> None:
        held = self.clock() - ticket.admitted_at
        mean = self._service_s.get(ticket.lane.name)
        self._service_s[ticket.lane.name] = held if mean is None else 0.9 * mean + 0.1 * held
        self._count_names(ticket.lane.name, ticket.client.name if ticket.client else None, -1)
        self._pump()

    # -- internals ------------------------------------------------------------------------
    def _pump(self) -> None:
        """Admit waiters while the pure decision says someone can go."""
        while any(self.queues.values()):
            waiter = admission.next_to_admit(
                self.queues,
                self._occupancy(),
                self.lanes,
                self.clients,
                self.clock(),
                self.aging_s,
            )
            if waiter is None:
                return
            self.queues[waiter.lane].remove(waiter)
            future = self._futures.pop(waiter.id)
            if future.done():  # its task was cancelled and has not cleaned up yet
                continue
            self._count(waiter, +1)
            future.set_result(self.clock())

    def _expire(self, waiter: Waiter) -> None:
        future = self._futures.get(waiter.id)
        if future is not None and not future.done():
            self._forget(waiter)
            future.set_exception(_QueueTimeout())

    def _forget(self, waiter: Waiter) -> None:
        self._futures.pop(waiter.id, None)
        queue = self.queues[waiter.lane]
        if waiter in queue:
            queue.remove(waiter)
        self._pump()

    def _occupancy(self) -> Occupancy:
        return Occupancy(self.capacity, self.by_lane, self.by_client)

    def _count(self, waiter: Waiter, delta: int) -> None:
        self._count_names(waiter.lane, waiter.client, delta)

    def _count_names(self, lane: str, client: str | None, delta: int) -> None:
        self.by_lane[lane] = self.by_lane.get(lane, 0) + delta
        if client is not None:
            count = self.by_client.get(client, 0) + delta
            if count:
                self.by_client[client] = count
            else:
                self.by_client.pop(client, None)

    def _rate_limited(self, lane: LaneSpec, code: str, what: str) -> RateLimited:
        seconds = admission.retry_after_s(
            self.queue_depth(lane.name),
            self.in_flight,
            self.capacity,
            self._service_s.get(lane.name),
        )
        return RateLimited(
            f"lane {lane.name!r} queue {what} ({self.queue_depth(lane.name)} waiting, "
            f"{self.by_lane.get(lane.name, 0)}/{lane.max_concurrency} in flight); "
            f"retry in {seconds} s",
            code=code,
            headers={"retry-after": str(seconds)},
        )

    def snapshot(self) -> Mapping[str, tuple[int, int]]:
        """(in flight, queued) per lane."""
        return {name: (self.by_lane.get(name, 0), len(q)) for name, q in self.queues.items()}
