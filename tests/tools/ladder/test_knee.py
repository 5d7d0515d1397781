"""Knee detection on synthetic rung data: each rule, noisy ladders, ladders with no knee."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tools.ladder.knee import (
    ERROR_RATE,
    THROUGHPUT,
    TTFT_RATIO,
    KneeRules,
    RungPoint,
    find_knee,
    knee_at,
)


def ladder(*rungs: tuple[int, float | None, float, float]) -> list[RungPoint]:
    return [RungPoint(c, ttft, err, rps) for c, ttft, err, rps in rungs]


def test_ttft_ratio_fires_on_first_rung_past_three_times_rung_one() -> None:
    rungs = ladder(
        (1, 0.100, 0, 1.6),
        (2, 0.150, 0, 2.6),
        (4, 0.290, 0, 4.0),  # 2.9x: not yet
        (8, 0.310, 0, 6.0),  # 3.1x: the knee, though throughput still grows
        (16, 2.0, 0, 6.1),
    )
    knee = find_knee(rungs)
    assert knee is not None
    assert (knee.concurrency, knee.index, knee.rule, knee.rules) == (
        8,
        3,
        TTFT_RATIO,
        (TTFT_RATIO,),
    )
    assert "3.1x" in knee.detail


def test_error_rate_above_one_percent_fires_even_on_rung_one() -> None:
    knee = find_knee(ladder((1, 0.1, 0.02, 1.0), (2, 0.1, 0, 2.0)))
    assert knee is not None and (knee.concurrency, knee.rule) == (1, ERROR_RATE)


def test_exactly_one_percent_errors_is_not_a_knee() -> None:
    assert find_knee(ladder((1, 0.1, 0.01, 1.0), (2, 0.1, 0.01, 2.0))) is None


def test_throughput_gain_under_ten_percent_fires() -> None:
    rungs = ladder((1, 0.1, 0, 1.0), (2, 0.12, 0, 1.9), (4, 0.14, 0, 2.05), (8, 0.2, 0, 2.1))
    knee = find_knee(rungs)
    assert knee is not None and (knee.concurrency, knee.rule) == (4, THROUGHPUT)
    assert "+8%" in knee.detail


def test_every_rule_that_fired_is_named_in_order() -> None:
    knee = find_knee(ladder((1, 0.1, 0, 2.0), (2, 0.5, 0.2, 1.0)))
    assert knee is not None
    assert knee.rules == (TTFT_RATIO, ERROR_RATE, THROUGHPUT)


def test_no_knee_when_the_ladder_scales() -> None:
    rungs = ladder((1, 0.1, 0, 1.0), (2, 0.11, 0, 1.9), (4, 0.13, 0, 3.6), (8, 0.2, 0.005, 6.5))
    assert find_knee(rungs) is None


def test_noisy_ladder_under_every_limit_has_no_knee() -> None:
    # p95 jitters up and down (2.6x, then 1.4x, then 2.9x) and throughput gains vary, but
    # no rung crosses a limit: noise alone must not make a knee.
    rungs = ladder(
        (1, 0.200, 0.0, 1.00),
        (2, 0.520, 0.0, 1.30),
        (4, 0.280, 0.004, 1.50),
        (8, 0.580, 0.0, 1.70),
        (16, 0.590, 0.0099, 1.88),
    )
    assert find_knee(rungs) is None


def test_noisy_ladder_knee_is_the_first_crossing_not_the_worst() -> None:
    rungs = ladder(
        (1, 0.2, 0, 1.0),
        (2, 0.65, 0, 1.5),  # 3.25x: first crossing
        (4, 0.3, 0, 2.2),  # recovers
        (8, 3.0, 0, 2.3),  # far worse
    )
    knee = find_knee(rungs)
    assert knee is not None and knee.concurrency == 2


def test_a_rung_with_no_output_counts_as_infinitely_slow() -> None:
    knee = find_knee(ladder((1, 0.1, 0, 1.0), (2, None, 0, 2.5)))
    assert knee is not None and knee.rule == TTFT_RATIO and "no output" in knee.detail


def test_a_first_rung_with_no_output_cannot_anchor_the_ratio() -> None:
    # Nothing to compare with: only the other rules can fire.
    assert find_knee(ladder((1, None, 0, 1.0), (2, 0.5, 0, 2.0))) is None


def test_configurable_rules() -> None:
    rungs = ladder((1, 0.1, 0, 1.0), (2, 0.25, 0.03, 1.5))
    assert find_knee(rungs) is not None
    relaxed = KneeRules(ttft_ratio=5, max_error_rate=0.05, min_throughput_gain=0.4)
    assert find_knee(rungs, relaxed) is None
    strict = KneeRules(ttft_ratio=2, max_error_rate=0.05, min_throughput_gain=0.4)
    knee = find_knee(rungs, strict)
    assert knee is not None and knee.rule == TTFT_RATIO


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttft_ratio": 1.0},
        {"max_error_rate": -0.1},
        {"max_error_rate": 1.0},
        {"min_throughput_gain": -1},
        {"min_throughput_gain": -2},
    ],
)
def test_invalid_rules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        KneeRules(**kwargs)


def test_a_negative_gain_tolerates_a_small_drop() -> None:
    rungs = ladder((1, 0.1, 0, 1.0), (2, 0.11, 0, 0.9), (4, 0.12, 0, 0.7))
    tolerant = KneeRules(min_throughput_gain=-0.2)
    knee = find_knee(rungs, tolerant)
    assert knee is not None and (knee.concurrency, knee.rule) == (4, THROUGHPUT)


def test_knee_at_judges_one_rung_for_an_early_stop() -> None:
    rungs = ladder((1, 0.1, 0, 1.0), (2, 0.12, 0, 1.9), (4, 0.5, 0, 2.0))
    assert knee_at(rungs, 1, KneeRules()) is None
    knee = knee_at(rungs, 2, KneeRules())
    assert knee is not None and knee.index == 2


point = st.builds(
    RungPoint,
    concurrency=st.integers(1, 64),
    p95_ttft_s=st.one_of(st.none(), st.floats(0.001, 100)),
    error_rate=st.floats(0, 1),
    throughput_rps=st.floats(0, 1000),
)


@given(st.lists(point, min_size=1, max_size=8))
def test_the_knee_is_the_first_rung_any_rule_flags(rungs: list[RungPoint]) -> None:
    knee = find_knee(rungs)
    flagged = [i for i in range(len(rungs)) if knee_at(rungs, i, KneeRules()) is not None]
    assert (knee.index if knee else None) == (flagged[0] if flagged else None)
    if knee is not None:
        assert knee.concurrency == rungs[knee.index].concurrency
