"""The adaptive limits when the SLO is below the engine's floor (pure, fake time).

A synthetic engine shaped like llama-server's one-step batching (docs/performance.md, "The
engine's floor"): with k lower requests running, a chat pays ``1 + jump + slope x k`` times its
baseline (``jump`` = 0 for k = 0), times a little noise. When ``1 + jump + slope`` is above the
SLO, no limit meets it; the controller learns that floor and holds chats just above it, letting
batch grow as far as chats stay there, instead of holding batch at its floor for nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lanes import limits
from gateway.lanes.cost_curve import FLOOR_TOLERANCE, FLOOR_WINDOW
from gateway.lanes.limits import LimitConfig, UpstreamLimits

BASE = 0.05
SLO = 1.3
CONFIG = LimitConfig(ttft_ratio=SLO, chat_idle_s=30.0, baseline_ttft_s=BASE)


@dataclass(frozen=True)
class Engine:
    jump: float  # what one step shared with any batch costs a chat
    slope: float  # what each batch request running adds
    noise: float  # each sample is multiplied by uniform(1, 1 + noise)

    def ratio(self, running: int) -> float:
        return 1.0 + (self.jump if running else 0.0) + self.slope * running

    def sample(self, running: int, rng: random.Random) -> float:
        return BASE * self.ratio(running) * rng.uniform(1.0, 1.0 + self.noise)

    def held_to(self) -> tuple[float, float]:
        """The effective target's range (the floor's p95 lies within the noise band); the low
        end is the SLO while the floor itself meets it (then it may never be measured)."""
        floor = self.ratio(1)
        low = SLO if floor <= SLO else floor * (1 + FLOOR_TOLERANCE)
        return low, max(SLO, floor * (1 + self.noise) * (1 + FLOOR_TOLERANCE))

    def limits_between(self, slots: int) -> tuple[int, int]:
        """The largest limit whose chats always meet the target, the smallest that never does."""
        low, high = self.held_to()
        fits = [k for k in range(1, slots + 1) if self.ratio(k) * (1 + self.noise) <= low]
        breaches = [k for k in range(1, slots + 1) if self.ratio(k) > high]
        return max(fits, default=1), min(breaches, default=slots)


def _run(
    state: UpstreamLimits, engine: Engine, steps: int, rng: random.Random, start: float = 0.0
) -> tuple[UpstreamLimits, list[int]]:
    """Chats one a second, batch always using all of its limit; the limits after each."""
    seen = []
    for step in range(steps):
        running = state.lanes[0].limit
        ttft = engine.sample(running, rng)
        state, _ = limits.chat_sample(state, start + step, ttft, False, {"batch": running})
        seen.append(state.lanes[0].limit)
    return state, seen


def _state(slots: int) -> UpstreamLimits:
    state = limits.start(CONFIG, [limits.lane_limit("batch", slots, 1, slots)])
    return limits.chat_arrived(state, 0.0)[0]


@settings(max_examples=40, deadline=None)
@given(
    st.floats(min_value=0.0, max_value=1.0),  # jump: above 0.3 the SLO is out of reach
    st.floats(min_value=0.0, max_value=0.1),
    st.floats(min_value=0.0, max_value=0.03),
    st.integers(min_value=2, max_value=8),
    st.randoms(use_true_random=False),
)
def test_converges_to_the_largest_limit_within_the_effective_target(
    jump: float, slope: float, noise: float, slots: int, rng: random.Random
) -> None:
    engine = Engine(jump, slope, noise)
    lowest, highest = engine.limits_between(slots)
    state, seen = _run(_state(slots), engine, 900, rng)
    assert all(1 <= limit <= slots for limit in seen)
    assert all(lowest <= limit <= highest for limit in seen[-300:]), (lowest, highest)
    held = limits.target(state)
    assert engine.held_to()[0] - 1e-9 <= held.ratio <= engine.held_to()[1] + 1e-9


@settings(max_examples=30, deadline=None)
@given(
    st.floats(min_value=0.35, max_value=1.0),
    st.floats(min_value=0.0, max_value=0.04),
    st.integers(min_value=4, max_value=8),
    st.randoms(use_true_random=False),
)
def test_out_of_reach_does_not_stick_at_the_floor(
    jump: float, slope: float, slots: int, rng: random.Random
) -> None:
    """One batch request already costs chats more than the SLO, two and three cost them
    within the tolerance of that: batch runs at 3 or more, and the reason says why."""
    engine = Engine(jump, slope, 0.01)
    state, seen = _run(_state(slots), engine, 600, rng)
    assert min(seen[-200:]) >= 3
    held = limits.target(state)
    assert held.out_of_reach and held.floor is not None
    assert held.floor <= engine.ratio(1) * 1.01 + 1e-9
    assert "below this engine's floor" in state.reason


@settings(max_examples=20, deadline=None)
@given(st.floats(min_value=0.4, max_value=1.0), st.randoms(use_true_random=False))
def test_the_floor_follows_a_change_of_engine(jump: float, rng: random.Random) -> None:
    """A slow engine, then a fast one (the SLO in reach again), then a slow one again: the
    floor estimate follows each within a window, and the limit with it."""
    slow, fast = Engine(jump, 0.3, 0.01), Engine(0.0, 0.02, 0.01)
    state, _ = _run(_state(4), slow, 300, rng)
    assert limits.target(state).out_of_reach
    state, seen = _run(state, fast, 300, rng, start=300.0)
    held = limits.target(state)
    assert not held.out_of_reach and held.ratio == SLO and seen[-1] == 4
    state, seen = _run(state, slow, 400, rng, start=600.0)
    held = limits.target(state)
    assert held.out_of_reach and held.floor is not None
    assert abs(held.floor - slow.ratio(1)) <= 0.02 * slow.ratio(1)
    assert max(seen[-100:]) <= 2


def test_a_minority_of_huge_chats_does_not_relax_the_target() -> None:
    """The attacker's side: one chat in four with a huge prompt (x100 whatever batch runs) on
    an engine whose floor meets the SLO. The target stays the SLO: a few clients' slow chats
    do not open the gate for batch against everybody else's."""
    engine = Engine(0.0, 0.1, 0.0)
    state, rng = _state(4), random.Random(7)
    for step in range(400):
        running = state.lanes[0].limit
        ttft = BASE * 100 if step % 4 == 0 else engine.sample(running, rng)
        state, _ = limits.chat_sample(state, float(step), ttft, False, {"batch": running})
    held = limits.target(state)
    assert held.ratio == SLO and not held.out_of_reach
    assert state.lanes[0].limit <= 3  # x1.4 at 4 breaches the SLO


def test_in_reach_the_reasons_name_the_slo_and_out_of_reach_the_effective_target() -> None:
    state, _ = _run(_state(4), Engine(0.0, 0.1, 0.0), 100, random.Random(1))
    assert "effective" not in state.reason and "1.3 x baseline" in state.reason
    state, _ = _run(_state(4), Engine(0.5, 0.02, 0.0), 200, random.Random(1))
    assert "the effective target" in state.reason and "floor x1.52" in state.reason


def test_a_reload_keeps_the_learned_floor() -> None:
    state, _ = _run(_state(4), Engine(0.5, 0.02, 0.0), 100, random.Random(3))
    learned = limits.target(state)
    assert learned.out_of_reach
    fresh = [limits.lane_limit("batch", 3, 1, 4)]
    reloaded, _ = limits.reconfigure(state, CONFIG, fresh)
    assert limits.target(reloaded) == learned and reloaded.lanes[0].limit <= 3


def test_a_burst_of_huge_prompt_chats_does_not_relax_the_target_for_good() -> None:
    """The attacker's side, a burst rather than a minority: one client's FLOOR_WINDOW
    huge-prompt chats in a row while batch runs at its floor. Chats that follow, with more
    batch running, are much faster than that "floor": it is measured again, and chats are held
    as before the burst (before the fix, to what two batch requests cost them, for good: the
    relaxed target held the controller above the floor, which was never measured again)."""
    engine = Engine(0.0, 0.2, 0.0)  # x1.2 beside one batch request, x1.4 beside two
    state, rng = _state(4), random.Random(7)
    state, seen = _run(state, engine, 100, rng)
    before = limits.target(state)
    assert before.floor is not None and abs(before.floor - engine.ratio(1)) < 1e-9
    assert seen[-1] == 1
    for step in range(FLOOR_WINDOW):
        state, _ = limits.chat_sample(state, 100.0 + step, BASE * 50, False, {"batch": 1})
    state, seen = _run(state, engine, 300, rng, start=200.0)
    assert limits.target(state) == before
    assert sorted(seen[-100:])[50] == 1  # back at 1, but for a probe to 2 now and then
