"""Admission decisions: each rule on plain values, then a model gate driven by hypothesis.

The model gate (``ModelGate``) does what the async gate does, without asyncio: per-lane FIFO
queues, a fake clock, queue timeouts, releases, and a pump that admits ``next_to_admit`` until
it answers None. Every choice and every resting state is checked against the invariants.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lanes.admission import (
    QUEUE_FULL,
    Occupancy,
    Waiter,
    can_admit,
    check_enqueue,
    client_has_room,
    effective_priority,
    next_to_admit,
    retry_after_s,
    service_mean,
)
from gateway.policy.spec import ClientSpec, LaneSpec


def lane(
    name: str,
    priority: int = 0,
    cap: int = 4,
    reserved: int = 0,
    max_queue: int = 100,
    queue_timeout_s: float = 30.0,
) -> LaneSpec:
    return LaneSpec(name, priority, cap, reserved, max_queue, queue_timeout_s)


def client(name: str, cap: int | None = None) -> ClientSpec:
    return ClientSpec(name=name, key_ref="env:KEY", lanes=(), max_concurrency=cap)


def lanes_of(*specs: LaneSpec) -> dict[str, LaneSpec]:
    return {spec.name: spec for spec in specs}


def occ(capacity: int, lanes: dict[str, int] | None = None, **clients: int) -> Occupancy:
    return Occupancy(capacity, dict(lanes or {}), dict(clients))


INTERACTIVE = lane("interactive", priority=10, cap=4)
BATCH = lane("batch", priority=0, cap=2)
HEARTBEAT = lane("heartbeat", priority=20, cap=1, reserved=1)
LANES = lanes_of(INTERACTIVE, BATCH, HEARTBEAT)


# -- Occupancy ---------------------------------------------------------------------------------


def test_occupancy_admit_and_release_return_copies() -> None:
    empty = Occupancy(4)
    one = empty.admit("batch", "alice")
    assert (empty.in_flight, one.in_flight) == (0, 1)
    assert one.by_lane == {"batch": 1} and one.by_client == {"alice": 1}
    assert one.admit("batch", None).by_client == {"alice": 1}
    back = one.release("batch", "alice")
    assert back.by_lane == {} and back.by_client == {} and back.in_flight == 0


def test_occupancy_release_without_admit_raises() -> None:
    with pytest.raises(ValueError, match="nothing in flight"):
        Occupancy(4).release("batch", None)
    with pytest.raises(ValueError, match="alice"):
        Occupancy(4, {"batch": 1}).release("batch", "alice")


# -- can_admit ---------------------------------------------------------------------------------


def test_lane_cap() -> None:
    assert can_admit(BATCH, None, occ(8, {"batch": 1}), LANES)
    assert not can_admit(BATCH, None, occ(8, {"batch": 2}), LANES)


def test_client_cap_and_uncapped_clients() -> None:
    alice = client("alice", cap=1)
    assert can_admit(INTERACTIVE, alice, occ(8), LANES)
    assert not can_admit(INTERACTIVE, alice, occ(8, {"batch": 1}, alice=1), LANES)
    assert can_admit(INTERACTIVE, client("bob"), occ(8, {"batch": 1}, bob=5), LANES)
    assert can_admit(INTERACTIVE, None, occ(8, {"batch": 1}, alice=1), LANES)


def test_total_capacity() -> None:
    lanes = lanes_of(INTERACTIVE, BATCH)
    assert can_admit(INTERACTIVE, None, occ(3, {"batch": 2}), lanes)
    assert not can_admit(INTERACTIVE, None, occ(3, {"batch": 2, "interactive": 1}), lanes)


def test_unused_reservation_of_another_lane_is_held() -> None:
    # 3 slots, heartbeat holds 1 it does not use: only 2 for the others.
    assert can_admit(INTERACTIVE, None, occ(3, {"interactive": 1}), LANES)
    assert not can_admit(INTERACTIVE, None, occ(3, {"interactive": 2}), LANES)
    assert not can_admit(BATCH, None, occ(3, {"interactive": 2}), LANES)
    assert can_admit(HEARTBEAT, None, occ(3, {"interactive": 2}), LANES)


def test_used_reservation_is_not_held_twice() -> None:
    assert can_admit(INTERACTIVE, None, occ(3, {"interactive": 1, "heartbeat": 1}), LANES)


def test_own_reservation_does_not_hold_the_lane_back() -> None:
    solo = lanes_of(lane("a", cap=4, reserved=2))
    assert can_admit(solo["a"], None, occ(2, {"a": 1}), solo)


def test_reservation_beyond_the_lane_cap_is_not_held() -> None:
    lanes = lanes_of(lane("a", cap=1, reserved=3), lane("b"))
    assert can_admit(lanes["b"], None, occ(4, {"b": 2}), lanes)
    assert not can_admit(lanes["b"], None, occ(4, {"b": 3}), lanes)


def test_overcommitted_reservations_do_not_deadlock() -> None:
    # Capacity shrank to 2 under reservations 2 + 1: a lane below its reservation takes a free
    # slot, where the bare "free - held_for_others >= 1" rule would admit nobody, ever.
    lanes = lanes_of(lane("a", cap=2, reserved=2), lane("b", cap=1, reserved=1), lane("c"))
    now = occ(2, {"a": 1})
    assert can_admit(lanes["a"], None, now, lanes)
    assert can_admit(lanes["b"], None, now, lanes)
    assert not can_admit(lanes["c"], None, now, lanes)
    assert not can_admit(lanes["a"], None, occ(2, {"a": 1, "b": 1}), lanes)


# -- effective_priority ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "waited", "aging", "expected"),
    [(0, 0.0, 10.0, 0.0), (0, 25.0, 10.0, 2.5), (5, 10.0, 10.0, 6.0), (5, -3.0, 10.0, 5.0)],
)
def test_effective_priority(priority: int, waited: float, aging: float, expected: float) -> None:
    assert effective_priority(lane("x", priority), waited, aging) == expected


def test_infinite_aging_turns_aging_off() -> None:
    assert effective_priority(lane("x", 3), 1e9, math.inf) == 3.0


@pytest.mark.parametrize("aging", [0.0, -1.0, math.nan])
def test_aging_must_be_positive(aging: float) -> None:
    with pytest.raises(ValueError, match="aging_s"):
        effective_priority(lane("x"), 1.0, aging)


# -- next_to_admit -----------------------------------------------------------------------------


def w(id: int, lane: str, client: str | None = None, at: float = 0.0) -> Waiter:
    return Waiter(id=id, lane=lane, client=client, enqueued_at=at)


def pick(
    queues: dict[str, list[Waiter]],
    o: Occupancy,
    now: float = 0.0,
    aging: float = 10.0,
    clients: dict[str, ClientSpec] | None = None,
) -> Waiter | None:
    return next_to_admit(queues, o, LANES, clients or {}, now, aging)


def test_nothing_waiting() -> None:
    assert pick({}, occ(4)) is None
    assert pick({"batch": [], "unknown-but-empty": []}, occ(4)) is None


def test_higher_priority_first() -> None:
    queues = {"batch": [w(1, "batch")], "interactive": [w(2, "interactive")]}
    assert pick(queues, occ(4)) == w(2, "interactive")


def test_equal_effective_priority_goes_to_the_earlier_arrival() -> None:
    lanes = lanes_of(lane("a", 1), lane("b", 1))
    queues = {"b": [w(1, "b")], "a": [w(2, "a")]}
    assert next_to_admit(queues, occ(4), lanes, {}, 0.0, 10.0) == w(1, "b")


def test_aging_lets_an_old_batch_waiter_overtake() -> None:
    old_batch, fresh = w(1, "batch", at=0.0), w(2, "interactive", at=99.0)
    queues = {"batch": [old_batch], "interactive": [fresh]}
    assert pick(queues, occ(4), now=100.0) == fresh  # 0 + 100/10 = 10 < 10 + 1/10
    late = w(2, "interactive", at=100.0)  # arrived exactly aging_s * (10 - 0) after batch
    assert pick({"batch": [old_batch], "interactive": [late]}, occ(4), now=100.0) == old_batch
    assert pick({"batch": [old_batch], "interactive": [late]}, occ(4), now=500.0) == old_batch
    later = w(2, "interactive", at=100.5)
    assert pick({"batch": [old_batch], "interactive": [later]}, occ(4), now=101.0) == old_batch


def test_fifo_within_a_lane() -> None:
    queues = {"batch": [w(5, "batch", at=3.0), w(2, "batch", at=9.0)]}
    assert pick(queues, occ(4)) == w(5, "batch", at=3.0)


def test_lane_at_its_cap_yields_to_other_lanes() -> None:
    queues = {"interactive": [w(1, "interactive")], "batch": [w(2, "batch")]}
    assert pick(queues, occ(8, {"interactive": 4})) == w(2, "batch")
    assert pick(queues, occ(8, {"interactive": 4, "batch": 2})) is None


def test_client_capped_head_is_passed_by_other_clients() -> None:
    clients = {"greedy": client("greedy", cap=1)}
    queue = [w(1, "batch", "greedy"), w(2, "batch", "greedy"), w(3, "batch", "bob")]
    o = occ(8, {"batch": 1}, greedy=1)
    assert pick({"batch": queue}, o, clients=clients) == w(3, "batch", "bob")
    assert pick({"batch": queue[:2]}, o, clients=clients) is None
    anonymous = [w(1, "batch", "greedy"), w(4, "batch", None)]
    assert pick({"batch": anonymous}, o, clients=clients) == w(4, "batch", None)


def test_client_below_its_cap_keeps_its_place() -> None:
    clients = {"greedy": client("greedy", cap=2)}
    queue = [w(1, "batch", "greedy"), w(3, "batch", "bob")]
    assert pick({"batch": queue}, occ(8, greedy=1), clients=clients) == w(1, "batch", "greedy")


def test_unknown_client_is_uncapped() -> None:
    assert pick({"batch": [w(1, "batch", "ghost")]}, occ(8, ghost=50)) == w(1, "batch", "ghost")


def test_queued_lane_without_a_spec_is_a_gate_bug() -> None:
    with pytest.raises(KeyError):
        pick({"gone": [w(1, "gone")]}, occ(4))


# -- retry_after_s, check_enqueue --------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "in_flight", "capacity", "mean", "expected"),
    [
        (0, 4, 4, 2.0, 1),  # (0 + 1) / 4 * 2 = 0.5 → rounded up, floor of 1
        (7, 4, 4, 2.0, 4),  # 8 / 4 * 2
        (8, 4, 4, 2.0, 5),  # 9 / 4 * 2 = 4.5 → 5
        (9, 2, 4, 2.0, 4),  # two free slots take two of the ten ahead: 8 / 4 * 2
        (0, 0, 4, 30.0, 1),  # a slot is free now
        (99, 4, 4, 30.0, 60),  # clamped
        (3, 1, 1, None, 4),  # no measurement yet: default 1 s per request
        (3, 1, 1, 0.0, 4),
        (3, 1, 1, -2.0, 4),
        (3, 1, 1, math.nan, 4),
        (3, 1, 1, math.inf, 60),
        (3, 0, 0, 2.0, 8),  # no capacity at all: counted as one slot
    ],
)
def test_retry_after(
    depth: int, in_flight: int, capacity: int, mean: float | None, expected: int
) -> None:
    assert retry_after_s(depth, in_flight, capacity, mean) == expected


def test_retry_after_default() -> None:
    assert retry_after_s(3, 1, 1, None, default_s=2.5) == 10


@given(
    st.integers(0, 10_000),
    st.integers(0, 500),
    st.integers(0, 500),
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
@settings(max_examples=200, deadline=None)
def test_retry_after_is_always_within_bounds(
    depth: int, in_flight: int, capacity: int, mean: float | None
) -> None:
    assert 1 <= retry_after_s(depth, in_flight, capacity, mean) <= 60


@pytest.mark.parametrize(
    ("max_queue", "depth", "expected"),
    [
        (3, 0, None),
        (3, 2, None),
        (3, 3, QUEUE_FULL),
        (3, 9, QUEUE_FULL),
        (0, 0, QUEUE_FULL),
    ],
)
def test_check_enqueue(max_queue: int, depth: int, expected: str | None) -> None:
    assert check_enqueue(lane("x", max_queue=max_queue), depth) == expected


# -- the model gate ----------------------------------------------------------------------------

EPS = 1e-9


@dataclass
class ModelGate:
    lanes: dict[str, LaneSpec]
    clients: dict[str, ClientSpec]
    capacity: int
    aging_s: float
    now: float = 0.0
    queues: dict[str, list[Waiter]] = field(default_factory=dict)
    in_flight: dict[int, Waiter] = field(default_factory=dict)
    admitted: list[Waiter] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    next_id: int = 1

    def __post_init__(self) -> None:
        self.occupancy = Occupancy(self.capacity)
        self.queues = {name: [] for name in self.lanes}

    def arrive(self, lane_name: str, client_name: str | None) -> Waiter | None:
        queue = self.queues[lane_name]
        if check_enqueue(self.lanes[lane_name], len(queue)) is not None:
            return None
        waiter = Waiter(self.next_id, lane_name, client_name, self.now)
        self.next_id += 1
        queue.append(waiter)
        return waiter

    def release(self, waiter_id: int) -> None:
        waiter = self.in_flight.pop(waiter_id)
        self.occupancy = self.occupancy.release(waiter.lane, waiter.client)
        self.released.append(waiter_id)

    def advance(self, dt: float) -> None:
        self.now += dt
        for name, queue in self.queues.items():
            timeout = self.lanes[name].queue_timeout_s
            queue[:] = [x for x in queue if self.now - x.enqueued_at < timeout]

    def admissible(self, waiter: Waiter) -> bool:
        spec = self.clients.get(waiter.client) if waiter.client else None
        return can_admit(self.lanes[waiter.lane], spec, self.occupancy, self.lanes)

    def pump(self) -> list[Waiter]:
        chosen = []
        while (waiter := self._next()) is not None:
            self.check_choice(waiter)
            self.queues[waiter.lane].remove(waiter)
            self.occupancy = self.occupancy.admit(waiter.lane, waiter.client)
            self.in_flight[waiter.id] = waiter
            self.admitted.append(waiter)
            chosen.append(waiter)
        return chosen

    def _next(self) -> Waiter | None:
        return next_to_admit(
            self.queues, self.occupancy, self.lanes, self.clients, self.now, self.aging_s
        )

    def waiting(self) -> list[Waiter]:
        return [x for queue in self.queues.values() for x in queue]

    def check_choice(self, chosen: Waiter) -> None:
        assert self.admissible(chosen)
        p_chosen = self.lanes[chosen.lane].priority
        for other in self.waiting():
            if other == chosen:
                continue
            if other.lane == chosen.lane and other.id < chosen.id:
                # (f) FIFO: an earlier waiter of the lane is passed only when its client is full
                assert other.client is not None and other.client != chosen.client
                assert not client_has_room(self.clients.get(other.client), self.occupancy)
            if self.admissible(other):
                # (d)/(e) static aged order: chosen arrived no later than the moment `other`
                # outranks it, aging_s * (p_chosen - p_other) after other's arrival.
                lead = self.aging_s * (p_chosen - self.lanes[other.lane].priority)
                if math.isnan(lead):  # aging off, equal priorities: plain FIFO
                    lead = 0.0
                assert chosen.enqueued_at <= other.enqueued_at + lead + EPS

    def check_rest(self) -> None:
        o = self.occupancy
        # (a) caps
        assert o.in_flight == len(self.in_flight) <= self.capacity
        for name, spec in self.lanes.items():
            assert o.by_lane.get(name, 0) <= spec.max_concurrency
        for name, cspec in self.clients.items():
            if cspec.max_concurrency is not None:
                assert o.by_client.get(name, 0) <= cspec.max_concurrency
        # work conserving: nobody left waiting could have been admitted
        assert not any(self.admissible(x) for x in self.waiting())
        # (b) reservations
        held = {n: min(s.reserved, s.max_concurrency) for n, s in self.lanes.items()}
        fits = sum(held.values()) <= self.capacity
        if fits:
            assert sum(max(o.by_lane.get(n, 0), h) for n, h in held.items()) <= self.capacity
        for name, queue in self.queues.items():
            wants = any(client_has_room(self.clients.get(x.client or ""), o) for x in queue)
            if wants and o.by_lane.get(name, 0) < held[name]:
                assert not fits and o.in_flight == self.capacity


CLIENT_NAMES = ("alice", "bob")


@st.composite
def gates(draw: st.DrawFn) -> ModelGate:
    specs = []
    for i in range(draw(st.integers(1, 3))):
        cap = draw(st.integers(1, 4))
        specs.append(
            LaneSpec(
                name=f"l{i}",
                priority=draw(st.integers(0, 10)),
                max_concurrency=cap,
                reserved=draw(st.integers(0, cap) | st.just(1)),
                max_queue=draw(st.integers(0, 5)),
                queue_timeout_s=draw(st.sampled_from([2.0, 5.0, 30.0])),
            )
        )
    clients = {n: client(n, draw(st.sampled_from([None, 1, 1, 1, 2]))) for n in CLIENT_NAMES}
    return ModelGate(
        lanes=lanes_of(*specs),
        clients=clients,
        capacity=draw(st.integers(1, 6)),
        aging_s=draw(st.sampled_from([0.5, 1.0, 3.0, 10.0, math.inf])),
    )


ARRIVE = st.tuples(
    st.just("arrive"), st.integers(0, 2), st.sampled_from([None, *CLIENT_NAMES, "eve"])
)
RELEASE = st.tuples(st.just("release"), st.integers(0, 50), st.none())
TICK = st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.none())
# Arrivals outnumber releases and ticks so queues build up and caps actually bind.
OPS = st.lists(st.one_of(ARRIVE, ARRIVE, ARRIVE, RELEASE, RELEASE, TICK), min_size=30, max_size=80)


@given(gates(), OPS)
@settings(max_examples=250, deadline=None)
def test_model_gate_keeps_every_invariant(
    gate: ModelGate, ops: list[tuple[str, float, str | None]]
) -> None:
    names = list(gate.lanes)
    for op, arg, who in ops:
        if op == "arrive":
            gate.arrive(names[int(arg) % len(names)], who)
        elif op == "release" and gate.in_flight:
            ids = sorted(gate.in_flight)
            gate.release(ids[int(arg) % len(ids)])
        elif op == "tick":
            gate.advance(arg)
        gate.pump()
        gate.check_rest()
    # (c) drain: every admitted request is released exactly once, and nothing stays in flight.
    while gate.in_flight:
        gate.release(min(gate.in_flight))
        gate.pump()
        gate.check_rest()
    assert Counter(gate.released) == Counter(x.id for x in gate.admitted)
    assert all(n == 1 for n in Counter(gate.released).values())
    assert gate.occupancy == Occupancy(gate.capacity)


def test_double_release_is_caught_by_occupancy() -> None:
    gate = ModelGate(lanes_of(lane("a")), {}, capacity=2, aging_s=10.0)
    gate.arrive("a", None)
    (waiter,) = gate.pump()
    gate.release(waiter.id)
    with pytest.raises(ValueError):
        gate.occupancy.release("a", None)


# -- targeted properties: reservations and the head-of-line rule -----------------------------


@st.composite
def reserved_states(draw: st.DrawFn) -> tuple[dict[str, LaneSpec], Occupancy]:
    """Lanes and an occupancy reachable while reservations fit: sum(max(f, r)) <= capacity."""
    specs, in_flight = [], {}
    for i in range(draw(st.integers(1, 4))):
        cap = draw(st.integers(1, 5))
        specs.append(lane(f"l{i}", cap=cap, reserved=draw(st.integers(0, cap))))
        in_flight[f"l{i}"] = draw(st.integers(0, cap))
    lanes = lanes_of(*specs)
    needed = sum(max(in_flight[n], s.reserved) for n, s in lanes.items())
    return lanes, Occupancy(needed + draw(st.integers(0, 3)), in_flight)


@given(reserved_states())
@settings(max_examples=300, deadline=None)
def test_a_lane_below_its_reservation_always_has_room(
    state: tuple[dict[str, LaneSpec], Occupancy],
) -> None:
    lanes, o = state
    for name, spec in lanes.items():
        if o.by_lane.get(name, 0) < spec.reserved:
            assert can_admit(spec, None, o, lanes)
        if can_admit(spec, None, o, lanes):
            # admitting keeps the reservations fitting
            after = o.admit(name, None)
            held = sum(max(after.by_lane.get(n, 0), s.reserved) for n, s in lanes.items())
            assert held <= o.capacity


@given(
    st.lists(st.sampled_from(["greedy", "polite", "anon", None]), min_size=1, max_size=12),
    st.integers(0, 2),
    st.integers(0, 2),
)
@settings(max_examples=300, deadline=None)
def test_first_waiter_whose_client_has_room_goes(
    owners: list[str | None], greedy_in_flight: int, polite_in_flight: int
) -> None:
    clients = {"greedy": client("greedy", cap=2), "polite": client("polite", cap=1)}
    o = Occupancy(64, {"batch": 0}, {"greedy": greedy_in_flight, "polite": polite_in_flight})
    queue = [w(i, "batch", owner) for i, owner in enumerate(owners)]
    expected = next((x for x in queue if client_has_room(clients.get(x.client or ""), o)), None)
    lanes = lanes_of(lane("batch", cap=64))
    assert next_to_admit({"batch": queue}, o, lanes, clients, 0.0, 10.0) == expected


# -- (d) priority at equal arrival -------------------------------------------------------------


@given(
    st.integers(0, 9),
    st.integers(1, 10),
    st.floats(0, 1e6),
    st.floats(0, 1e4),
    st.floats(0.01, 1e4) | st.just(math.inf),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_interactive_before_batch_that_arrived_at_the_same_time(
    batch_priority: int, gap: int, arrived: float, waited: float, aging: float, batch_first: bool
) -> None:
    lanes = lanes_of(lane("batch", batch_priority), lane("interactive", batch_priority + gap))
    b, i = (1, 2) if batch_first else (2, 1)
    queues = {
        "batch": [w(b, "batch", at=arrived)],
        "interactive": [w(i, "interactive", at=arrived)],
    }
    chosen = next_to_admit(queues, occ(1), lanes, {}, arrived + waited, aging)
    assert chosen is not None and chosen.lane == "interactive"


# -- (e) no starvation -------------------------------------------------------------------------


def saturate(
    capacity: int,
    aging: float,
    dp: int,
    service: int,
    gap: int,
    max_queue: int,
    t_batch: int,
    horizon: int,
) -> int | None:
    """Interactive arrivals every `gap` s forever; one batch waiter at `t_batch`.

    Integer clock, every request holds its slot `service` s. Returns when batch was admitted.
    """
    lanes = lanes_of(
        lane("interactive", dp, cap=capacity, max_queue=max_queue, queue_timeout_s=math.inf),
        lane("batch", 0, cap=capacity, queue_timeout_s=math.inf),
    )
    gate = ModelGate(lanes, {}, capacity=capacity, aging_s=aging)
    ends: dict[int, int] = {}
    batch = None
    for t in range(horizon + 1):
        gate.now = float(t)
        for done in [i for i, end in ends.items() if end <= t]:
            gate.release(done)
            del ends[done]
        if t % gap == 0:
            gate.arrive("interactive", None)
        if t == t_batch:
            batch = gate.arrive("batch", None)
        for admitted in gate.pump():
            ends[admitted.id] = t + service
            if admitted == batch:
                return t
    return None


def starvation_bound(capacity: int, aging: int, dp: int, service: int, max_queue: int) -> int:
    """Wait bound from the module docstring: after aging * dp nobody new overtakes the batch
    waiter; at most `max_queue` interactive waiters are ahead of it then, and `capacity` slots
    each admit one waiter per `service` s."""
    return aging * dp + math.ceil((max_queue + 1) / capacity) * service


@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(0, 15),
)
@settings(max_examples=150, deadline=None)
def test_batch_is_admitted_within_the_aging_bound(
    capacity: int, aging: int, dp: int, service: int, gap: int, max_queue: int, t_batch: int
) -> None:
    bound = starvation_bound(capacity, aging, dp, service, max_queue)
    admitted = saturate(capacity, aging, dp, service, gap, max_queue, t_batch, t_batch + bound + 1)
    assert admitted is not None
    assert admitted - t_batch <= bound


def test_batch_starves_without_aging_and_not_with_it() -> None:
    # 2 slots, 4 s per request, one interactive arrival per second: saturated for good.
    assert (
        saturate(2, math.inf, dp=10, service=4, gap=1, max_queue=5, t_batch=3, horizon=2000) is None
    )
    admitted = saturate(2, 10, dp=10, service=4, gap=1, max_queue=5, t_batch=3, horizon=2000)
    bound = starvation_bound(2, 10, 10, 4, 5)  # 100 + 3 * 4
    assert admitted is not None and 100 <= admitted - 3 <= bound


def test_the_service_mean_starts_at_the_first_sample_then_moves_a_tenth_of_the_way() -> None:
    assert service_mean(None, 4.0) == 4.0
    assert service_mean(4.0, 14.0) == pytest.approx(5.0)


@given(st.floats(0, 1e4), st.floats(0, 1e4))
def test_the_service_mean_stays_between_the_old_mean_and_the_new_sample(
    mean: float, held: float
) -> None:
    assert min(mean, held) - 1e-9 <= service_mean(mean, held) <= max(mean, held) + 1e-9
