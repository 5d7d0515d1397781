"""Gate thresholds (the SLO a ladder run is checked against) and their pass/fail verdicts.

A gate is checked at every rung. Its verdict covers the operating range: the rungs below the
knee (every rung when there is none; the first rung alone when the first rung is the knee),
because an SLO is signed for the load the host can carry, not for the overload past it.
`signable` is the highest concurrency at which every set gate held on that rung and all below.

Pure: figures in, verdicts out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1 << 30
NO_BASELINE = "no baseline (no concurrency-1 rung to compare with)"


@dataclass(frozen=True, slots=True)
class SloThresholds:
    interactive_p95_ttft_ms: float | None = None  # None: not gated
    p95_ratio: float = 3.0
    error_rate: float = 0.01
    swap_growth_gb: float = 2.0  # GiB


@dataclass(frozen=True, slots=True)
class GateRung:
    concurrency: int
    p95_ttft_s: float | None  # the interactive lane's in a mixed run
    error_rate: float
    swap_growth_bytes: int | None  # peak swap during the rung minus swap at the start


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    threshold: str
    worst: str  # the worst measured value in the operating range, with its rung
    passed: bool | None  # None: not checked (threshold unset or nothing measured)
    per_rung: tuple[bool | None, ...]


@dataclass(frozen=True, slots=True)
class GateReport:
    results: tuple[GateResult, ...]
    operating_rungs: int  # how many leading rungs the verdicts cover
    signable: int | None  # highest concurrency where every checked gate held, None: none

    @property
    def passed(self) -> bool:
        return all(result.passed is not False for result in self.results)


def evaluate(
    thresholds: SloThresholds, rungs: Sequence[GateRung], knee_index: int | None
) -> GateReport:
    """Check every gate at every rung; verdicts over the rungs below the knee."""
    operating = len(rungs) if knee_index is None else max(1, knee_index)
    results = tuple(
        _gate(name, threshold, measure, rungs, operating)
        for name, threshold, measure in _gates(thresholds, rungs)
    )
    return GateReport(results, min(operating, len(rungs)), _signable(results, rungs))


_Measure = tuple[float | None, bool | None]  # (value, passed) at one rung


def _gates(t: SloThresholds, rungs: Sequence[GateRung]) -> list[tuple[str, str, list[_Measure]]]:
    # The ratio needs a single-stream baseline: a ladder that starts above concurrency 1, or a
    # --mix step, has none, and its ratio gate says so instead of comparing a rung with itself.
    base = rungs[0].p95_ttft_s if rungs and rungs[0].concurrency == 1 else None
    ttft_ms: list[_Measure] = [
        _at_most(None if r.p95_ttft_s is None else r.p95_ttft_s * 1000, t.interactive_p95_ttft_ms)
        for r in rungs
    ]
    ratio: list[_Measure] = [
        _at_most(r.p95_ttft_s / base if r.p95_ttft_s is not None and base else None, t.p95_ratio)
        for r in rungs
    ]
    errors: list[_Measure] = [_at_most(r.error_rate, t.error_rate) for r in rungs]
    swap: list[_Measure] = [
        _at_most(
            None if r.swap_growth_bytes is None else r.swap_growth_bytes / GIB, t.swap_growth_gb
        )
        for r in rungs
    ]
    limit_ms = (
        "not set" if t.interactive_p95_ttft_ms is None else f"<= {t.interactive_p95_ttft_ms:g} ms"
    )
    return [
        ("interactive_p95_ttft_ms", limit_ms, ttft_ms),
        ("p95_ratio", f"<= {t.p95_ratio:g}x rung 1", ratio),
        ("error_rate", f"<= {t.error_rate:.1%}", errors),
        ("swap_growth_gb", f"<= {t.swap_growth_gb:g} GiB", swap),
    ]


def _at_most(value: float | None, limit: float | None) -> _Measure:
    if value is None or limit is None:
        return value, None
    return value, value <= limit


_UNITS = {
    "interactive_p95_ttft_ms": "{:.0f} ms",
    "p95_ratio": "{:.2f}x",
    "error_rate": "{:.1%}",
    "swap_growth_gb": "{:.2f} GiB",
}


def _gate(
    name: str,
    threshold: str,
    measures: list[_Measure],
    rungs: Sequence[GateRung],
    operating: int,
) -> GateResult:
    per_rung = tuple(passed for _, passed in measures)
    window = [(m, r) for m, r in zip(measures[:operating], rungs[:operating], strict=True)]
    known = [(value, passed, rung) for (value, passed), rung in window if value is not None]
    if name == "p95_ratio" and window and window[0][1].concurrency != 1:
        return GateResult(name, threshold, NO_BASELINE, None, per_rung)
    if not known:
        return GateResult(name, threshold, "not measured", None, per_rung)
    value, _, rung = max(known, key=lambda item: item[0] or 0.0)
    worst = f"{_UNITS[name].format(value)} at concurrency {rung.concurrency}"
    checked = [passed for _, passed, _ in known if passed is not None]
    verdict = all(checked) if checked else None
    return GateResult(name, threshold, worst, verdict, per_rung)


def _signable(results: Sequence[GateResult], rungs: Sequence[GateRung]) -> int | None:
    best = None
    for index, rung in enumerate(rungs):
        if any(result.per_rung[index] is False for result in results):
            break
        best = rung.concurrency
    return best
