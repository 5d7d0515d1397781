"""Pure admission decisions: who may take an upstream slot now, and in which order.

Owns: the capacity rule (lane cap, client cap, pool capacity, other lanes' reserved slots), the
admission order (lane priority aged by waiting time, FIFO within a lane), an honest Retry-After
for a 429, and the queue-full check. Must not: await, read the clock (``now`` comes in), keep
state between calls, or know about HTTP. The async gate owns the per-lane FIFO queues and the
in-flight counts; after every arrival, release and timeout it asks ``next_to_admit``, admits the
answer, and asks again until the answer is None.

Reserved slots. A lane's unused reservation, ``min(reserved, max_concurrency) - in_flight``, is
held back from every other lane. While the reservations of a capacity domain fit in it
(``sum(reserved) <= capacity``), admissions keep ``sum(max(in_flight, reserved)) <= capacity``
true, so a lane below its reservation always finds a free slot. When they do not fit (a
misconfiguration, or upstreams lost so capacity shrank) a lane below its reservation may take
any free slot: otherwise two under-used reservations could hold each other out forever.

Head of line. Only the first admissible waiter of each lane is a candidate. The lane's own
checks (lane cap, capacity, reservations) are the same for all its waiters, so when they fail
nobody in the lane passes. A waiter blocked only by its CLIENT's cap is passed by later waiters
of other clients: otherwise one greedy client at its cap would stall a whole lane. Waiters of
the same client never pass each other, so each client still sees FIFO within a lane.

Aging and the starvation bound. Effective priority is ``priority + waited_s / aging_s``. All
waiters age at the same rate, so the order of two waiters never changes while both wait: ``x``
goes before ``w`` iff ``p_x - t_x / aging_s > p_w - t_w / aging_s`` (ties: earlier arrival),
i.e. iff ``x`` arrived before ``t_w + aging_s * (p_x - p_w)``. Hence a waiter is overtaken only
by waiters that arrived less than ``aging_s * (max priority - its priority)`` after it; from
then on it is behind at most the waiters already queued (bounded by the lanes' ``max_queue``).
With capacity ``C``, service times at most ``S`` and ``Q`` waiters queued ahead at that moment,
it is admitted by ``t_w + aging_s * dp + ceil((Q + 1) / C) * S``
(tests/lanes/test_admission.py checks this). Its lane's ``queue_timeout_s`` must exceed that
bound, or the gate sheds it with a 429 first: shedding, not starvation. A lane that must
progress regardless gets ``reserved >= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gateway.policy.spec import ClientSpec, LaneSpec

QUEUE_FULL = "lane_queue_full"
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60


@dataclass(frozen=True, slots=True)
class Waiter:
    """A request waiting in its lane's queue."""

    id: int  # unique, increasing with arrival: the FIFO tiebreak
    lane: str
    client: str | None
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class Occupancy:
    """What is in flight now in one capacity domain (a pool of upstream slots).

    Immutable so a decision sees one consistent snapshot; ``admit``/``release`` return copies.
    """

    capacity: int  # total slots: sum of the pool's upstream max_concurrency
    by_lane: Mapping[str, int] = field(default_factory=dict)
    by_client: Mapping[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return sum(self.by_lane.values())

    def admit(self, lane: str, client: str | None) -> Occupancy:
        return replace(
            self,
            by_lane=_bump(self.by_lane, lane, 1),
            by_client=self.by_client if client is None else _bump(self.by_client, client, 1),
        )

    def release(self, lane: str, client: str | None) -> Occupancy:
        """Raises ValueError on a release without an admit: a double release is a gate bug."""
        return replace(
            self,
            by_lane=_bump(self.by_lane, lane, -1),
            by_client=self.by_client if client is None else _bump(self.by_client, client, -1),
        )


def _bump(counts: Mapping[str, int], key: str, delta: int) -> dict[str, int]:
    value = counts.get(key, 0) + delta
    if value < 0:
        raise ValueError(f"release of {key!r} with nothing in flight")
    bumped = dict(counts)
    if value:
        bumped[key] = value
    else:
        bumped.pop(key, None)
    return bumped


def _unused_reservation(lane: LaneSpec, occupancy: Occupancy) -> int:
    # A lane can never use more than its cap, so holding more than that would only waste slots.
    held = min(lane.reserved, lane.max_concurrency)
    return max(0, held - occupancy.by_lane.get(lane.name, 0))


def lane_has_room(lane: LaneSpec, occupancy: Occupancy, lanes: Mapping[str, LaneSpec]) -> bool:
    """The checks shared by every waiter of ``lane``: lane cap, capacity, others' reservations."""
    in_lane = occupancy.by_lane.get(lane.name, 0)
    if in_lane >= lane.max_concurrency:
        return False
    free = occupancy.capacity - occupancy.in_flight
    held_for_others = sum(
        _unused_reservation(other, occupancy) for name, other in lanes.items() if name != lane.name
    )
    if free - held_for_others >= 1:
        return True
    return free >= 1 and _unused_reservation(lane, occupancy) > 0


def client_has_room(client: ClientSpec | None, occupancy: Occupancy) -> bool:
    if client is None or client.max_concurrency is None:
        return True
    return occupancy.by_client.get(client.name, 0) < client.max_concurrency


def can_admit(
    lane: LaneSpec,
    client: ClientSpec | None,
    occupancy: Occupancy,
    lanes: Mapping[str, LaneSpec],
) -> bool:
    """May one more request of ``lane`` from ``client`` start now? See the module docstring."""
    return client_has_room(client, occupancy) and lane_has_room(lane, occupancy, lanes)


def effective_priority(lane: LaneSpec, waited_s: float, aging_s: float) -> float:
    """``priority + waited_s / aging_s``: one level per ``aging_s`` waited, so batch never starves.

    ``aging_s`` must be positive; ``math.inf`` turns aging off. A negative wait (clock skew)
    counts as zero so it can never push a waiter below its lane's priority.
    """
    if not aging_s > 0:
        raise ValueError(f"aging_s must be positive, got {aging_s}")
    return lane.priority + max(0.0, waited_s) / aging_s


def _lane_candidate(
    queue: Sequence[Waiter],
    occupancy: Occupancy,
    clients: Mapping[str, ClientSpec],
) -> Waiter | None:
    """First waiter whose client has room; waiters of a client at its cap are skipped."""
    blocked: set[str] = set()
    for waiter in queue:
        if waiter.client is None:
            return waiter
        if waiter.client in blocked:
            continue
        if client_has_room(clients.get(waiter.client), occupancy):
            return waiter
        blocked.add(waiter.client)
    return None


def next_to_admit(
    queues: Mapping[str, Sequence[Waiter]],
    occupancy: Occupancy,
    lanes: Mapping[str, LaneSpec],
    clients: Mapping[str, ClientSpec],
    now: float,
    aging_s: float,
) -> Waiter | None:
    """Pick the waiter to admit: highest effective priority, aged by wait time, FIFO within a lane.

    ``queues`` maps lane name to its waiters in arrival order. Each lane offers its first
    admissible waiter (see "Head of line"); the highest effective priority wins, ties go to the
    earlier arrival. None when nobody may start. A queued lane missing from ``lanes`` raises
    KeyError: the gate must keep the specs its waiters were queued under.
    """
    best: Waiter | None = None
    best_key = (-math.inf, 0)
    for name, queue in queues.items():
        if not queue:
            continue
        lane = lanes[name]
        if not lane_has_room(lane, occupancy, lanes):
            continue
        candidate = _lane_candidate(queue, occupancy, clients)
        if candidate is None:
            continue
        key = (effective_priority(lane, now - candidate.enqueued_at, aging_s), -candidate.id)
        if best is None or key > best_key:
            best, best_key = candidate, key
    return best


def retry_after_s(
    queue_depth: int,
    in_flight: int,
    capacity: int,
    mean_service_s: float | None,
    default_s: float = 1.0,
) -> int:
    """Whole seconds until a refused request could roughly start, clamped to [1, 60].

    The openai SDK sleeps for Retry-After and retries, so a guess that is too short only makes
    it hammer us and one that is too long idles it. Requests ahead of this one are the queue
    less any slot still free; ``capacity`` slots drain them, one mean service time per round.
    Without a measured mean (or with a nonsense one) ``default_s`` stands in.
    """
    service = mean_service_s
    if service is None or not service > 0:  # also catches NaN
        service = default_s
    free = max(0, capacity - in_flight)
    ahead = queue_depth + 1 - free
    if ahead <= 0:
        return RETRY_AFTER_MIN_S
    seconds = min(float(RETRY_AFTER_MAX_S), ahead / max(1, capacity) * service)
    return max(RETRY_AFTER_MIN_S, math.ceil(seconds))


def check_enqueue(lane: LaneSpec, queue_depth: int) -> str | None:
    """``"lane_queue_full"`` when the lane's queue already holds ``max_queue`` waiters."""
    return QUEUE_FULL if queue_depth >= lane.max_queue else None


SERVICE_WEIGHT = 0.1  # the weight of the newest slot-holding time in a lane's moving mean


def service_mean(mean_s: float | None, held_s: float) -> float:
    """A lane's moving mean of how long its requests hold a slot (what `retry_after_s`
    reads): the first sample as it is, then each new one weighted `SERVICE_WEIGHT`."""
    if mean_s is None:
        return held_s
    return (1 - SERVICE_WEIGHT) * mean_s + SERVICE_WEIGHT * held_s
