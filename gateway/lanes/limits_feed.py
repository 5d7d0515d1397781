"""The shell around `gateway.lanes.limits`: feeds it, and hands the lane gate its caps.

One `AdaptiveLimits` per local lane gate, for the gate's whole life (a reload reconfigures it).
The gate calls it synchronously: on a protected lane's arrival (`arrived`, before admitting, so
a chat after a quiet spell finds the remembered limits already in force), on every change of
its in-flight counts (`counted`: were lower lanes idle while a chat ran, which makes that chat
teach the baseline), and for every admission round (`caps`, which first lets time pass: no chat
for a while, so lower lanes may use every slot). The recorder hands it each finished chat's
TTFT (`observed`). No background task: when a limit could change with time alone, a loop timer
calls the gate's `wake` (its admission round) at that moment.

Every change of limit is logged (logger ``lanegate.limits``) with its reason; `status()` is what
/admin/status, /metrics and the dashboard show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.lanes import limits
from gateway.lanes.limits import Change, LimitConfig, UpstreamLimits
from gateway.policy.spec import LaneSpec, Policy, UpstreamSpec

log = logging.getLogger("lanegate.limits")


def protected_lanes(policy: Policy) -> frozenset[str]:
    """The lanes the limits protect: those at the policy's top priority."""
    top = max((lane.priority for lane in policy.lanes), default=0)
    return frozenset(lane.name for lane in policy.lanes if lane.priority == top)


def adaptive_on(policy: Policy) -> bool:
    """On unless the policy turns it off, whenever lanes have different priorities."""
    priorities = {lane.priority for lane in policy.lanes}
    return policy.protection.enabled and len(priorities) > 1


class AdaptiveLimits:
    def __init__(self, policy: Policy, pool: Iterable[UpstreamSpec]) -> None:
        self.wake: Callable[[], None] | None = None  # the gate's admission round
        self._timer: asyncio.TimerHandle | None = None
        self._by_lane: dict[str, int] = {}  # the gate's in-flight counts, as last told
        self.states: dict[str, UpstreamLimits] = {}
        self.protected: frozenset[str] = frozenset()
        self.lower: tuple[LaneSpec, ...] = ()
        self.slots: dict[str, int] = {}
        self.ratio = policy.protection.ttft_ratio
        # Since when no lower lane has had a request in flight (None: one has, now).
        self._lower_idle_since: float | None = float("-inf")
        self.configure(policy, tuple(pool))

    @property
    def enabled(self) -> bool:
        return bool(self.states)

    def configure(self, policy: Policy, pool: tuple[UpstreamSpec, ...]) -> None:
        """Take a new policy (or the first): keep what each upstream's state learned."""
        if not adaptive_on(policy) or not pool:
            self.states, self.lower, self.protected = {}, (), frozenset()
            return
        protection = policy.protection
        config = LimitConfig(
            ttft_ratio=protection.ttft_ratio,
            chat_idle_s=protection.chat_idle_s,
            baseline_ttft_s=protection.baseline_ttft_s,
        )
        self.ratio = protection.ttft_ratio
        self.protected = protected_lanes(policy)
        self.lower = tuple(lane for lane in policy.lanes if lane.name not in self.protected)
        self.slots = {spec.name: spec.max_concurrency for spec in pool}
        states: dict[str, UpstreamLimits] = {}
        for spec in pool:
            lanes = [
                limits.lane_limit(
                    lane.name, lane.max_concurrency, lane.reserved, spec.max_concurrency
                )
                for lane in self.lower
            ]
            old = self.states.get(spec.name)
            if old is None:
                states[spec.name] = limits.start(config, lanes)
            else:
                states[spec.name], changes = limits.reconfigure(old, config, lanes)
                self._log(spec.name, changes)
        self.states = states

    # -- what the gate applies ------------------------------------------------------------------
    def caps(self, now: float) -> dict[str, int]:
        """Each lower lane's cap over the pool (the sum of its limits on the pool's upstreams),
        after letting time pass (`tick`)."""
        self._tick(now)
        return self.limits()

    def limits(self) -> dict[str, int]:
        """Each lower lane's limit over the pool, as last decided (for status; no tick)."""
        caps: dict[str, int] = {}
        for state in self.states.values():
            for entry in state.lanes:
                caps[entry.lane] = caps.get(entry.lane, 0) + entry.limit
        return caps

    def holds_back(self, lane: str, in_flight: int) -> bool:
        """Would running one more of `lane` locally slow an active chat (early offload asks)?
        Yes at its adaptive limit; and below it too while no upstream has shown that chats
        stay within the SLO with lower lanes running (the engine's floor is unknown, or above
        the SLO): then any lower request beside a chat costs it more than the SLO allows."""
        if not any(state.active for state in self.states.values()):
            return False
        limit = self.limits().get(lane)
        if limit is None:
            return False
        return in_flight >= limit or not any(
            _within_reach(limits.target(state)) for state in self.states.values()
        )

    def _tick(self, now: float) -> None:
        chats = sum(self._by_lane.get(name, 0) for name in self.protected)
        for name, state in self.states.items():
            self.states[name], changes = limits.tick(state, now, chats)
            self._log(name, changes)
        self._arm(now)

    def _arm(self, now: float) -> None:
        """Wake the gate when the idle check could open the limits (once, not per call)."""
        times = [t for t in (limits.idle_at(s) for s in self.states.values()) if t is not None]
        if not times or self.wake is None or self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (app construction): the first request arms
            return
        self._timer = loop.call_later(max(0.0, min(times) - now) + 0.01, self._woken)

    def _woken(self) -> None:
        self._timer = None
        if self.wake is not None:
            self.wake()

    # -- what feeds it -----------------------------------------------------------------------
    def arrived(self, lane: str, now: float) -> None:
        if lane not in self.protected:
            return
        for name, state in self.states.items():
            self.states[name], changes = limits.chat_arrived(state, now)
            self._log(name, changes)

    def counted(self, by_lane: Mapping[str, int], now: float) -> None:
        self._by_lane = dict(by_lane)
        lower = sum(by_lane.get(lane.name, 0) for lane in self.lower)
        if lower:
            self._lower_idle_since = None
        elif self._lower_idle_since is None:
            self._lower_idle_since = now

    def observed(
        self, lane: str, upstream: str, ttft_s: float, duration_s: float, now: float
    ) -> None:
        """A finished chat of a protected lane, with its TTFT, on one of the pool's upstreams."""
        state = self.states.get(upstream)
        if lane not in self.protected or state is None:
            return
        received_at = now - duration_s
        idle_since = self._lower_idle_since
        solo = idle_since is not None and idle_since <= received_at
        share = self._share(upstream, self._by_lane)
        self.states[upstream], changes = limits.chat_sample(state, now, ttft_s, solo, share)
        self._log(upstream, changes)
        held = limits.target(self.states[upstream])
        if limits.target(state).out_of_reach != held.out_of_reach:
            log.info("adaptive target on %s: %s", upstream, held.reach_reason())
        if changes and self.wake is not None:  # a limit grew: waiters may go now
            self.wake()

    def _share(self, upstream: str, by_lane: Mapping[str, int]) -> dict[str, int]:
        """This upstream's share of each lower lane's in-flight count (the gate counts per pool;
        with one local upstream that is the count itself)."""
        total = sum(self.slots.values()) or 1
        part = self.slots.get(upstream, 0)
        return {lane.name: -(-by_lane.get(lane.name, 0) * part // total) for lane in self.lower}

    def _log(self, upstream: str, changes: tuple[Change, ...]) -> None:
        for change in changes:
            log.info(
                "adaptive limit: lane %s on %s %d -> %d: %s",
                change.lane,
                upstream,
                change.old,
                change.new,
                change.reason,
            )

    # -- what status, metrics and the dashboard show ---------------------------------------------
    def status(self) -> dict[str, Any]:
        upstreams = []
        for name, state in self.states.items():
            base, where = limits.baseline(state)
            held = limits.target(state)
            upstreams.append(
                {
                    "upstream": name,
                    "chat_active": state.active,
                    "baseline_ttft_ms": None if base is None else round(base * 1000, 1),
                    "baseline_source": where,
                    "engine_floor_ratio": None if held.floor is None else round(held.floor, 4),
                    "effective_target_ratio": round(held.ratio, 2),
                    "reason": state.reason,
                    "lanes": [
                        {
                            "lane": entry.lane,
                            "limit": entry.limit,
                            "bound": entry.bound,
                            "floor": entry.floor,
                            "protected": entry.protected,
                        }
                        for entry in state.lanes
                    ],
                }
            )
        return {
            "enabled": self.enabled,
            "interactive_ttft_ratio": self.ratio,
            "protected_lanes": sorted(self.protected),
            "upstreams": upstreams,
        }


def _within_reach(target: limits.Target) -> bool:
    """Has this upstream shown that chats stay within the SLO beside lower lanes?"""
    return target.floor is not None and not target.out_of_reach
