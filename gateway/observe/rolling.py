"""Bounded-memory rolling percentiles (p50/p95/p99/max) over recent time windows.

Owns: log-bucketed histograms with a stated relative error, and time-sliced series of them per
key. Must not: read the clock (``now`` is passed in), do I/O, or grow with the sample count.

Accuracy. A value v in ``[MIN_TRACKED, MAX_TRACKED]`` goes to bucket ``k = ceil(log(v)/log(g))``
with ``g = (1 + e) / (1 - e)``; the bucket reports ``2 g^k / (g + 1)``, within relative error
``e`` of every value in ``(g^(k-1), g^k]`` (the DDSketch construction). Buckets are ordered
like their values, so the bucket holding the exact nearest-rank sample reports it within ``e``.
Ranks 1 and n report the tracked exact min and max, and every estimate is clamped into
``[min, max]``, which only moves it closer. Zero, negatives (a skewed clock) and values below
MIN_TRACKED share a zero bucket reporting 0.0; values above MAX_TRACKED share the top bucket.
So a histogram holds at most ``log(MAX_TRACKED/MIN_TRACKED)/log(g) + 2`` buckets (about 1,850
at e = 1%) however many samples it counts; real latencies fill a few dozen.

Windows. Time is cut into slices ``floor(t / slice_s)``. With ``k = ceil(window_s / slice_s)``,
a window at ``now`` merges the current slice and the ``k - 1`` before it: a sample is included
iff ``slice(now) - k < slice(t) <= slice(now)``. So a sample aged at most ``(k - 1) * slice_s``
is always in, and one aged ``k * slice_s`` or more is always out (for the default 10 s slices:
the 1/5/15 min windows are exact to within one slice). Slices older than the horizon are
dropped on every add and snapshot, so a series holds at most ``ceil(horizon_s / slice_s)``.

Reads. A registry merges several series at read time (a lane across its upstreams) and also
gives each slice's quantile over the horizon (`history`, the dashboard's trends). Time passed
in only moves forward and a sample joins the newest slice, so slices before the current one
never change: their merge per window, and their per-slice quantiles, are computed once and
remembered until the current slice moves on (for at most MAX_REMEMBERED key sets).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

MIN_TRACKED = 1e-9
MAX_TRACKED = 1e7


@dataclass(frozen=True, slots=True)
class Summary:
    """Percentiles of the samples in one window; all None when the window is empty."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


EMPTY = Summary(count=0, p50=None, p95=None, p99=None, max=None)


class LogHistogram:
    """Sparse histogram of non-negative values with bounded relative error per bucket."""

    __slots__ = ("_buckets", "_gamma", "_log_gamma", "_max", "_min", "_zeros", "count")

    def __init__(self, relative_error: float = 0.01) -> None:
        if not 0.0 < relative_error < 1.0:
            raise ValueError("relative_error must be in (0, 1)")
        self._gamma = (1.0 + relative_error) / (1.0 - relative_error)
        self._log_gamma = math.log(self._gamma)
        self._buckets: dict[int, int] = {}
        self._zeros = 0
        self.count = 0
        self._min = math.inf
        self._max = -math.inf

    def add(self, value: float) -> None:
        """Count one sample; raises ValueError for NaN or infinity."""
        if not math.isfinite(value):
            raise ValueError(f"not a finite sample: {value!r}")
        value = max(value, 0.0)
        if value < MIN_TRACKED:
            self._zeros += 1
        else:
            key = self._key(min(value, MAX_TRACKED))
            self._buckets[key] = self._buckets.get(key, 0) + 1
        self.count += 1
        self._min = min(self._min, value)
        self._max = max(self._max, value)

    def merge(self, other: LogHistogram) -> None:
        """Add another histogram's counts (same relative error) into this one."""
        if other._gamma != self._gamma:
            raise ValueError("cannot merge histograms with different relative errors")
        for key, n in other._buckets.items():
            self._buckets[key] = self._buckets.get(key, 0) + n
        self._zeros += other._zeros
        self.count += other.count
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @property
    def max(self) -> float | None:
        """Exact largest sample, None when empty."""
        return self._max if self.count else None

    @property
    def bucket_count(self) -> int:
        """Occupied buckets, the zero bucket included: the memory this histogram holds."""
        return len(self._buckets) + (1 if self._zeros else 0)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank q-quantile (rank ``ceil(q * n)``), within the relative error."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank == self.count:
            return self._max  # the extremes are tracked exactly
        if rank <= self._zeros:
            return 0.0
        if rank == 1:
            return self._min
        seen = self._zeros
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                # The exact sample lies in [min, max]; clamping can only move towards it.
                return min(max(self._value(key), self._min), self._max)
        return self._max  # unreachable: counts add up to self.count

    @property
    def gamma(self) -> float:
        return self._gamma

    def key_counts(self) -> tuple[int, Mapping[int, int]]:
        """The zero bucket's count, and the count of each occupied bucket by key: key k holds
        the values in ``(gamma**(k-1), gamma**k]``. For folding into fixed-bucket histograms;
        read-only."""
        return self._zeros, self._buckets

    def summary(self) -> Summary:
        """p50/p95/p99/max of everything counted."""
        if not self.count:
            return EMPTY
        return Summary(
            count=self.count,
            p50=self.quantile(0.50),
            p95=self.quantile(0.95),
            p99=self.quantile(0.99),
            max=self.max,
        )

    def _key(self, value: float) -> int:
        return math.ceil(math.log(value) / self._log_gamma)

    def _value(self, key: int) -> float:
        return 2.0 * self._gamma**key / (self._gamma + 1.0)


def _check_options(horizon_s: float, slice_s: float, relative_error: float) -> None:
    if not 0 < slice_s <= horizon_s:
        raise ValueError("need 0 < slice_s <= horizon_s")
    if not 0.0 < relative_error < 1.0:
        raise ValueError("relative_error must be in (0, 1)")


class RollingPercentiles:
    """One series: time slices of log histograms covering the last ``horizon_s`` seconds."""

    def __init__(
        self, *, horizon_s: float = 900, slice_s: float = 10, relative_error: float = 0.01
    ) -> None:
        _check_options(horizon_s, slice_s, relative_error)
        self._slice_s = slice_s
        self._horizon_s = horizon_s
        self._error = relative_error
        self._keep = math.ceil(horizon_s / slice_s)  # slices a full-horizon window spans
        self._slices: deque[tuple[int, LogHistogram]] = deque()

    @property
    def slice_count(self) -> int:
        """Slices held now; never more than ``ceil(horizon_s / slice_s)`` after an expiry."""
        return len(self._slices)

    @property
    def bucket_count(self) -> int:
        """Occupied buckets across all slices held."""
        return sum(h.bucket_count for _, h in self._slices)

    def slice_index(self, t: float) -> int:
        """The slice a timestamp falls in."""
        return math.floor(t / self._slice_s)

    def add(self, value: float, now: float) -> None:
        """Count a sample at ``now``; a sample older than the newest slice joins the newest."""
        index = self.slice_index(now)
        self._expire(index)
        if not self._slices or self._slices[-1][0] < index:
            self._slices.append((index, LogHistogram(self._error)))
        self._slices[-1][1].add(value)

    def snapshot(self, now: float, window_s: float) -> Summary:
        """Percentiles of the samples in the window ending at ``now`` (see module docstring)."""
        return self.window(now, window_s).summary()

    def window(self, now: float, window_s: float) -> LogHistogram:
        """A new histogram of the samples in the window ending at ``now`` (for merging)."""
        if not 0 < window_s <= self._horizon_s:
            raise ValueError(f"window_s must be in (0, {self._horizon_s}]")
        index = self.slice_index(now)
        self._expire(index)
        oldest = index - math.ceil(window_s / self._slice_s)
        merged = LogHistogram(self._error)
        for slice_index, histogram in self._slices:
            if oldest < slice_index <= index:
                merged.merge(histogram)
        return merged

    def slices(self, now: float) -> list[tuple[int, LogHistogram]]:
        """(slice index, histogram) within the horizon, oldest first; read, never change."""
        self._expire(self.slice_index(now))
        return list(self._slices)

    def is_empty(self, now: float) -> bool:
        """True when nothing within the horizon remains."""
        self._expire(self.slice_index(now))
        return not self._slices

    def _expire(self, index: int) -> None:
        oldest_kept = index - self._keep
        while self._slices and self._slices[0][0] <= oldest_kept:
            self._slices.popleft()


Key = tuple[str, ...]
# Key sets whose merged windows and history a registry remembers before it starts over.
MAX_REMEMBERED = 1024


class RollingRegistry:
    """Keyed series, e.g. ``("ttft", lane, upstream)``, created on first add."""

    def __init__(
        self, *, horizon_s: float = 900, slice_s: float = 10, relative_error: float = 0.01
    ) -> None:
        _check_options(horizon_s, slice_s, relative_error)
        self._options = (horizon_s, slice_s, relative_error)
        self._series: dict[Key, RollingPercentiles] = {}
        # history(): quantiles of slices that are over (no sample can join them any more, as
        # time only moves forward), per (keys, q); only the current slice is merged again.
        self._closed: dict[tuple[tuple[Key, ...], float], dict[int, float | None]] = {}
        # merged_snapshot(): per (keys, window), the current slice's index and the merge of
        # the window's earlier slices.
        self._windows: dict[tuple[tuple[Key, ...], float], tuple[int, LogHistogram]] = {}

    def add(self, key: Key, value: float, now: float) -> None:
        """Count a sample for ``key`` at ``now``."""
        series = self._series.get(key)
        if series is None:
            horizon_s, slice_s, error = self._options
            series = RollingPercentiles(horizon_s=horizon_s, slice_s=slice_s, relative_error=error)
            self._series[key] = series
        series.add(value, now)

    def snapshot(self, key: Key, now: float, window_s: float) -> Summary:
        """Percentiles for ``key``; an unknown key has an empty summary."""
        series = self._series.get(key)
        return EMPTY if series is None else series.snapshot(now, window_s)

    def merged_snapshot(self, keys: Iterable[Key], now: float, window_s: float) -> Summary:
        """Percentiles over several series at once, e.g. one lane across its upstreams.

        Merging histograms at read time keeps the request path at one series per request;
        the result is as accurate as a single series holding all the samples. The slices
        before the current one are merged once per slice change and remembered (they cannot
        change: time only moves forward), so a call merges that and the current slices."""
        horizon_s, slice_s, error = self._options
        if not 0 < window_s <= horizon_s:
            raise ValueError(f"window_s must be in (0, {horizon_s}]")
        wanted = tuple(keys)
        index = math.floor(now / slice_s)
        merged = LogHistogram(error)
        merged.merge(self._closed_window(wanted, now, window_s))
        for key in wanted:
            series = self._series.get(key)
            newest = series.slices(now)[-1:] if series is not None else []
            if newest and newest[0][0] == index:
                merged.merge(newest[0][1])
        return merged.summary()

    def _closed_window(self, keys: tuple[Key, ...], now: float, window_s: float) -> LogHistogram:
        """The window's slices before the current one, merged over `keys`; kept until the
        current slice changes."""
        _, slice_s, error = self._options
        index = math.floor(now / slice_s)
        cached = self._windows.get((keys, window_s))
        if cached is not None and cached[0] == index:
            return cached[1]
        oldest = index - math.ceil(window_s / slice_s)
        closed = LogHistogram(error)
        for key in keys:
            series = self._series.get(key)
            for slice_index, histogram in series.slices(now) if series is not None else ():
                if oldest < slice_index < index:
                    closed.merge(histogram)
        if len(self._windows) > MAX_REMEMBERED:
            self._windows.clear()
        self._windows[(keys, window_s)] = (index, closed)
        return closed

    @property
    def slice_s(self) -> float:
        return self._options[1]

    def count(self, keys: Iterable[Key], now: float, window_s: float) -> int:
        """How many samples `keys` have in the window: `merged_snapshot(...).count`, without
        merging anything."""
        slice_s = self._options[1]
        index = math.floor(now / slice_s)
        oldest = index - math.ceil(window_s / slice_s)
        return sum(
            histogram.count
            for key in keys
            if (series := self._series.get(key)) is not None
            for slice_index, histogram in series.slices(now)
            if oldest < slice_index <= index
        )

    def history(self, keys: Iterable[Key], now: float, q: float) -> list[float | None]:
        """The q-quantile of each time slice over the horizon, oldest first, merged over
        `keys`; None for a slice without samples. Always ``ceil(horizon_s / slice_s)``
        values (90 for 15 minutes of 10 s slices), the last one the current, partial slice.
        Slices that are over are computed once (per keys and q) and then remembered."""
        horizon_s, slice_s, error = self._options
        current = math.floor(now / slice_s)
        first = current - math.ceil(horizon_s / slice_s) + 1
        wanted = tuple(keys)
        closed = self._closed_for(wanted, q, first)
        merged: dict[int, LogHistogram] = {}
        for key in wanted:
            series = self._series.get(key)
            for index, histogram in series.slices(now) if series is not None else ():
                if index < current and index in closed:
                    continue
                found = merged.get(index)
                if found is None:
                    found = merged[index] = LogHistogram(error)
                found.merge(histogram)
        for index in range(first, current):
            if index not in closed:
                closed[index] = merged[index].quantile(q) if index in merged else None
        last = merged[current].quantile(q) if current in merged else None
        return [closed[index] for index in range(first, current)] + [last]

    def _closed_for(self, keys: tuple[Key, ...], q: float, first: int) -> dict[int, float | None]:
        """The remembered slices of (keys, q), older ones forgotten; bounded: a registry
        whose callers ask for ever new key sets starts over past MAX_REMEMBERED of them."""
        if len(self._closed) > MAX_REMEMBERED:
            self._closed.clear()
        closed = self._closed.setdefault((keys, q), {})
        for index in [index for index in closed if index < first]:
            del closed[index]
        return closed

    def keys(self) -> list[Key]:
        """Keys that have series, in insertion order."""
        return list(self._series)

    def prune(self, now: float) -> int:
        """Forget series with nothing left in the horizon; returns how many were dropped."""
        stale = [key for key, series in self._series.items() if series.is_empty(now)]
        for key in stale:
            del self._series[key]
        return len(stale)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._series)

    def __len__(self) -> int:
        return len(self._series)
