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
is one of 1xx..5xx or "other"; `model_family` is a known family, one of at most
`max_unknown_families` other names seen first, or "other"; a rejection `reason` is a code-like
token, at most `max_reasons` of them, then "other". Request ids, client keys and raw model
names never become label values.

Inter-chunk gaps arrive as the per-request `LogHistogram` that `measurement` already keeps
(relative error 1%), folded into the Prometheus buckets by each log bucket's value: `_count` is
exact, a gap within 1% of a bucket boundary may land in the neighbouring bucket, and `_sum` is
exact (the gaps telescope to last chunk minus first gap start; `RequestRecord.gap_sum_s`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Sequence
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

# Family names for model ids as the servers spell them ("llama3.1:8b", "Qwen/Qwen2.5-7B",
# "mistral-small", "gpt-oss:20b"). Checked in order, so longer names go before their prefixes.
KNOWN_FAMILIES: tuple[str, ...] = (
    "codellama", "tinyllama", "llava", "llama", "qwen", "mixtral", "mistral", "codestral",
    "gemma", "phi", "deepseek", "gpt", "granite", "command", "starcoder", "nomic", "mxbai",
    "smollm", "olmo", "yi",
)  # fmt: skip
_KNOWN_ALIASES = {"meta": "llama", "codellama": "llama", "tinyllama": "llama"}
_FAMILY_TOKEN = re.compile(r"[a-z]+")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")
K = TypeVar("K", str, tuple[str, str])


_CLASSES = (OTHER, "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """The class label: 2xx .. 5xx (499, a client that left, is 4xx); anything else "other"."""
    return _CLASSES[status // 100] if 100 <= status <= 599 else OTHER


class FamilyMap:
    """Model name → bounded family label. Unknown families are kept first come, first served,
    up to `max_unknown`, so label cardinality is at most len(KNOWN_FAMILIES) + max_unknown + 2."""

    def __init__(self, max_unknown: int = 8) -> None:
        self.max_unknown = max_unknown
        self._cache: dict[str, str] = {}
        self._unknown: set[str] = set()

    def family(self, model: str | None) -> str:
        if not model:
            return NONE
        cached = self._cache.get(model)
        if cached is not None:
            return cached
        family = self._admit(family_guess(model))
        if len(self._cache) < 4096:  # bounded: clients may send endless distinct names
            self._cache[model] = family
        return family

    def _admit(self, guess: str) -> str:
        if guess in KNOWN_FAMILIES or guess in self._unknown:
            return guess
        if guess != OTHER and len(self._unknown) < self.max_unknown:
            self._unknown.add(guess)
            return guess
        return OTHER


def family_guess(model: str) -> str:
    """The family a model name belongs to, before any cap: a known family it starts with
    (after an "org/" prefix), else its leading letters, else "other"."""
    name = model.lower().rsplit("/", 1)[-1]
    for known in KNOWN_FAMILIES:
        if name.startswith(known):
            return _KNOWN_ALIASES.get(known, known)
    match = _FAMILY_TOKEN.match(name)
    if match is None or len(match.group()) > 24:
        return OTHER
    token = match.group()
    return _KNOWN_ALIASES.get(token, token)


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

    def __init__(self, *, max_unknown_families: int = 8, max_reasons: int = 32) -> None:
        self.families = FamilyMap(max_unknown_families)
        self.max_reasons = max_reasons
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.rejections: dict[tuple[str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.ttft: dict[tuple[str, str], BucketCounts] = {}
        self.gaps: dict[tuple[str, str], BucketCounts] = {}
        self.duration: dict[tuple[str, str], BucketCounts] = {}
        self.queue_wait: dict[str, BucketCounts] = {}
        self._reasons: set[str] = set()

    def observe(
        self,
        lane: str,
        upstream: str,
        model: str | None,
        queue_s: float | None,
        record: RequestRecord,
    ) -> None:
        series = (lane, upstream)
        key = (lane, upstream, self.families.family(model), status_class(record.status))
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
        if record.prompt_tokens:
            self._add_tokens((*series, "prompt"), record.prompt_tokens)
        if record.completion_tokens:
            self._add_tokens((*series, "completion"), record.completion_tokens)

    def _add_tokens(self, key: tuple[str, str, str], tokens: int) -> None:
        self.tokens[key] = self.tokens.get(key, 0) + tokens

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
