"""Per-request tallies behind `/metrics`: counters and fixed-bucket histograms, bounded labels.

Owns: the numbers that only grow (requests, rejections, tokens, latency histograms), kept as
plain dicts of ints and bucket lists keyed by label tuples, and the mapping of free-form values
(model names, status codes, error codes) to a bounded set of label values. Must not: read the
clock, do I/O, or import prometheus_client (the shell `metrics` turns these into exposition
text at scrape time).

Why not prometheus_client's Counter/Histogram: `.labels(...).observe()` takes a lock and
costs about 1.1-1.4 µs per call; one request updates up to eight series, so that would be ~10
µs per request on the relay's only core. A dict lookup plus a bisect here is ~0.1 µs.

Bounded labels. `lane` and `upstream` come from the policy (plus "-" for none); `status_class`
is one of 1xx..5xx or "other"; `model` is counted under the name the client sent for the first
`max_models` distinct names (later new ones count as "other"), and at scrape time shown as
itself only when the policy names it or an upstream lists it, else as "other" (`model_label`);
`client` is the policy's client name ("-" without clients), at most `max_clients` of them; a
rejection `reason` is a code-like token, at most `max_reasons` of them, then "other". Request
ids and client keys never become label values.

Inter-chunk gaps arrive as the per-request `LogHistogram` that `measurement` already keeps
(relative error 1%), folded into the Prometheus buckets by each log bucket's value: `_count` is
exact, a gap within 1% of a bucket boundary may land in the neighbouring bucket, and `_sum` is
exact (the gaps telescope to last chunk minus first gap start; `RequestRecord.gap_sum_s`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Collection, Sequence
from typing import TypeVar

from gateway.observe.measurement import RequestRecord
from gateway.observe.rolling import LogHistogram

# Latency buckets (seconds): log-spaced from a few ms (a cached prompt on a fast server) to
# ten minutes (a long generation on a swapping Mac).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
GAP_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
QUEUE_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

NONE = "-"  # no lane (rejected before classification), no upstream, no model
OTHER = "other"

_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
K = TypeVar("K", str, tuple[str, str])


_CLASSES = (OTHER, "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """The class label: 2xx .. 5xx (499, a client that left, is 4xx); anything else "other"."""
    return _CLASSES[status // 100] if 100 <= status <= 599 else OTHER


class BoundedNames:
    """Free-form names kept apart up to `limit` distinct ones, first come, first served; a
    new name past the limit counts as "other" (None and "" as "-")."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: set[str] = set()

    def key(self, name: str | None) -> str:
        if not name:
            return NONE
        if name in self._names:
            return name
        if len(self._names) < self.limit:
            self._names.add(name)
            return name
        return OTHER


def model_label(model: str, known: Collection[str]) -> str:
    """The label of a counted model name: itself when the policy or an upstream knows it."""
    return model if model in (NONE, OTHER) or model in known else OTHER


class BucketCounts:
    """One histogram series: counts per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("_fold_keys", "bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self._fold_keys: tuple[float, tuple[int, ...]] | None = None

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def fold(self, histogram: LogHistogram, total: float) -> None:
        """Add a request's gap histogram, each log bucket by its representative value (see the
        module docstring for the accuracy). Works on bucket keys: no float math per bucket."""
        zeros, by_key = histogram.key_counts()
        limits = self._key_limits(histogram.gamma)
        counts = self.counts
        counts[0] += zeros
        for key, n in by_key.items():
            counts[bisect_left(limits, key)] += n
        self.total += total

    def _key_limits(self, gamma: float) -> tuple[int, ...]:
        """Per bound b, the largest log-bucket key whose representative 2 g^k / (g + 1) <= b."""
        if self._fold_keys is None or self._fold_keys[0] != gamma:
            log_gamma = math.log(gamma)
            limits = tuple(
                math.floor(math.log(b * (gamma + 1) / 2) / log_gamma) for b in self.bounds
            )
            self._fold_keys = (gamma, limits)
        return self._fold_keys[1]

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs as Prometheus exposes them, +Inf last."""
        pairs, running = [], 0
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs

    @property
    def count(self) -> int:
        return sum(self.counts)


def _le(bound: float) -> str:
    return repr(float(bound))


class RequestTally:
    """Every counter and histogram series; `observe` is called once per finished request."""

    def __init__(
        self, *, max_models: int = 256, max_clients: int = 256, max_reasons: int = 32
    ) -> None:
        self.models = BoundedNames(max_models)
        self.clients = BoundedNames(max_clients)
        self.max_reasons = max_reasons
        self.requests: dict[tuple[str, str, str, str], int] = {}  # model as counted
        self.rejections: dict[tuple[str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.client_tokens: dict[tuple[str, str], int] = {}  # (client, kind)
        self.ttft: dict[tuple[str, str], BucketCounts] = {}
        self.gaps: dict[tuple[str, str], BucketCounts] = {}
        self.duration: dict[tuple[str, str], BucketCounts] = {}
        self.queue_wait: dict[str, BucketCounts] = {}
        self.preemptions: dict[tuple[str, str], int] = {}  # (lane, upstream that answered)
        self.preempted_tokens: dict[tuple[str], int] = {}  # (lane,): estimated
        self._reasons: set[str] = set()

    def observe(
        self,
        lane: str,
        upstream: str,
        model: str | None,
        queue_s: float | None,
        record: RequestRecord,
        client: str | None = None,
    ) -> None:
        series = (lane, upstream)
        key = (lane, upstream, self.models.key(model), status_class(record.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if queue_s is not None:
            _series(self.queue_wait, lane, QUEUE_BUCKETS).observe(queue_s)
        if record.rejected:
            reason = (lane, self._reason(record.error))
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
            return  # never reached an upstream: no latency or tokens to count
        _series(self.duration, series, LATENCY_BUCKETS).observe(record.duration_s)
        if record.ttft_s is not None:
            _series(self.ttft, series, LATENCY_BUCKETS).observe(record.ttft_s)
        if record.gaps is not None and record.gaps.count:
            _series(self.gaps, series, GAP_BUCKETS).fold(record.gaps, record.gap_sum_s or 0.0)
        who = self.clients.key(client)
        for kind, tokens in (
            ("prompt", record.prompt_tokens),
            ("completion", record.completion_tokens),
        ):
            if tokens:
                self.tokens[(*series, kind)] = self.tokens.get((*series, kind), 0) + tokens
                self.client_tokens[(who, kind)] = self.client_tokens.get((who, kind), 0) + tokens

    def preempted(self, lane: str, upstream: str, preemptions: int, tokens: int) -> None:
        """A finished request that was preempted `preemptions` times (tokens: estimated)."""
        if preemptions:
            key = (lane, upstream)
            self.preemptions[key] = self.preemptions.get(key, 0) + preemptions
            self.preempted_tokens[(lane,)] = self.preempted_tokens.get((lane,), 0) + tokens

    def requests_by_model(self, known: Collection[str]) -> dict[tuple[str, str, str, str], int]:
        """`requests` with each counted model name turned into its label (`model_label`)."""
        shown: dict[tuple[str, str, str, str], int] = {}
        for (lane, upstream, model, status), count in self.requests.items():
            key = (lane, upstream, model_label(model, known), status)
            shown[key] = shown.get(key, 0) + count
        return shown

    def _reason(self, code: str | None) -> str:
        if code is None or not _REASON.fullmatch(code):
            return OTHER
        if code in self._reasons:
            return code
        if len(self._reasons) < self.max_reasons:
            self._reasons.add(code)
            return code
        return OTHER


def _series(table: dict[K, BucketCounts], key: K, bounds: Sequence[float]) -> BucketCounts:
    found = table.get(key)
    if found is None:
        found = table[key] = BucketCounts(bounds)
    return found
