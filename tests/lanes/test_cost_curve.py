"""The cost curve (pure): what chats pay per number of lower requests running, and the engine's
floor read from it: bounded in memory and in value, not set by a cold start or a minority of
huge-prompt chats, unknown until the floor itself was measured, following a change of engine.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.lanes.cost_curve import (
    FLOOR_HORIZON,
    FLOOR_MIN,
    FLOOR_WINDOW,
    CostCurve,
    floor_ttft,
    record,
)


def _fed(samples: list[tuple[int, float]], cap: int = 8) -> CostCurve:
    curve = CostCurve()
    for level, ttft in samples:
        curve = record(curve, level, ttft, cap)
    return curve


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=-2, max_value=40), st.floats(min_value=0, max_value=1e6)),
        max_size=400,
    ),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=1, max_value=4),
)
def test_memory_and_estimate_are_bounded(
    samples: list[tuple[int, float]], cap: int, floor_level: int
) -> None:
    curve = _fed(samples, cap)
    assert len(curve.levels) <= cap
    assert all(len(window) <= FLOOR_WINDOW for window in curve.levels)
    floor = floor_ttft(curve, floor_level)
    kept = [ttft for level, ttft in samples if level >= 1]
    if floor is not None:
        assert min(kept) <= floor <= max(kept)


def test_unknown_until_the_floor_itself_was_measured() -> None:
    above = _fed([(3, 0.05)] * 50)  # plenty seen, but only above the floor
    assert floor_ttft(above, floor_level=1) is None
    few = _fed([(1, 0.05)] * (FLOOR_MIN - 1))
    assert floor_ttft(few, floor_level=1) is None
    assert floor_ttft(record(few, 1, 0.05, 8), floor_level=1) == 0.05


def test_nonsense_and_solo_samples_are_not_recorded() -> None:
    curve = CostCurve()
    for level, ttft in ((0, 0.1), (1, float("nan")), (1, float("inf")), (1, -1.0)):
        curve = record(curve, level, ttft, 8)
    assert curve == CostCurve()


def test_a_cold_start_and_a_minority_of_huge_chats_do_not_set_the_floor() -> None:
    """The attacker's side: a cold model load first, then one chat in four with a huge prompt
    (x100): the floor is what the other chats pay, not what the huge ones do."""
    samples = [(1, 5.0)] + [(1, 5.0 if i % 4 == 0 else 0.06) for i in range(1, 40)]
    assert floor_ttft(_fed(samples), floor_level=1) == 0.06


def test_levels_up_to_the_floor_level_count_as_the_floor() -> None:
    """Two lanes at floor 1 each: one or two requests running is the lowest the controller can
    hold, and both count; three does not teach the floor."""
    curve = _fed([(1, 0.05)] * 4 + [(2, 0.06)] * 4 + [(3, 0.5)] * 20)
    assert floor_ttft(curve, floor_level=2) == 0.06
    assert floor_ttft(curve, floor_level=1) is None


def test_follows_an_engine_that_got_slower_at_the_floor() -> None:
    before = _fed([(1, 0.05)] * 100)
    after = before
    for _ in range(FLOOR_WINDOW):
        after = record(after, 1, 0.09, 8)
    assert floor_ttft(before, 1) == 0.05 and floor_ttft(after, 1) == 0.09


def test_a_faster_level_above_lowers_the_floor_and_stale_ones_expire() -> None:
    """A level above that gives chats a little less (within the tolerance: noise, or an engine
    a little faster) lowers the estimate where the controller runs now; good samples there
    from before a slowdown stop counting after FLOOR_HORIZON loaded chats."""
    curve = _fed([(1, 0.066)] * FLOOR_MIN + [(3, 0.062)] * FLOOR_MIN)
    assert floor_ttft(curve, floor_level=1) == 0.062
    for _ in range(FLOOR_HORIZON):
        curve = record(curve, 1, 0.12, 8)
    assert floor_ttft(curve, floor_level=1) == 0.12


def test_a_floor_contradicted_by_more_load_is_measured_again() -> None:
    """More batch running yet chats much faster: the floor's samples are not what the engine
    gives now (it got faster, or they came from a burst of one client's huge-prompt chats, which
    no sample at the floor would ever replace while the target they relaxed holds the
    controller above it). Unknown: chats are held to the SLO until the floor is measured again."""
    curve = _fed([(1, 0.12)] * FLOOR_MIN + [(1, 5.0)] * FLOOR_WINDOW + [(2, 0.18)] * FLOOR_MIN)
    assert floor_ttft(curve, floor_level=1) is None
    for _ in range(FLOOR_WINDOW):  # measured again at the floor
        curve = record(curve, 1, 0.12, 8)
    assert floor_ttft(curve, floor_level=1) == 0.12
