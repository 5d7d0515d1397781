"""The async gate in front of the upstream slots: queues, waits, admits, times out, releases.

Every decision (whom to admit, whether a queue is full, an honest Retry-After) is made by the
pure `admission` module; this shell only keeps the queues and in-flight counts, awaits, and
makes sure each admitted request is released exactly once, on every exit path (success,
upstream error, client disconnect, cancellation, timeout). A leaked slot would starve a lane
until restart, so `Ticket.release` is idempotent and the relay calls it in a `finally`.

With shared state (several gateways, `shared_state.SharedState`), queues stay local and keep
their order; a waiter the local decision admits must also win a shared lease for its lane (and
client). If it loses, it goes back to its place in the queue and its lane (client, or the whole
gate when the pool is full) is skipped until a "freed" message from any gateway or a re-check
after `FREED_RECHECK_S`, whichever comes first.

With adaptive limits (`limits_feed.AdaptiveLimits`, the local gate only), admission sees each
lower lane's cap as the smaller of its `max_concurrency` and its adaptive limit; a protected
lane's arrival is told to the limits before it is admitted, and every in-flight change after.

After every admission round the local gate asks `preemption` whether a running request of a
`preemptible` lane should give its slot to a protected waiter (never with shared slots).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Protocol

from gateway.errors import GatewayError, RateLimited, ServiceUnavailable
from gateway.lanes import admission
from gateway.lanes.admission import Occupancy, Waiter
from gateway.lanes.limits_feed import AdaptiveLimits
from gateway.lanes.preempt import Situation
from gateway.lanes.preemption import Ticket as Ticket  # re-exported: where tickets come from
from gateway.lanes.preemption import enqueue, preempt_round
from gateway.policy.spec import ClientSpec, LaneSpec, Policy
from gateway.shared.plan import FREED_RECHECK_S, LeaseOutcome

Clock = Callable[[], float]


Refuse = Callable[[str], GatewayError]  # lane name → the error for a waiter of that lane


class SharedSlots(Protocol):
    """The seam to slots shared with other gateways (`shared_state.SharedState`)."""

    def new_lease(self) -> str: ...

    async def take(
        self,
        lease: str,
        lane: LaneSpec,
        client: ClientSpec | None,
        lanes: Mapping[str, LaneSpec],
        capacity: int,
    ) -> LeaseOutcome: ...

    def give_back(self, lease: str, lane: LaneSpec, client: ClientSpec | None) -> None: ...

    def listen(self, listener: LaneGate) -> None: ...


class _QueueTimeout(Exception):
    """Set on a waiter's future when its lane's queue_timeout passes."""


class _Refused(Exception):
    """Set on a waiter's future when the gate drains its queue (shutdown, lane removed)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class LaneGate:
    """One gate per process, for its whole life: a policy reload reconfigures it in place
    (`reconfigure`), so the slots held by requests admitted under the old policy keep counting
    against the capacity the new one admits into; a fresh gate would start at zero and
    oversubscribe the upstreams until the old requests finished."""

    def __init__(
        self,
        policy: Policy,
        capacity: int,
        clock: Clock,
        shared: SharedSlots | None = None,
        adaptive: AdaptiveLimits | None = None,
    ) -> None:
        self.clock = clock
        self.adaptive = adaptive
        if adaptive is not None:
            adaptive.wake = self._pump
        self.capacity = capacity
        self.lanes: dict[str, LaneSpec] = {}
        self.clients: dict[str, ClientSpec] = {}
        self.aging_s = policy.admission.aging_s
        self.queues: dict[str, deque[Waiter]] = {}
        self.by_lane: dict[str, int] = {}
        self.by_client: dict[str, int] = {}
        self._futures: dict[int, asyncio.Future[float]] = {}
        self._ids = itertools.count()
        self._service_s: dict[str, float] = {}  # moving mean of time held, per lane
        self.shared = shared
        # Skipped until a slot frees on some gateway (or the re-check): lost a shared lease.
        self._blocked_lanes: set[str] = set()
        self._blocked_clients: set[str] = set()
        self._blocked_all = False
        self._recheck: asyncio.TimerHandle | None = None
        if shared is not None:
            shared.listen(self)
        self._closed: Refuse | None = None
        self.tickets: set[Ticket] = set()  # admitted and not yet released
        self.reconfigure(policy, capacity)

    # -- what status and metrics read -------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(self.by_lane.values())

    def queue_depth(self, lane: str) -> int:
        return len(self.queues.get(lane, ()))

    # -- the request path ---------------------------------------------------------------------
    async def acquire(self, lane: LaneSpec, client: ClientSpec | None) -> Ticket:
        """Wait for a slot for `lane`; raises RateLimited when the queue is full or times out,
        or the gate's refusal when it is closed or the lane was removed by a reload."""
        if self._closed is not None:
            raise self._closed(lane.name)
        if lane.name not in self.lanes:  # classified under a policy that a reload replaced
            raise lane_removed(lane.name)
        lane = self.lanes[lane.name]  # the current spec: a reload's caps apply from now on
        now = self.clock()
        client_name = client.name if client else None
        waiter = Waiter(next(self._ids), lane.name, client_name, now)
        deadline = now + lane.queue_timeout_s
        if self.adaptive is not None:
            self.adaptive.arrived(lane.name, now)
        lanes = self._capped()
        if (
            not any(self.queues.values())
            and not self._blocked(waiter)
            and admission.can_admit(lanes[lane.name], client, self._occupancy(), lanes)
        ):
            self._count(waiter, +1)
            admitted_at = now
        else:
            admitted_at = await self._wait(waiter, lane, deadline, first=True)
        lease = None
        if self.shared is not None:
            lease, admitted_at = await self._win_lease(self.shared, waiter, client, admitted_at)
        return self._ticket(Ticket(self, lane, client, now, admitted_at, lease, waiter=waiter))

    async def requeue(self, preempted: Ticket) -> Ticket:
        """A preempted request's way back (its ticket released): it waits in its lane again in
        its first place (its waiter), aged from its first arrival, for a fresh queue_timeout;
        `max_queue` does not refuse it (it had its place)."""
        name, waiter = preempted.lane.name, preempted.waiter
        if self._closed is not None:
            raise self._closed(name)
        if name not in self.lanes or waiter is None:
            raise lane_removed(name)
        lane, now = self.lanes[name], self.clock()
        admitted_at = await self._wait(waiter, lane, now + lane.queue_timeout_s, False)
        ticket = Ticket(self, lane, preempted.client, preempted.enqueued_at, admitted_at)
        ticket.waiter, ticket.preemptions = waiter, preempted.preemptions + 1
        ticket.requeued_at, ticket.waited_s = now, preempted.queue_s
        return self._ticket(ticket)

    def _ticket(self, ticket: Ticket) -> Ticket:
        self.tickets.add(ticket)
        return ticket

    async def _wait(self, waiter: Waiter, lane: LaneSpec, deadline: float, first: bool) -> float:
        """Queue until admitted locally (counted), or raise RateLimited (full, timed out)."""
        queue = self.queues[lane.name]
        if first:
            full = admission.check_enqueue(lane, len(queue))
            if full is not None:
                raise self._rate_limited(lane, full, "is full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._futures[waiter.id] = future
        enqueue(queue, waiter)
        self._pump()
        # The timeout is a plain callback, not wait_for: it leaves the queue in the same step
        # that fails the future, so no admission can slip in between.
        timer = loop.call_later(max(0.0, deadline - self.clock()), self._expire, waiter)
        try:
            return await future
        except _QueueTimeout:
            raise self._rate_limited(lane, "lane_queue_timeout", "waited too long") from None
        except _Refused as refused:
            raise refused.error from None
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

    async def _win_lease(
        self, shared: SharedSlots, waiter: Waiter, client: ClientSpec | None, admitted_at: float
    ) -> tuple[str, float]:
        """Hold the shared lease too, or go back to the queue until a slot frees somewhere."""
        lane = self.lanes[waiter.lane]
        deadline = waiter.enqueued_at + lane.queue_timeout_s
        while True:
            lease = shared.new_lease()
            try:
                outcome = await shared.take(lease, lane, client, self.lanes, self.capacity)
            except BaseException:  # cancelled or refused (fail-closed): the script may have run
                shared.give_back(lease, lane, client)
                self._count(waiter, -1)
                self._pump()
                raise
            if outcome in (LeaseOutcome.WON, LeaseOutcome.LOCAL):
                return lease, admitted_at
            self._count(waiter, -1)
            self._block(outcome, waiter)
            admitted_at = await self._wait(waiter, lane, deadline, first=False)

    def on_shared_freed(self) -> None:
        """A slot freed on some gateway (or the re-check fired): let blocked waiters try."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._blocked_lanes.clear()
        self._blocked_clients.clear()
        self._blocked_all = False
        self._pump()

    def _release(self, ticket: Ticket) -> None:
        self.tickets.discard(ticket)
        held = self.clock() - ticket.admitted_at
        name = ticket.lane.name
        self._service_s[name] = admission.service_mean(self._service_s.get(name), held)
        if ticket.lease is not None and self.shared is not None:
            self.shared.give_back(ticket.lease, ticket.lane, ticket.client)
        self._count_names(ticket.lane.name, ticket.client.name if ticket.client else None, -1)
        self._pump()

    # -- shutdown and reload ----------------------------------------------------------------
    def close(self, refuse: Refuse) -> None:
        """Refuse every waiter now and every later arrival (the gateway is draining)."""
        self._closed = refuse
        for name in self.queues:
            self._refuse_queue(name, refuse)

    def reconfigure(self, policy: Policy, capacity: int) -> None:
        """Take a new policy's lanes, clients and capacity, keeping what is in flight.

        Waiters of lanes that still exist stay queued (under the new caps); waiters of removed
        lanes are refused. In-flight counts of removed lanes keep counting against the capacity
        until their tickets are released. One synchronous step: nobody is admitted half-way.
        """
        lanes = {lane.name: lane for lane in policy.lanes}
        for name in [name for name in self.queues if name not in lanes]:
            self._refuse_queue(name, lane_removed)
            del self.queues[name]
        self.lanes = lanes
        self.clients = {c.name: c for c in policy.clients}
        self.aging_s = policy.admission.aging_s
        self.capacity = capacity
        for name in lanes:
            self.queues.setdefault(name, deque())
            self.by_lane.setdefault(name, 0)
        self._pump()

    def _refuse_queue(self, lane: str, refuse: Refuse) -> None:
        queue = self.queues[lane]
        while queue:
            waiter = queue.popleft()
            future = self._futures.pop(waiter.id, None)
            if future is not None and not future.done():
                future.set_exception(_Refused(refuse(lane)))

    # -- internals ------------------------------------------------------------------------
    def _pump(self) -> None:
        """Admit waiters while the pure decision says someone can go; then preempt for the
        protected lanes if they still wait or lower lanes are over their caps."""
        self._admit_waiting()
        if self.shared is None and any(t.interrupt is not None for t in self.tickets):
            lanes, queues, now = self._capped(), self._admissible(), self.clock()
            situation = Situation(lanes, self.clients, self._occupancy(), queues, now, self.aging_s)
            preempt_round(self.tickets, situation)

    def _admit_waiting(self) -> None:
        while any(self.queues.values()):
            waiter = admission.next_to_admit(
                self._admissible(),
                self._occupancy(),
                self._capped(),
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

    def _admissible(self) -> Mapping[str, deque[Waiter] | list[Waiter]]:
        """The queues without the waiters that lost a shared lease and wait for a freed slot."""
        if not (self._blocked_all or self._blocked_lanes or self._blocked_clients):
            return self.queues
        if self._blocked_all:
            return {}
        return {
            name: [w for w in queue if w.client not in self._blocked_clients]
            for name, queue in self.queues.items()
            if name not in self._blocked_lanes
        }

    def _blocked(self, waiter: Waiter) -> bool:
        return (
            self._blocked_all
            or waiter.lane in self._blocked_lanes
            or (waiter.client is not None and waiter.client in self._blocked_clients)
        )

    def _block(self, outcome: LeaseOutcome, waiter: Waiter) -> None:
        if outcome is LeaseOutcome.LANE_FULL:
            self._blocked_lanes.add(waiter.lane)
        elif outcome is LeaseOutcome.CLIENT_FULL and waiter.client is not None:
            self._blocked_clients.add(waiter.client)
        else:
            self._blocked_all = True
        if self._recheck is None:  # freed messages can be lost, and expired leases send none
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(FREED_RECHECK_S, self.on_shared_freed)

    def _expire(self, waiter: Waiter) -> None:
        future = self._futures.get(waiter.id)
        if future is not None and not future.done():
            self._forget(waiter)
            future.set_exception(_QueueTimeout())

    def _forget(self, waiter: Waiter) -> None:
        self._futures.pop(waiter.id, None)
        queue = self.queues.get(waiter.lane)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        self._pump()

    def _occupancy(self) -> Occupancy:
        return Occupancy(self.capacity, self.by_lane, self.by_client)

    def _capped(self) -> Mapping[str, LaneSpec]:
        """The lanes as admission sees them: lower lanes held to their adaptive limits."""
        if self.adaptive is None or not self.adaptive.enabled:
            return self.lanes
        caps = self.adaptive.caps(self.clock())
        return {
            name: replace(lane, max_concurrency=min(lane.max_concurrency, caps[name]))
            if name in caps
            else lane
            for name, lane in self.lanes.items()
        }

    def _count(self, waiter: Waiter, delta: int) -> None:
        self._count_names(waiter.lane, waiter.client, delta)

    def _count_names(self, lane: str, client: str | None, delta: int) -> None:
        self.by_lane[lane] = self.by_lane.get(lane, 0) + delta
        if not self.by_lane[lane] and lane not in self.lanes:  # removed by a reload, now idle
            del self.by_lane[lane]
        if client is not None:
            count = self.by_client.get(client, 0) + delta
            if count:
                self.by_client[client] = count
            else:
                self.by_client.pop(client, None)
        if self.adaptive is not None:
            self.adaptive.counted(self.by_lane, self.clock())

    def _rate_limited(self, lane: LaneSpec, code: str, what: str) -> RateLimited:
        # The lane's own slots drain its queue: free slots elsewhere in the pool do not help
        # a lane at its cap (they made this 1 s however long the lane's requests take).
        seconds = admission.retry_after_s(
            self.queue_depth(lane.name),
            self.by_lane.get(lane.name, 0),
            min(lane.max_concurrency, self.capacity),
            self._service_s.get(lane.name),
        )
        # With shared slots these are this gateway's numbers; the cap counts every gateway.
        here = " on this gateway, cap shared by all gateways" if self.shared is not None else ""
        return RateLimited(
            f"lane {lane.name!r} queue {what} ({self.queue_depth(lane.name)} waiting, "
            f"{self.by_lane.get(lane.name, 0)}/{lane.max_concurrency} in flight{here}); "
            f"retry in {seconds} s",
            code=code,
            headers={"retry-after": str(seconds)},
        )

    def snapshot(self) -> Mapping[str, tuple[int, int]]:
        """(in flight, queued) per lane, including removed lanes with requests still in flight."""
        names = [*self.queues, *(name for name in self.by_lane if name not in self.queues)]
        return {name: (self.by_lane.get(name, 0), self.queue_depth(name)) for name in names}


def lane_removed(lane: str) -> GatewayError:
    return ServiceUnavailable(
        f"lane {lane!r} was removed by a policy reload while this request waited for it; "
        "retry, and it will be classified under the current policy",
        code="lane_removed",
        headers={"retry-after": "1"},
    )
