"""Pure adaptive limits: how many requests of each lower-priority lane one upstream may run now.

Owns the decision only: no I/O, no clock (every call carries ``now``), no asyncio. The shell
(`gateway.lanes.limits_feed`) feeds it chat arrivals, chats' TTFTs and the lanes' in-flight
counts, applies the limits in the lane gate and logs every `Change` with its reason.

The signal is what chat users feel: the TTFT of requests of the protected lanes (the policy's
top priority) on this upstream, against a learned no-load baseline. The target is
``ratio x baseline`` (``slo.interactive_ttft_ratio``, 1.3 by default), unless that is out of
this engine's reach: every chat beside lower lanes also feeds a cost curve
(`gateway.lanes.cost_curve`), whose floor is the best p95 chats get with lower lanes running at
all. The effective target (`Target`) is ``max(ratio, floor / baseline x (1 + FLOOR_TOLERANCE))``:
when the SLO is below the engine's floor, holding lower lanes at theirs would only cost them, so
chats are held just above the floor and lower lanes grow while chats stay there. With the floor
within reach (or not yet learned) the target is the SLO and nothing else changes.

Baseline. The p95 of the last ``learn_max`` *solo* chat TTFTs (chats that ran while no lower
lane had a request in flight), leaving out those above 3 x their median (a cold load), once
there are ``learn_min`` of them; a pinned ``baseline_ttft_s`` wins. Until then the minimum chat
TTFT seen stands in ("provisional"): strict on purpose, so chats are protected before the
engine was ever seen alone. A solo chat only teaches: no lower lane ran beside it, so limiting
them could not have helped it, whatever its TTFT.

Rules (Netflix concurrency-limits' AIMD/Gradient2 and Envoy's gradient controller, turned
round: the latency watched belongs to another lane than the one throttled, because the engine
batches every slot into one step and batch's own latency says nothing about chats):
- A chat TTFT above the target shrinks every lower lane at once (that has taken the room its
  limit gives it): ``new = min(limit - 1, floor(limit x max(0.5, target / ttft)))``, never below
  the lane's floor. Gradient2 clamps its gradient to 0.5 the same way.
- ``probe_after`` good samples in a row (20 = 1 / (1 - 0.95)) make the limit in force the
  *protected* one and raise it by one, up to the bound, for the lanes that use all of it. At
  equilibrium one sample in ``probe_after + 1`` breaches: the chats' p95 sits at the target.
- A breach also lowers ``protected`` to the new limit: what is remembered is a limit that kept
  chats within the target, or the best guess after one that did not.
- No chat active (none in flight, none arrived or ended for ``chat_idle_s``): every lower lane
  may use its bound ("batch takes every slot"). The first chat after that puts the protected
  limits back at once, before it is admitted, without waiting for a window of samples.
- Never above ``bound`` (the lane's max_concurrency and the upstream's slots), never below
  ``floor`` (at least 1, and at least the lane's reserved slots): batch always progresses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from gateway.lanes.cost_curve import FLOOR_TOLERANCE as TOLERANCE
from gateway.lanes.cost_curve import CostCurve, floor_ttft, record, robust_p95

PROBE_AFTER = 20  # good chat samples in a row before a limit is trusted and probed upward
LEARN_MIN = 5  # solo chat samples before the baseline is learned
LEARN_MAX = 64  # solo samples kept (the newest)
RECENT_MAX = 64  # any chat samples kept, for the provisional baseline
MIN_GRADIENT = 0.5


@dataclass(frozen=True, slots=True)
class LimitConfig:
    ttft_ratio: float = 1.3  # chats' TTFT target, as a multiple of the no-load baseline
    chat_idle_s: float = 30.0  # no chat for this long: lower lanes may use every slot
    baseline_ttft_s: float | None = None  # pinned baseline; None: learned from solo chats
    probe_after: int = PROBE_AFTER
    learn_min: int = LEARN_MIN

    def __post_init__(self) -> None:
        if not self.ttft_ratio > 1:
            raise ValueError(f"ttft_ratio must be above 1, got {self.ttft_ratio}")
        if not self.chat_idle_s > 0 or self.probe_after < 1 or self.learn_min < 1:
            raise ValueError("chat_idle_s, probe_after and learn_min must be positive")
        if self.baseline_ttft_s is not None and not self.baseline_ttft_s > 0:
            raise ValueError(f"baseline_ttft_s must be positive, got {self.baseline_ttft_s}")


@dataclass(frozen=True, slots=True)
class LaneLimit:
    """One lower lane's limit on one upstream."""

    lane: str
    bound: int  # never above: min(lane max_concurrency, upstream slots)
    floor: int  # never below: max(1, reserved), at most bound
    limit: int
    protected: int | None = None  # the limit that last kept chats within the target

    def start(self) -> int:
        """What applies when a chat arrives: the protected limit, else halfway."""
        return self.protected if self.protected is not None else max(self.floor, self.bound // 2)


@dataclass(frozen=True, slots=True)
class Change:
    lane: str
    old: int
    new: int
    reason: str


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    config: LimitConfig
    lanes: tuple[LaneLimit, ...]
    solo: tuple[float, ...] = ()  # TTFTs of chats that ran with no lower lane in flight
    recent: tuple[float, ...] = ()  # every chat TTFT, newest last
    streak: int = 0  # good samples in a row
    active: bool = False  # a chat is active (limits apply) rather than idle (bounds apply)
    last_chat_at: float | None = None
    curve: CostCurve = field(default_factory=CostCurve)  # chat TTFTs per lower load
    reason: str = "no chat seen yet: lower lanes may use every slot"

    def limit(self, lane: str) -> int | None:
        for entry in self.lanes:
            if entry.lane == lane:
                return entry.limit
        return None


Result = tuple[UpstreamLimits, tuple[Change, ...]]


def lane_limit(lane: str, cap: int, reserved: int, slots: int) -> LaneLimit:
    """A fresh lower lane: bound from its cap and the slots, floor from its reservation."""
    bound = max(1, min(cap, slots))
    floor = min(bound, max(1, reserved))
    return LaneLimit(lane, bound, floor, bound)


def start(config: LimitConfig, lanes: Iterable[LaneLimit]) -> UpstreamLimits:
    return UpstreamLimits(config, tuple(lanes))


def reconfigure(state: UpstreamLimits, config: LimitConfig, lanes: Iterable[LaneLimit]) -> Result:
    """A policy reload: keep what was learned, clip limits into the new bounds and floors."""
    old = {entry.lane: entry for entry in state.lanes}
    kept = []
    for fresh in lanes:
        before = old.get(fresh.lane)
        if before is None:
            kept.append(replace(fresh, limit=fresh.start() if state.active else fresh.bound))
            continue
        protected = None if before.protected is None else _clip(before.protected, fresh)
        kept.append(replace(fresh, limit=_clip(before.limit, fresh), protected=protected))
    new_state = replace(state, config=config, lanes=tuple(kept))
    return new_state, _changes(state, new_state, "policy reloaded: limits clipped to new bounds")


def baseline(state: UpstreamLimits) -> tuple[float | None, str]:
    """The no-load TTFT the target multiplies, and where it comes from."""
    pinned = state.config.baseline_ttft_s
    if pinned is not None:
        return pinned, "pinned"
    if len(state.solo) >= state.config.learn_min:
        return robust_p95(state.solo), f"p95 of {len(state.solo)} solo chats"
    if state.recent:
        return min(state.recent), "provisional: fastest chat seen (too few solo chats)"
    return None, "unknown: no chat seen"


def chat_arrived(state: UpstreamLimits, now: float) -> Result:
    """A protected lane's request arrived: the remembered limits apply at once."""
    if state.active:
        return replace(state, last_chat_at=now), ()
    lanes = tuple(replace(entry, limit=entry.start()) for entry in state.lanes)
    reason = "chat arrived after idle: the limit that protected chats last time applies"
    new_state = replace(state, lanes=lanes, active=True, last_chat_at=now, streak=0, reason=reason)
    return new_state, _changes(state, new_state, reason)


def chat_sample(
    state: UpstreamLimits, now: float, ttft_s: float, solo: bool, in_flight: Mapping[str, int]
) -> Result:
    """A protected lane's chat got its first token after ``ttft_s``; judge it.

    ``solo``: no lower lane had a request in flight while it ran (teaches the baseline).
    ``in_flight``: each lower lane's requests in flight on this upstream now.
    """
    if not math.isfinite(ttft_s) or ttft_s < 0:
        return state, ()
    before = target(state)
    level = sum(in_flight.get(entry.lane, 0) for entry in state.lanes)
    cap = sum(entry.bound for entry in state.lanes)
    state = replace(
        state,
        recent=(*state.recent, ttft_s)[-RECENT_MAX:],
        solo=(*state.solo, ttft_s)[-LEARN_MAX:] if solo else state.solo,
        curve=state.curve if solo else record(state.curve, level, ttft_s, cap),
        last_chat_at=now,
    )
    if not state.active:  # a chat that arrived before the state knew of it
        state, _ = chat_arrived(state, now)
    base, where = baseline(state)
    if base is None or solo:  # no lower lane ran beside it: limiting them cannot help it
        return state, ()
    held = target(state)
    if held.out_of_reach != before.out_of_reach:
        state = replace(state, reason=held.reach_reason())
    if ttft_s > held.ratio * base:
        return _shrink(state, ttft_s, held, base, where, in_flight)
    return _grow(state, held.words(base, where), in_flight)


@dataclass(frozen=True, slots=True)
class Target:
    """What chats are held to on one upstream: the SLO, or just above the engine's floor when
    the SLO is out of this engine's reach (holding lower lanes lower would buy chats nothing)."""

    slo: float  # slo.interactive_ttft_ratio
    floor: float | None  # the engine's floor, as a ratio to the baseline (None: not learned)

    @property
    def ratio(self) -> float:
        return self.slo if self.floor is None else max(self.slo, self.floor * (1 + TOLERANCE))

    @property
    def out_of_reach(self) -> bool:
        return self.ratio > self.slo

    def words(self, base: float, where: str) -> str:
        """The target as a reason names it (the effective one, when it is not the SLO)."""
        ms = self.ratio * base * 1000
        if not self.out_of_reach:
            return f"the target {ms:.0f} ms ({self.slo:g} x baseline, {where})"
        return (
            f"the effective target {ms:.0f} ms (x{self.ratio:.2f} of baseline, {where}: the "
            f"SLO x{self.slo:g} is below this engine's floor x{self.floor or 0.0:.2f})"
        )

    def reach_reason(self) -> str:
        if self.out_of_reach:
            return (
                f"the SLO x{self.slo:g} is below this engine's floor (x{self.floor or 0.0:.2f} "
                f"of baseline with lower lanes running): chats are held to x{self.ratio:.2f} "
                "instead, and lower lanes may grow while chats stay within it"
            )
        return f"this engine's floor is within reach of the SLO x{self.slo:g} again"


def target(state: UpstreamLimits) -> Target:
    """What chats are held to now; the floor counts once measured against a pinned or learned
    baseline (not the provisional one)."""
    config = state.config
    learned = config.baseline_ttft_s is not None or len(state.solo) >= config.learn_min
    base = baseline(state)[0] if learned else None
    floor = floor_ttft(state.curve, sum(entry.floor for entry in state.lanes))
    return Target(config.ttft_ratio, None if base is None or floor is None else floor / base)


def tick(state: UpstreamLimits, now: float, chats_in_flight: int) -> Result:
    """Time passed: with no chat for ``chat_idle_s``, lower lanes may use every slot."""
    if chats_in_flight > 0:
        return replace(state, last_chat_at=now), ()
    until = idle_at(state)
    if until is None or now < until:
        return state, ()
    lanes = tuple(replace(entry, limit=entry.bound) for entry in state.lanes)
    reason = f"no chat for {state.config.chat_idle_s:g} s: lower lanes may use every slot"
    new_state = replace(state, lanes=lanes, active=False, streak=0, reason=reason)
    return new_state, _changes(state, new_state, reason)


def idle_at(state: UpstreamLimits) -> float | None:
    """When the state goes idle if no chat comes (None: it is idle already)."""
    if not state.active or state.last_chat_at is None:
        return None
    return state.last_chat_at + state.config.chat_idle_s


def _shrink(
    state: UpstreamLimits,
    ttft_s: float,
    held: Target,
    base: float,
    where: str,
    in_flight: Mapping[str, int],
) -> Result:
    gradient = max(MIN_GRADIENT, held.ratio * base / ttft_s)
    lanes = []
    for entry in state.lanes:
        if in_flight.get(entry.lane, 0) > entry.limit:  # the last cut has not drained yet
            lanes.append(entry)
            continue
        new = max(entry.floor, min(entry.limit - 1, math.floor(entry.limit * gradient)))
        protected = new if entry.protected is None else min(entry.protected, new)
        lanes.append(replace(entry, limit=new, protected=protected))
    reason = f"chat TTFT {ttft_s * 1000:.0f} ms over {held.words(base, where)}"
    if all(entry.limit == entry.floor for entry in lanes):
        reason += "; lower lanes at their floor"
        if held.floor is None:
            reason += (
                ": the target is below what this engine gives with them running (learning "
                "its floor, then chats are held just above it; offload them to do better)"
            )
    new_state = replace(state, lanes=tuple(lanes), streak=0, reason=reason)
    return new_state, _changes(state, new_state, reason)


def _grow(state: UpstreamLimits, words: str, in_flight: Mapping[str, int]) -> Result:
    streak = state.streak + 1
    if streak < state.config.probe_after:
        return replace(state, streak=streak), ()
    lanes = tuple(
        replace(
            entry,
            protected=entry.limit,
            limit=min(entry.bound, entry.limit + 1)
            if in_flight.get(entry.lane, 0) >= entry.limit
            else entry.limit,
        )
        for entry in state.lanes
    )
    reason = f"{streak} chats in a row within {words}: limit kept as protective, probing one more"
    new_state = replace(state, lanes=lanes, streak=0, reason=reason)
    return new_state, _changes(state, new_state, reason)


def _changes(old: UpstreamLimits, new: UpstreamLimits, reason: str) -> tuple[Change, ...]:
    before = {entry.lane: entry.limit for entry in old.lanes}
    return tuple(
        Change(entry.lane, before[entry.lane], entry.limit, reason)
        for entry in new.lanes
        if entry.lane in before and before[entry.lane] != entry.limit
    )


def _clip(value: int, entry: LaneLimit) -> int:
    return max(entry.floor, min(entry.bound, value))
