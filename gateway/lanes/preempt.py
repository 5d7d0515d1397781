"""Pure preemption decisions: which running requests of lower lanes give their slot to a chat.

Owns: who may be preempted, how many, and which ones; and the estimate of the tokens a
preemption threw away. Must not: await, read the clock (``now`` comes in), keep state, or know
about HTTP. The gate's shell (`gateway.lanes.preemption`) asks after every admission round and
interrupts the answer; the flow re-runs each interrupted request.

Who. A request is a candidate only while it runs in a lane of lower priority than the protected
(top-priority) lanes, is `preemptible` (its lane says `preemptible: true` in the current policy,
it is not streamed, and nothing of its answer went to its client yet: the shell's flag), has
been preempted fewer than `MAX_RERUNS` times, and is not being preempted already.

How many. Never more than needed, for two reasons only:
(a) protected waiters that cannot be admitted now: one victim per waiter that freeing one more
    slot would let in (a waiter held back by its own lane's cap or its client's cap is not
    helped by a free slot, so it gets none; nor is one that a lower waiter aged above it would
    beat to the freed slot);
(b) a lower lane over its current cap (its adaptive limit shrank at a chat's arrival) while a
    protected request is in flight or waiting: the excess.
Requests already being preempted count as freed: they are on their way out.

Which. The youngest first (latest start: the least work thrown away); ties go to the later id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.lanes.admission import Occupancy, Waiter, next_to_admit
from gateway.policy.spec import ClientSpec, LaneSpec

MAX_RERUNS = 2  # a request is preempted at most this many times, then it is immune


@dataclass(frozen=True, slots=True)
class Running:
    """One request holding a slot, as the decision sees it."""

    id: int
    lane: str
    client: str | None
    started_at: float  # when it went upstream (its latest admission)
    preemptions: int  # how often it was preempted so far
    preemptible: bool  # its lane allows it, it is not streamed, nothing was sent yet
    preempting: bool = False  # interrupted, slot not yet given back


@dataclass(frozen=True, slots=True)
class Situation:
    """The gate's state at one admission round (after it admitted whom it could)."""

    lanes: Mapping[str, LaneSpec]  # as admission sees them: lower lanes at their current caps
    clients: Mapping[str, ClientSpec]
    occupancy: Occupancy
    queues: Mapping[str, Sequence[Waiter]]
    now: float
    aging_s: float


def protected_lanes(lanes: Mapping[str, LaneSpec]) -> frozenset[str]:
    """The top-priority lanes; none when every lane has the same priority (nothing is lower)."""
    priorities = {lane.priority for lane in lanes.values()}
    if len(priorities) < 2:
        return frozenset()
    top = max(priorities)
    return frozenset(name for name, lane in lanes.items() if lane.priority == top)


def eligible(run: Running, lanes: Mapping[str, LaneSpec], protected: frozenset[str]) -> bool:
    lane = lanes.get(run.lane)
    if lane is None or not protected or run.lane in protected:
        return False
    top = max(lanes[name].priority for name in protected)
    return (
        lane.preemptible  # now: a reload that turned it off protects requests already running
        and run.preemptible
        and not run.preempting
        and run.preemptions < MAX_RERUNS
        and lane.priority < top
    )


def victims(running: Sequence[Running], situation: Situation) -> tuple[int, ...]:
    """The ids of the requests to preempt now, in order (see the module docstring)."""
    protected = protected_lanes(situation.lanes)
    if not protected:
        return ()
    candidates = sorted(
        (run for run in running if eligible(run, situation.lanes, protected)),
        key=lambda run: (run.started_at, run.id),
        reverse=True,
    )
    if not candidates:
        return ()
    occupancy = situation.occupancy
    for run in running:  # those on their way out count as gone
        if run.preempting and occupancy.by_lane.get(run.lane, 0) > 0:
            occupancy = occupancy.release(run.lane, run.client)
    chosen = _over_caps(candidates, situation, protected, occupancy)
    for run in chosen:
        occupancy = occupancy.release(run.lane, run.client)
    left = [run for run in candidates if run not in chosen]
    chosen += _for_waiters(left, situation, protected, occupancy)
    return tuple(run.id for run in chosen)


def _over_caps(
    candidates: Sequence[Running],
    situation: Situation,
    protected: frozenset[str],
    occupancy: Occupancy,
) -> list[Running]:
    """(b): each lower lane's excess over its cap, while a chat is in flight or waiting."""
    active = any(occupancy.by_lane.get(name) for name in protected) or any(
        situation.queues.get(name) for name in protected
    )
    if not active:
        return []
    chosen: list[Running] = []
    for name, lane in situation.lanes.items():
        excess = occupancy.by_lane.get(name, 0) - lane.max_concurrency
        if name in protected or excess <= 0:
            continue
        chosen += [run for run in candidates if run.lane == name][:excess]
    return chosen


def _for_waiters(
    candidates: Sequence[Running],
    situation: Situation,
    protected: frozenset[str],
    occupancy: Occupancy,
) -> list[Running]:
    """(a): one victim per protected waiter that one more free slot would let in. Admission
    sees every queue: a lower waiter aged above the chats (a re-queued request ages from its
    first arrival) would take the slot a cut frees, and a cut that helps no chat is skipped."""
    if not any(situation.queues.get(name) for name in protected):
        return []  # no chat waits (the usual case): no copy of the lower lanes' queues
    queues = {name: list(queue) for name, queue in situation.queues.items()}
    chosen: list[Running] = []
    for run in candidates:
        occupancy = _admit_all(queues, occupancy, situation)
        if not any(queues.get(name) for name in protected):
            break
        freed = occupancy.release(run.lane, run.client)
        admitted = _next(queues, freed, situation)
        if admitted is None:  # a free slot would not help them
            break
        if admitted.lane in protected:
            chosen.append(run)
            occupancy = freed
    return chosen


def _next(
    queues: Mapping[str, Sequence[Waiter]], occupancy: Occupancy, situation: Situation
) -> Waiter | None:
    return next_to_admit(
        queues, occupancy, situation.lanes, situation.clients, situation.now, situation.aging_s
    )


def _admit_all(
    queues: dict[str, list[Waiter]], occupancy: Occupancy, situation: Situation
) -> Occupancy:
    """Admit (on paper) every waiter that fits now."""
    while (waiter := _next(queues, occupancy, situation)) is not None:
        queues[waiter.lane].remove(waiter)
        occupancy = occupancy.admit(waiter.lane, waiter.client)
    return occupancy


def thrown_tokens(
    completion_tokens: int | None,
    thrown_s: float,
    final_s: float,
    preemptions: int,
    max_tokens: int,
) -> int:
    """An estimate of the completion tokens the preempted runs generated and threw away: the
    final run's rate (its completion tokens over its upstream seconds) times the seconds the
    thrown runs spent upstream, at most `max_tokens` per preempted run. 0 without a rate."""
    if preemptions <= 0 or not completion_tokens or not final_s > 0 or not thrown_s > 0:
        return 0
    estimate = completion_tokens * thrown_s / final_s
    if not math.isfinite(estimate):
        return preemptions * max_tokens
    return min(preemptions * max_tokens, math.ceil(estimate))
