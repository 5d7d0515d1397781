"""Preemption decisions (gateway.lanes.preempt): the rules on plain values, then properties over
random gates drawn by hypothesis (never a request that may not be preempted, never more than
needed, never one at MAX_RERUNS, the youngest first), and the thrown-tokens estimate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lanes.admission import Occupancy, Waiter, next_to_admit
from gateway.lanes.preempt import (
    MAX_RERUNS,
    Running,
    Situation,
    protected_lanes,
    thrown_tokens,
    victims,
)
from gateway.policy.spec import LaneSpec

CHAT = LaneSpec("chat", 100, 4)
BATCH = LaneSpec("batch", 10, 4, preemptible=True)
BULK = LaneSpec("bulk", 5, 4, preemptible=True)
LANES = {lane.name: lane for lane in (CHAT, BATCH, BULK)}
AGING = 10.0


def run(id: int, lane: str = "batch", started: float = 0.0, **kw: object) -> Running:
    fields: dict[str, object] = {"preemptions": 0, "preemptible": True, **kw}
    return Running(id, lane, None, started, **fields)  # type: ignore[arg-type]


def situation(
    running: Sequence[Running],
    waiting: int = 0,
    capacity: int = 4,
    lanes: Mapping[str, LaneSpec] = LANES,
) -> Situation:
    by_lane: dict[str, int] = {}
    for r in running:
        by_lane[r.lane] = by_lane.get(r.lane, 0) + 1
    queue = [Waiter(1000 + i, "chat", None, 50.0) for i in range(waiting)]
    return Situation(lanes, {}, Occupancy(capacity, by_lane), {"chat": queue}, 60.0, AGING)


def test_a_waiting_chat_takes_the_youngest_preemptible_slot() -> None:
    running = [run(1, started=1.0), run(2, started=3.0), run(3, started=2.0), run(4, "chat")]
    assert victims(running, situation(running, waiting=1)) == (2,)


def test_no_victim_while_a_slot_is_free_or_nobody_waits() -> None:
    running = [run(1), run(2), run(3)]
    assert victims(running, situation(running, waiting=1)) == ()  # 3 of 4: the chat fits
    full = [*running, run(4)]
    assert victims(full, situation(full, waiting=0)) == ()


def test_never_streamed_nor_at_max_reruns_nor_a_top_lane() -> None:
    running = [
        run(1, preemptible=False),  # streamed, or its answer started
        run(2, preemptions=MAX_RERUNS),
        run(3, "chat"),
        run(4, preempting=True),  # already on its way out: counts as freed
    ]
    assert victims(running, situation(running, waiting=1)) == ()
    assert victims(running, situation(running, waiting=2)) == ()  # nobody left to cut


def test_a_chat_held_by_its_own_cap_preempts_nothing() -> None:
    lanes = {**LANES, "chat": LaneSpec("chat", 100, 1)}
    running = [run(1, "chat"), run(2), run(3), run(4)]
    assert victims(running, situation(running, waiting=1, lanes=lanes)) == ()


def test_same_priorities_protect_nobody() -> None:
    flat = {"a": LaneSpec("a", 1, 4, preemptible=True), "b": LaneSpec("b", 1, 4)}
    assert protected_lanes(flat) == frozenset()
    running = [run(i, "a") for i in range(4)]
    assert victims(running, situation(running, waiting=1, lanes=flat)) == ()


def test_a_lane_over_its_cap_while_a_chat_runs_loses_the_excess() -> None:
    lanes = {**LANES, "batch": LaneSpec("batch", 10, 2, preemptible=True)}  # shrank to 2
    running = [run(1, started=1.0), run(2, started=2.0), run(3, started=3.0), run(4, "chat")]
    assert victims(running, situation(running, lanes=lanes)) == (3,)
    idle = running[:3]  # no chat in flight or waiting: nothing to protect
    assert victims(idle, situation(idle, lanes=lanes)) == ()


def test_thrown_tokens_estimate() -> None:
    assert thrown_tokens(100, thrown_s=1.0, final_s=2.0, preemptions=1, max_tokens=256) == 50
    assert thrown_tokens(100, thrown_s=10.0, final_s=1.0, preemptions=2, max_tokens=256) == 512
    assert thrown_tokens(None, 1.0, 2.0, 1, 256) == 0  # no rate to go by
    assert thrown_tokens(100, 1.0, 0.0, 1, 256) == 0
    assert thrown_tokens(100, 0.0, 2.0, 0, 256) == 0


# -- properties ---------------------------------------------------------------------------------

runnings = st.lists(
    st.tuples(
        st.sampled_from(["chat", "batch", "bulk"]),
        st.floats(0, 100),
        st.integers(0, MAX_RERUNS + 1),
        st.booleans(),
        st.booleans(),
    ),
    max_size=10,
)


@st.composite
def gates(draw: st.DrawFn) -> tuple[list[Running], Situation]:
    drawn = draw(runnings)
    running = [
        Running(i, lane, None, started, reruns, preemptible, preempting and lane != "chat")
        for i, (lane, started, reruns, preemptible, preempting) in enumerate(drawn)
    ]
    caps = {name: draw(st.integers(1, 6)) for name in LANES}
    lanes = {
        name: LaneSpec(name, spec.priority, caps[name], preemptible=spec.preemptible)
        for name, spec in LANES.items()
    }
    capacity = draw(st.integers(max(1, len(running) - 2), len(running) + 2))
    return running, situation(running, draw(st.integers(0, 4)), capacity, lanes)


def _needed(running: Sequence[Running], s: Situation) -> int:
    """Chats that could go if every lower request vanished, plus the lower lanes' excess."""
    chats = sum(1 for r in running if r.lane == "chat")
    room = min(s.lanes["chat"].max_concurrency - chats, s.occupancy.capacity - chats)
    excess = sum(
        max(0, s.occupancy.by_lane.get(name, 0) - lane.max_concurrency)
        for name, lane in s.lanes.items()
        if name != "chat"
    )
    return max(0, min(len(s.queues["chat"]), room)) + excess


@settings(max_examples=400, deadline=None)
@given(gates())
def test_victims_are_only_allowed_and_never_more_than_needed(
    drawn: tuple[list[Running], Situation],
) -> None:
    running, s = drawn
    chosen = victims(running, s)
    by_id = {r.id: r for r in running}
    assert len(set(chosen)) == len(chosen)
    for vid in chosen:
        r = by_id[vid]
        assert r.preemptible and not r.preempting and r.preemptions < MAX_RERUNS
        assert r.lane != "chat"
    assert len(chosen) <= _needed(running, s)


@settings(max_examples=400, deadline=None)
@given(gates())
def test_youngest_first_among_the_waiters_victims(drawn: tuple[list[Running], Situation]) -> None:
    running, s = drawn
    if any(s.occupancy.by_lane.get(n, 0) > lane.max_concurrency for n, lane in s.lanes.items()):
        return  # over a cap: those victims are the youngest of their own lane (unit test above)
    chosen = set(victims(running, s))
    eligible = [
        r
        for r in running
        if r.lane != "chat" and r.preemptible and not r.preempting and r.preemptions < MAX_RERUNS
    ]
    for r in eligible:
        if r.id not in chosen:
            assert all(
                (r.started_at, r.id) < (by.started_at, by.id) for by in running if by.id in chosen
            )


def _chats_admitted(running: Sequence[Running], s: Situation, gone: set[int]) -> int:
    occupancy = s.occupancy
    for r in running:
        if r.id in gone:
            occupancy = occupancy.release(r.lane, None)
    queue, admitted = list(s.queues["chat"]), 0
    while (w := next_to_admit({"chat": queue}, occupancy, s.lanes, {}, s.now, AGING)) is not None:
        queue.remove(w)
        occupancy = occupancy.admit("chat", None)
        admitted += 1
    return admitted


@settings(max_examples=300, deadline=None)
@given(gates())
def test_each_victim_lets_one_more_chat_in(drawn: tuple[list[Running], Situation]) -> None:
    running, s = drawn
    if any(s.occupancy.by_lane.get(n, 0) > lane.max_concurrency for n, lane in s.lanes.items()):
        return
    leaving = {r.id for r in running if r.preempting}
    chosen = set(victims(running, s))
    before = _chats_admitted(running, s, leaving)
    assert _chats_admitted(running, s, leaving | chosen) == before + len(chosen)


def test_a_lane_no_longer_preemptible_after_a_reload_is_left_alone() -> None:
    # Admitted (and armed by the flow) while batch said `preemptible: true`; the reload said
    # false: the operator's word applies to requests already running, too.
    lanes = {**LANES, "batch": LaneSpec("batch", 10, 4)}
    running = [run(1, started=1.0), run(2, started=2.0), run(3, "bulk"), run(4, "chat")]
    assert victims(running, situation(running, waiting=1, lanes=lanes)) == (3,)
    assert victims(running, situation(running, waiting=2, lanes=lanes)) == (3,)


def test_no_victim_when_an_aged_lower_waiter_would_take_the_slot() -> None:
    # A batch request that has waited long enough outranks the chat (priority 10 + 1000 s
    # waited / 10 s aging = 110 > 100; a re-queued request ages from its first arrival): the
    # slot a cut frees goes to it, not to the chat, so a cut throws work away for no chat.
    lanes = {**LANES, "batch": LaneSpec("batch", 10, 8, preemptible=True)}
    running = [run(1, started=1.0), run(2, started=2.0), run(3, started=3.0), run(4, "chat")]
    s = situation(running, waiting=1, lanes=lanes)
    aged = Waiter(7, "batch", None, s.now - 1000.0)
    s = Situation(lanes, {}, s.occupancy, {**s.queues, "batch": [aged]}, s.now, AGING)
    assert victims(running, s) == ()
