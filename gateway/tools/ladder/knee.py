"""Where a load ladder stops scaling: the knee, and which rule found it.

A rung is the knee when, in this order of naming:
- `ttft_ratio`: its p95 TTFT exceeds `ttft_ratio` x the first rung's p95 TTFT (requests wait
  for a slot instead of starting at once);
- `error_rate`: more than `max_error_rate` of its requests failed;
- `throughput`: its completed requests per second are not at least `min_throughput_gain`
  above the previous rung's (more concurrency buys nothing).
The first rung can only be a knee by errors (there is nothing to compare it with).

Pure: rung figures in, a verdict out; no clock, no I/O. The runner calls `knee_at` after each
rung to stop early, and `find_knee` over the finished rungs for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TTFT_RATIO = "ttft_ratio"
ERROR_RATE = "error_rate"
THROUGHPUT = "throughput"


@dataclass(frozen=True, slots=True)
class KneeRules:
    ttft_ratio: float = 3.0
    max_error_rate: float = 0.01
    min_throughput_gain: float = 0.10

    def __post_init__(self) -> None:
        if self.ttft_ratio <= 1:
            raise ValueError(f"ttft_ratio must be above 1, got {self.ttft_ratio}")
        if not 0 <= self.max_error_rate < 1:
            raise ValueError(f"max_error_rate must be in [0, 1), got {self.max_error_rate}")
        # Negative: tolerate a drop that large (a noisy shared host) before calling it a knee.
        if self.min_throughput_gain <= -1:
            raise ValueError(
                f"min_throughput_gain must be above -1, got {self.min_throughput_gain}"
            )


@dataclass(frozen=True, slots=True)
class RungPoint:
    """What knee detection needs from one rung."""

    concurrency: int
    p95_ttft_s: float | None  # None: no request of the rung produced output
    error_rate: float
    throughput_rps: float


@dataclass(frozen=True, slots=True)
class Knee:
    index: int  # position in the ladder
    concurrency: int
    rules: tuple[str, ...]  # every rule that fired, in the order above; rules[0] names it
    detail: str  # the figures behind the first rule, for the report

    @property
    def rule(self) -> str:
        return self.rules[0]


def knee_at(rungs: Sequence[RungPoint], index: int, rules: KneeRules) -> Knee | None:
    """Whether rung `index` is a knee, judged against the first and the previous rung."""
    current = rungs[index]
    fired: list[tuple[str, str]] = []
    base = rungs[0].p95_ttft_s
    if index > 0 and base is not None and base > 0:
        ratio = _ttft_ratio(current.p95_ttft_s, base)
        if ratio > rules.ttft_ratio:
            shown = "no output" if current.p95_ttft_s is None else f"{ratio:.1f}x"
            fired.append((TTFT_RATIO, f"p95 TTFT {shown} rung 1's (limit {rules.ttft_ratio:g}x)"))
    if current.error_rate > rules.max_error_rate:
        fired.append(
            (
                ERROR_RATE,
                f"error rate {current.error_rate:.1%} (limit {rules.max_error_rate:.1%})",
            )
        )
    if index > 0:
        previous = rungs[index - 1].throughput_rps
        if gained_too_little(previous, current.throughput_rps, rules):
            gain = current.throughput_rps / previous - 1 if previous > 0 else 0.0
            fired.append(
                (
                    THROUGHPUT,
                    f"throughput {current.throughput_rps:.2f} req/s, {gain:+.0%} on the previous "
                    f"rung (needs +{rules.min_throughput_gain:.0%})",
                )
            )
    if not fired:
        return None
    return Knee(index, current.concurrency, tuple(name for name, _ in fired), fired[0][1])


def gained_too_little(previous_rps: float, current_rps: float, rules: KneeRules) -> bool:
    """The `throughput` rule: one more rung of concurrency did not buy its minimum gain."""
    return current_rps < previous_rps * (1 + rules.min_throughput_gain)


def find_knee(rungs: Sequence[RungPoint], rules: KneeRules | None = None) -> Knee | None:
    """The first rung that is a knee, or None if the ladder scaled all the way."""
    rules = rules or KneeRules()
    for index in range(len(rungs)):
        knee = knee_at(rungs, index, rules)
        if knee is not None:
            return knee
    return None


def _ttft_ratio(p95: float | None, base: float) -> float:
    # A rung where nothing produced output waited forever, as far as a user can tell.
    return float("inf") if p95 is None else p95 / base
