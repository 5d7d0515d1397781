"""Rolling percentiles: accuracy against sorted lists, window edges, bounded memory."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.observe.rolling import (
    EMPTY,
    MAX_TRACKED,
    MIN_TRACKED,
    LogHistogram,
    RollingPercentiles,
    RollingRegistry,
    Summary,
)

ERROR = 0.01
LATENCY = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-5, max_value=3600, allow_nan=False, allow_infinity=False),
)
QUANTILES = (0.5, 0.95, 0.99)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_close(estimate: float | None, exact: float, error: float = ERROR) -> None:
    assert estimate is not None
    assert abs(estimate - exact) <= error * exact * (1 + 1e-9), (estimate, exact)


def assert_summary(summary: Summary, values: list[float], error: float = ERROR) -> None:
    assert summary.count == len(values)
    if not values:
        assert summary == EMPTY
        return
    assert summary.max == max(values)
    for q, got in zip(QUANTILES, (summary.p50, summary.p95, summary.p99), strict=True):
        assert_close(got, nearest_rank(values, q), error)


# -- LogHistogram -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(LATENCY, min_size=1, max_size=300),
    q=st.floats(min_value=0.0, max_value=1.0),
    error=st.sampled_from([0.001, 0.01, 0.05]),
)
def test_quantile_within_relative_error_of_nearest_rank(
    values: list[float], q: float, error: float
) -> None:
    histogram = LogHistogram(error)
    for value in values:
        histogram.add(value)
    assert_close(histogram.quantile(q), nearest_rank(values, q), error)
    assert_summary(histogram.summary(), values, error)


@settings(max_examples=100, deadline=None)
@given(left=st.lists(LATENCY, max_size=50), right=st.lists(LATENCY, max_size=50))
def test_merge_equals_adding_everything(left: list[float], right: list[float]) -> None:
    a, b, both = LogHistogram(), LogHistogram(), LogHistogram()
    for value in left:
        a.add(value)
        both.add(value)
    for value in right:
        b.add(value)
        both.add(value)
    a.merge(b)
    assert a.summary() == both.summary()
    assert_summary(a.summary(), left + right)


def test_zero_negative_and_tiny_values() -> None:
    histogram = LogHistogram()
    for value in (0.0, -0.5, MIN_TRACKED / 10):
        histogram.add(value)
    assert histogram.summary() == Summary(count=3, p50=0.0, p95=1e-10, p99=1e-10, max=1e-10)
    histogram.add(2.0)
    assert histogram.quantile(1.0) == 2.0 and histogram.quantile(0.0) == 0.0


def test_values_above_the_tracked_range_report_the_exact_max() -> None:
    histogram = LogHistogram()
    histogram.add(MAX_TRACKED * 10)
    assert histogram.quantile(0.5) == MAX_TRACKED * 10  # clamped to the exact min/max


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_samples_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        LogHistogram().add(bad)


@pytest.mark.parametrize("error", [0.0, 1.0, -0.1])
def test_relative_error_is_validated(error: float) -> None:
    with pytest.raises(ValueError):
        LogHistogram(error)


def test_merge_rejects_a_different_error() -> None:
    with pytest.raises(ValueError):
        LogHistogram(0.01).merge(LogHistogram(0.02))


def test_bucket_count_is_bounded_by_the_value_range() -> None:
    histogram = LogHistogram(ERROR)
    rng = random.Random(7)
    for _ in range(100_000):
        histogram.add(10 ** rng.uniform(-5, math.log10(3600)))
    gamma = (1 + ERROR) / (1 - ERROR)
    assert histogram.bucket_count <= math.ceil(math.log(3600 / 1e-5) / math.log(gamma)) + 2
    assert histogram.count == 100_000
    for extreme in (MIN_TRACKED, MAX_TRACKED, 1e300, 1e-300, 0.0):
        histogram.add(extreme)
    worst = math.ceil(math.log(MAX_TRACKED / MIN_TRACKED) / math.log(gamma)) + 2
    assert histogram.bucket_count <= worst


# -- RollingPercentiles windows ---------------------------------------------------------------

SAMPLES = st.lists(
    st.tuples(st.floats(min_value=0, max_value=40, allow_nan=False), LATENCY),
    max_size=120,
)


def _timeline(steps: list[tuple[float, float]], start: float) -> list[tuple[float, float]]:
    """Turn (time step, value) pairs into (timestamp, value) on a monotonic clock."""
    now, out = start, []
    for step, value in steps:
        now += step
        out.append((now, value))
    return out


@settings(max_examples=200, deadline=None)
@given(
    steps=SAMPLES,
    start=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    wait=st.floats(min_value=0, max_value=1000, allow_nan=False),
    window=st.sampled_from([1.0, 10.0, 60.0, 300.0, 900.0, 45.5]),
    slice_s=st.sampled_from([1.0, 10.0, 15.0]),
)
def test_window_holds_exactly_the_samples_of_its_slices(
    steps: list[tuple[float, float]], start: float, wait: float, window: float, slice_s: float
) -> None:
    series = RollingPercentiles(horizon_s=900, slice_s=slice_s)
    timeline = _timeline(steps, start)
    for t, value in timeline:
        series.add(value, t)
    now = (timeline[-1][0] if timeline else start) + wait
    window = max(window, slice_s)
    now_slice = math.floor(now / slice_s)
    oldest = now_slice - math.ceil(window / slice_s)
    inside = [v for t, v in timeline if oldest < math.floor(t / slice_s) <= now_slice]
    assert_summary(series.snapshot(now, window), inside)


@settings(max_examples=100, deadline=None)
@given(
    age=st.floats(min_value=0, max_value=2000, allow_nan=False),
    now=st.floats(min_value=2000, max_value=1e7, allow_nan=False),
)
def test_window_edges_at_slice_granularity(age: float, now: float) -> None:
    """With window = k slices: age <= window - slice is in, age >= window is out."""
    series = RollingPercentiles(horizon_s=900, slice_s=10)
    series.add(1.0, now - age)
    count = series.snapshot(now, 60).count
    if age <= 50:
        assert count == 1
    if age >= 60:
        assert count == 0


def test_standard_windows() -> None:
    series = RollingPercentiles()
    for minute in range(20):  # one sample per minute, value = minute
        series.add(float(minute), minute * 60.0)
    now = 19 * 60.0
    assert series.snapshot(now, 60).count == 1
    assert series.snapshot(now, 300).count == 5
    assert series.snapshot(now, 900).count == 15
    assert series.snapshot(now, 900).max == 19.0


def test_snapshot_validates_window() -> None:
    series = RollingPercentiles(horizon_s=900, slice_s=10)
    for window in (0.0, -1.0, 901.0):
        with pytest.raises(ValueError):
            series.snapshot(0.0, window)
    with pytest.raises(ValueError):
        RollingPercentiles(horizon_s=5, slice_s=10)


def test_late_sample_joins_the_newest_slice() -> None:
    series = RollingPercentiles(horizon_s=900, slice_s=10)
    series.add(1.0, 100.0)
    series.add(2.0, 95.0)  # clock skew between callers: counted in the slice of t=100
    assert series.slice_count == 1
    assert series.snapshot(100.0, 10).count == 2


def test_memory_stays_bounded_however_many_samples() -> None:
    series = RollingPercentiles(horizon_s=900, slice_s=10)
    rng = random.Random(3)
    t = 0.0
    for _ in range(200_000):
        t += rng.expovariate(20.0)  # ~20 samples/s for ~3 hours
        series.add(rng.lognormvariate(-1, 1.5), t)
    assert series.slice_count <= 90
    gamma = (1 + ERROR) / (1 - ERROR)
    per_slice = math.ceil(math.log(MAX_TRACKED / MIN_TRACKED) / math.log(gamma)) + 2
    assert series.bucket_count <= 90 * per_slice
    assert series.snapshot(t, 900).count <= 20 * 900 * 1.5
    assert series.bucket_count < 90 * 400  # real latencies use few buckets


def test_everything_expires_after_the_horizon() -> None:
    series = RollingPercentiles(horizon_s=900, slice_s=10)
    series.add(1.0, 0.0)
    assert not series.is_empty(899.0)
    assert series.is_empty(900.0)
    assert series.snapshot(900.0, 900) == EMPTY
    assert series.slice_count == 0


# -- RollingRegistry --------------------------------------------------------------------------


def test_registry_keeps_series_apart_and_prunes_stale_ones() -> None:
    registry = RollingRegistry(horizon_s=60, slice_s=10)
    registry.add(("ttft", "interactive", "mac-1"), 0.2, 0.0)
    registry.add(("ttft", "batch", "mac-1"), 5.0, 30.0)
    registry.add(("ttft", "interactive", "mac-1"), 0.4, 30.0)
    assert registry.keys() == [("ttft", "interactive", "mac-1"), ("ttft", "batch", "mac-1")]
    assert len(registry) == 2 and set(registry) == set(registry.keys())
    interactive = registry.snapshot(("ttft", "interactive", "mac-1"), 30.0, 60)
    assert interactive.count == 2 and interactive.max == 0.4
    assert registry.snapshot(("ttft", "batch", "mac-1"), 30.0, 60).count == 1
    assert registry.snapshot(("ttft", "nope"), 30.0, 60) == EMPTY
    registry.add(("gap", "batch", "mac-2"), 1.0, 45.0)
    assert registry.prune(60.0) == 0  # the t=0 sample expired, but t=30 ones remain
    assert registry.snapshot(("ttft", "interactive", "mac-1"), 60.0, 60).count == 1
    assert registry.prune(90.0) == 2
    assert registry.keys() == [("gap", "batch", "mac-2")]


def test_registry_validates_options_once() -> None:
    with pytest.raises(ValueError):
        RollingRegistry(horizon_s=10, slice_s=0)
    with pytest.raises(ValueError):
        RollingRegistry(relative_error=2.0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 200), st.floats(0.001, 5)),
        max_size=60,
    ),
    st.floats(200, 400),
)
def test_history_is_each_slice_merged_over_keys(
    samples: list[tuple[str, float, float]], now: float
) -> None:
    registry = RollingRegistry(horizon_s=100, slice_s=10)
    for name, at, value in sorted(samples, key=lambda s: s[1]):
        registry.add(("m", name), value, at)
    points = registry.history([("m", "a"), ("m", "b"), ("m", "absent")], now, 0.95)
    assert len(points) == 10  # always the horizon's slices, oldest first
    current = math.floor(now / 10)
    for offset, point in enumerate(points):
        index = current - 9 + offset
        # What a histogram of exactly that slice's samples says (same bucket maths).
        exact = LogHistogram()
        for _, at, value in samples:
            if math.floor(at / 10) == index:
                exact.add(value)
        assert point == exact.quantile(0.95)


def test_history_shows_a_slow_minute_where_it_happened() -> None:
    registry = RollingRegistry()  # 15 minutes of 10 s slices
    for second in range(0, 900, 5):
        registry.add(("queue", "batch", "mini"), 2.0 if 300 <= second < 360 else 0.01, second)
    points = registry.history([("queue", "batch", "mini")], 899.0, 0.95)
    assert len(points) == 90
    assert points[30:36] == [2.0] * 6 and points[29] == points[36] == 0.01


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from(["a", "b"]), st.floats(0, 30), LATENCY),
            st.tuples(st.just("read"), st.sampled_from([10.0, 60.0, 300.0]), st.floats(0, 30)),
        ),
        max_size=60,
    )
)
def test_remembered_merges_equal_fresh_ones_as_time_moves_on(
    events: list[tuple[str, object, float, float] | tuple[str, float, float]],
) -> None:
    """Reads and writes interleaved, time only moving forward: what the registry remembers
    between reads (closed slices, window merges) gives what a fresh registry computes."""
    registry = RollingRegistry(horizon_s=300, slice_s=10)
    keys = [("m", "a"), ("m", "b")]
    samples: list[tuple[str, float, float]] = []
    now = 1000.0
    for event in events:
        if event[0] == "add":
            _, name, step, value = event  # type: ignore[misc]
            now += step
            registry.add(("m", str(name)), float(value), now)
            samples.append((str(name), now, float(value)))
            continue
        _, window, step = event  # type: ignore[misc]
        now += step
        fresh = RollingRegistry(horizon_s=300, slice_s=10)
        for name, at, value in samples:
            fresh.add(("m", name), value, at)
        assert registry.merged_snapshot(keys, now, float(window)) == fresh_snapshot(
            fresh, keys, now, float(window)
        )
        assert registry.history(keys, now, 0.95) == fresh.history(keys, now, 0.95)
        assert (
            registry.count(keys, now, float(window))
            == fresh_snapshot(fresh, keys, now, float(window)).count
        )


def fresh_snapshot(
    registry: RollingRegistry, keys: list[tuple[str, str]], now: float, window: float
) -> Summary:
    """The same window merged from scratch: one series' windows merged by hand."""
    merged = LogHistogram()
    for key in keys:
        series = registry._series.get(key)
        if series is not None:
            merged.merge(series.window(now, window))
    return merged.summary()


def test_merged_snapshot_equals_one_series_with_every_sample() -> None:
    merged, single = RollingRegistry(), RollingRegistry()
    values = [0.01 * (i % 37 + 1) for i in range(300)]
    for i, value in enumerate(values):
        merged.add(("ttft", "interactive", f"u{i % 3}"), value, now=100.0 + i * 0.1)
        single.add(("all",), value, now=100.0 + i * 0.1)
    merged.add(("ttft", "batch", "u0"), 99.0, now=120.0)
    keys = [key for key in merged if key[:2] == ("ttft", "interactive")]
    for window in (60.0, 300.0):
        assert merged.merged_snapshot(keys, 130.0, window) == single.snapshot(
            ("all",), 130.0, window
        )
    assert merged.merged_snapshot([], 130.0, 60.0).count == 0
    assert merged.merged_snapshot([("ttft", "nope", "u0")], 130.0, 60.0).p95 is None
