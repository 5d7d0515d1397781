"""Pure: what chats pay per number of lower-lane requests running, and the engine's floor.

A learned cost curve (Vegas / Gradient2-like, over a different axis): for each *level*, the
total of lower-lane requests in flight on one upstream when a chat finished (1 up to the sum of
the lanes' bounds), a bounded window of the newest chat TTFTs seen at that level. From it, the
**engine floor**: the best p95 chat TTFT this engine gives while lower lanes run at all, which
no limit above the lanes' floors can beat. `gateway.lanes.limits` divides it by the no-load
baseline and holds chats to ``max(slo, floor x (1 + FLOOR_TOLERANCE))``: when the SLO is below
what the engine gives with even one batch request beside a chat, holding batch at its floor no
longer buys chats anything, and only costs batch.

How the floor is read (`floor_ttft`):
- At the floor: the newest ``FLOOR_WINDOW`` samples pooled over levels up to ``floor_level``
  (the sum of the lanes' floors: the lowest load the controller can hold), once there are
  ``FLOOR_MIN`` of them; their p95 after dropping samples above ``OUTLIER`` x their median (a
  cold model load, a scheduler stall, or a minority of huge-prompt chats do not set it). These
  samples do not expire: the controller sits above its floor exactly when it learned that it
  may, and forgetting would send it back down to learn again. New samples at the floor replace
  the oldest, so an engine that got slower is followed as soon as chats run there again.
- Above the floor: a level's samples of the last ``FLOOR_HORIZON`` loaded chats, once there are
  ``FLOOR_MIN`` of them, can only *lower* the estimate (the best reachable TTFT is at most what
  that level gives), within ``FLOOR_TOLERANCE``; stale good samples from before a slowdown
  expire. A level above that does better than that (more batch, much faster chats) contradicts
  the floor's samples: they are not what the engine gives now (it got faster, or they came from
  a burst of one client's huge-prompt chats, which nothing at the floor would ever replace
  while the target they relaxed holds the controller above it). The floor is then unknown:
  chats are held to the SLO, the controller goes down, and the floor is measured again.
- Unknown (None) until the floor itself was measured: a curve seen only above the floor says
  nothing about whether the SLO is reachable lower down.

Memory: at most ``FLOOR_WINDOW`` samples per level, levels capped by the caller (the sum of the
lanes' bounds). The estimate is a quantile of values seen, never above the largest of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLOOR_WINDOW = 32  # newest samples kept per level
FLOOR_MIN = 8  # samples a level needs before its p95 counts
FLOOR_HORIZON = 64  # loaded chats after which a sample above the floor no longer counts
FLOOR_TOLERANCE = 0.1  # chats may be this much above the engine's floor before limits shrink
OUTLIER = 3.0  # samples above this multiple of their median are left out of a p95

Sample = tuple[int, float]  # (sequence number of the loaded chat, its TTFT in seconds)


@dataclass(frozen=True, slots=True)
class CostCurve:
    levels: tuple[tuple[Sample, ...], ...] = ()  # index i: level i + 1, newest last
    seen: int = 0  # loaded chats recorded so far (the sequence number of the next)

    def at(self, level: int) -> tuple[Sample, ...]:
        return self.levels[level - 1] if 1 <= level <= len(self.levels) else ()


def record(curve: CostCurve, level: int, ttft_s: float, cap: int) -> CostCurve:
    """A chat that finished with ``level`` lower-lane requests in flight (capped at ``cap``)."""
    level = min(level, cap)
    if level < 1 or not math.isfinite(ttft_s) or ttft_s < 0:
        return curve
    levels = list(curve.levels[:cap])
    levels.extend(() for _ in range(level - len(levels)))
    levels[level - 1] = (*levels[level - 1], (curve.seen, ttft_s))[-FLOOR_WINDOW:]
    return CostCurve(tuple(levels), curve.seen + 1)


def floor_ttft(curve: CostCurve, floor_level: int) -> float | None:
    """The best p95 chat TTFT with lower lanes running (None: the floor not measured yet)."""
    pooled = sorted(
        (sample for level in range(1, floor_level + 1) for sample in curve.at(level)),
        key=lambda sample: sample[0],
    )[-FLOOR_WINDOW:]
    if len(pooled) < FLOOR_MIN:
        return None
    at_floor = robust_p95([ttft for _, ttft in pooled])
    best, oldest = at_floor, curve.seen - FLOOR_HORIZON
    for level in range(floor_level + 1, len(curve.levels) + 1):
        fresh = [ttft for seq, ttft in curve.at(level) if seq >= oldest]
        if len(fresh) >= FLOOR_MIN:
            best = min(best, robust_p95(fresh))
    if best * (1 + FLOOR_TOLERANCE) < at_floor:  # contradicted: measure it again
        return None
    return best


def robust_p95(samples: list[float] | tuple[float, ...]) -> float:
    """Nearest-rank p95, without outliers above OUTLIER x the median: a cold model load or a
    scheduler hiccup on a shared host is not what the engine gives, and with few samples the
    p95 is their maximum."""
    ordered = sorted(samples)
    median = ordered[(len(ordered) - 1) // 2]
    kept = [value for value in ordered if value <= OUTLIER * median]
    return kept[max(0, math.ceil(0.95 * len(kept)) - 1)]
