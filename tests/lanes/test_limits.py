"""The adaptive limit controller (pure): bounds, floors, reaction, memory, idle, convergence.

Driven with a fake clock and a synthetic engine: chat TTFT = base x (1 + slowdown x k) with k
the lower-lane requests running, the shape llama-server's one-step batching gives
(docs/performance.md, "The engine's floor").
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lanes import limits
from gateway.lanes.limits import LaneLimit, LimitConfig, UpstreamLimits

BASE = 0.05
CONFIG = LimitConfig(ttft_ratio=1.3, chat_idle_s=30.0, baseline_ttft_s=BASE)


def _state(bound: int = 4, floor: int = 1, config: LimitConfig = CONFIG) -> UpstreamLimits:
    return limits.start(config, [limits.lane_limit("batch", bound, floor, bound)])


def _only(state: UpstreamLimits) -> LaneLimit:
    (entry,) = state.lanes
    return entry


def _sample(state: UpstreamLimits, now: float, ttft: float, running: int) -> UpstreamLimits:
    state, _ = limits.chat_sample(state, now, ttft, solo=running == 0, in_flight={"batch": running})
    return state


Event = tuple[str, float]
events = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "sample", "tick", "idle-tick"]),
        st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(
    events,
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=1, max_value=16),
)
def test_never_above_bound_nor_below_floor(
    ops: list[Event], cap: int, reserved: int, slots: int
) -> None:
    learned = LimitConfig(learn_min=2)  # the baseline is learned, not pinned
    state = limits.start(learned, [limits.lane_limit("batch", cap, reserved, slots)])
    entry = _only(state)
    assert 1 <= entry.floor <= entry.bound <= min(cap, slots) or entry.bound == 1
    now, running = 0.0, 0
    for op, value in ops:
        now += value
        if op == "arrive":
            state, _ = limits.chat_arrived(state, now)
        elif op == "sample":
            running = min(entry.bound, int(value) % (entry.bound + 1))
            state = _sample(state, now, 0.01 + value, running)
        else:
            state, _ = limits.tick(state, now, 1 if op == "tick" else 0)
        lane = _only(state)
        assert lane.floor <= lane.limit <= lane.bound
        assert lane.protected is None or lane.floor <= lane.protected <= lane.bound


def test_reacts_at_once_when_a_chat_suffers() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    before = _only(state).limit
    state, changes = limits.chat_sample(state, 1.0, BASE * 3, solo=False, in_flight={"batch": 2})
    assert _only(state).limit < before
    assert changes and changes[0].old == before and "over the target" in changes[0].reason


def test_waits_for_the_last_cut_to_drain_before_cutting_again() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)  # limit 2 (half of 4)
    state = _sample(state, 1.0, BASE * 3, running=4)  # 4 still running from before: no cut
    assert _only(state).limit == 2


def test_floor_is_kept_however_much_chats_suffer() -> None:
    """Chats a hundred times their baseline per batch request running: down to the floor,
    never below it, and (the engine's floor learned: x100 with one running) never up to where
    chats pay twice that."""
    state, _ = limits.chat_arrived(_state(floor=1), 0.0)
    seen = set()
    for second in range(1, 200):
        running = _only(state).limit
        state = _sample(state, float(second), BASE * 100 * running, running)
        seen.add(_only(state).limit)
    assert seen == {1, 2}  # at the floor, probing one more now and then
    assert "at their floor" in state.reason or "probing one more" in state.reason
    assert limits.target(state).floor == pytest.approx(100)


def test_at_the_floor_before_it_is_learned_the_reason_says_why() -> None:
    state, _ = limits.chat_arrived(_state(floor=1), 0.0)
    for second in range(1, 4):  # fewer samples than the floor needs
        state = _sample(state, float(second), BASE * 100, running=_only(state).limit)
    assert _only(state).limit == 1
    assert "at their floor: the target is below what this engine gives" in state.reason


def test_chats_equally_slow_whatever_batch_runs_let_batch_grow() -> None:
    """Holding batch at its floor buys chats nothing when they pay the same at every level:
    the target follows the engine's floor and batch grows to its bound."""
    state, _ = limits.chat_arrived(_state(floor=1), 0.0)
    for second in range(1, 200):
        state = _sample(state, float(second), BASE * 100, running=_only(state).limit)
    assert _only(state).limit == 4
    assert "below this engine's floor x100" in state.reason


def test_batch_takes_every_slot_when_no_chat_is_active() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    state = _sample(state, 1.0, BASE * 3, running=2)
    assert _only(state).limit < 4
    state, changes = limits.tick(state, 20.0, chats_in_flight=1)  # a chat still running
    assert _only(state).limit < 4 and not changes
    state, changes = limits.tick(state, 20.0 + 29.9, chats_in_flight=0)
    assert _only(state).limit < 4
    state, changes = limits.tick(state, 20.0 + 30.0, chats_in_flight=0)
    assert _only(state).limit == 4 and "no chat for 30 s" in changes[0].reason


def test_remembers_the_limit_that_protected_chats_and_applies_it_on_arrival() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    now = 0.0
    for _ in range(200):  # an engine where k = 3 breaches and k <= 2 does not
        now += 1.0
        running = _only(state).limit
        state = _sample(state, now, BASE * (1.0 + 0.15 * running), running)
    remembered = _only(state).protected
    assert remembered == 2
    state, _ = limits.tick(state, now + 60.0, chats_in_flight=0)
    assert _only(state).limit == 4
    state, changes = limits.chat_arrived(state, now + 61.0)
    assert _only(state).limit == remembered
    assert "protected chats last time" in changes[0].reason


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=0.02, max_value=0.5),  # each running batch request slows a chat by this
    st.integers(min_value=2, max_value=8),
)
def test_converges_on_a_synthetic_engine(slowdown: float, slots: int) -> None:
    """The limit settles where chats meet the target, and breaches about 1 in probe_after+1;
    on an engine where even one batch request breaches, it holds the floor."""
    state, _ = limits.chat_arrived(_state(bound=slots), 0.0)
    fits = int((CONFIG.ttft_ratio - 1) / slowdown + 1e-9)  # most batch running within target
    best = max(1, min(slots, fits))
    now, breaches, tail = 0.0, 0, 400
    for step in range(800):
        now += 1.0
        running = _only(state).limit
        ttft = BASE * (1.0 + slowdown * running)
        if step >= 800 - tail and ttft > CONFIG.ttft_ratio * BASE:
            breaches += 1
        state = _sample(state, now, ttft, running)
        if step >= 800 - tail:
            assert best <= _only(state).limit <= min(slots, best + 1)
    if fits >= 1:
        assert breaches <= tail / CONFIG.probe_after + 1


def test_learns_the_baseline_from_solo_chats_and_is_strict_before() -> None:
    config = LimitConfig(learn_min=3)
    state = limits.start(config, [limits.lane_limit("batch", 4, 0, 4)])
    assert limits.baseline(state)[0] is None
    state, _ = limits.chat_arrived(state, 0.0)
    state = _sample(state, 1.0, 0.2, running=2)
    value, where = limits.baseline(state)
    assert value == 0.2 and where.startswith("provisional")
    for second, ttft in enumerate((0.05, 0.06, 0.07), start=2):
        state = _sample(state, float(second), ttft, running=0)
    value, where = limits.baseline(state)
    assert value == 0.07 and "solo" in where


def test_a_slow_solo_chat_teaches_but_never_shrinks() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    before = _only(state).limit
    state, changes = limits.chat_sample(state, 1.0, BASE * 10, solo=True, in_flight={})
    assert _only(state).limit == before and not changes and state.solo == (BASE * 10,)


def test_a_cold_load_does_not_set_the_baseline() -> None:
    state = limits.start(LimitConfig(learn_min=5), [limits.lane_limit("batch", 4, 0, 4)])
    for second, ttft in enumerate((0.42, 0.05, 0.06, 0.05, 0.07, 0.06)):
        state = _sample(state, float(second), ttft, running=0)
    assert limits.baseline(state)[0] == 0.07


def test_samples_kept_are_bounded() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    for second in range(1000):
        state = _sample(state, float(second), BASE, running=second % 2)
    assert len(state.recent) <= limits.RECENT_MAX and len(state.solo) <= limits.LEARN_MAX


def test_nonsense_samples_are_ignored() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)
    for bad in (float("nan"), float("inf"), -1.0):
        after, changes = limits.chat_sample(state, 1.0, bad, solo=True, in_flight={})
        assert after == state and not changes


def test_reload_keeps_what_was_learned_within_new_bounds() -> None:
    state, _ = limits.chat_arrived(_state(), 0.0)  # limit 2 of 4
    state = _sample(state, 1.0, BASE, running=2)
    state, changes = limits.reconfigure(state, CONFIG, [limits.lane_limit("batch", 1, 0, 4)])
    assert _only(state).limit == 1 and _only(state).bound == 1
    assert changes and "policy reloaded" in changes[0].reason
    assert state.recent  # samples kept


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_config_refuses_a_ratio_that_cannot_be_met(ratio: float) -> None:
    with pytest.raises(ValueError, match="ttft_ratio"):
        LimitConfig(ttft_ratio=ratio)
