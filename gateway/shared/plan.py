"""Pure parts of the state several gateways share in Redis: key names, lease arguments and
outcomes, the fail-mode decision, budget windows and their refusals, the offload view.

Owns: what each Redis key and channel is called (one prefix per deployment); the arguments the
lease script gets and what its reply means; whether a lane keeps serving while Redis is down;
which windows a budget reservation touches and, from the counts the reserve script read, the
refusal or the tightest window for the rate-limit headers; the JSON of the shared offload view.
Must not: import redis or asyncio, read the clock (``now`` comes in), or do I/O. The shell
(`shared_state`, `shared_budgets`, `shared_offload`) runs the scripts and calls this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from gateway.errors import ServiceUnavailable
from gateway.lanes.budgets import Refusal, ScopeKey, WindowState
from gateway.offload.controller import Mode, State
from gateway.policy.spec import Budget, ClientSpec, LaneSpec

# Settles of requests that outlive their window still land in it: keep window keys this much
# longer than the window itself (a day window lives two days at most).
WINDOW_GRACE_S = 3600
FREED_RECHECK_S = 0.25  # a waiter that lost a shared lease re-checks this often at most


class LeaseOutcome(Enum):
    WON = "won"  # the shared lease is held: the request may start
    LOCAL = "local"  # Redis is down and the lane fails open: local limits only
    LANE_FULL = "lane_full"  # the lane's cap is reached across all gateways
    CLIENT_FULL = "client_full"  # the client's cap is reached across all gateways
    POOL_FULL = "pool_full"  # no slot of the pool (or only others' reserved ones) is free


# The lease script's reply (an integer) → outcome.
_REPLIES = {
    1: LeaseOutcome.WON,
    -1: LeaseOutcome.LANE_FULL,
    -2: LeaseOutcome.CLIENT_FULL,
    -3: LeaseOutcome.POOL_FULL,
}


def outcome_of(reply: int) -> LeaseOutcome:
    try:
        return _REPLIES[reply]
    except KeyError:
        raise ValueError(f"unexpected lease script reply {reply!r}") from None


def fails_open(lane: LaneSpec) -> bool:
    """While Redis is unreachable, does this lane keep serving under local limits?"""
    return lane.on_redis_down != "closed"


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key and channel lanegate uses, under one prefix."""

    prefix: str = "lanegate"

    def lane_leases(self, lane: str) -> str:
        return f"{self.prefix}:lease:lane:{lane}"

    def client_leases(self, client: str) -> str:
        return f"{self.prefix}:lease:client:{client}"

    def window(self, scope: ScopeKey, window: str, index: int) -> str:
        return f"{self.prefix}:budget:{scope[0]}:{scope[1]}:{window}:{index}"

    @property
    def waiting(self) -> str:
        """Set (briefly) while a waiter somewhere lost a lease: releases then publish."""
        return f"{self.prefix}:waiting"

    @property
    def freed_channel(self) -> str:
        return f"{self.prefix}:freed"

    @property
    def offload_leader(self) -> str:
        return f"{self.prefix}:offload:leader"

    @property
    def offload_state(self) -> str:
        return f"{self.prefix}:offload:state"

    @property
    def offload_mode(self) -> str:
        return f"{self.prefix}:offload:mode"


def lease_request(
    keys: Keys,
    lane: LaneSpec,
    client: ClientSpec | None,
    lanes: Mapping[str, LaneSpec],
    capacity: int,
) -> tuple[list[str], list[int]]:
    """KEYS and the numeric ARGV tail of the lease script (see `redis_scripts.ACQUIRE`).

    KEYS: every lane's lease set (the target lane first), the client's set if it has a cap, and
    the "someone waits" flag. ARGV tail: capacity, client cap (-1: none), then (cap, reserved)
    per lane in KEYS order.
    The script repeats `admission.lane_has_room` over the global counts, so caps, the pool's
    capacity and the other lanes' reserved slots hold across all gateways.
    """
    ordered = [lane, *(other for name, other in lanes.items() if name != lane.name)]
    names = [keys.lane_leases(spec.name) for spec in ordered]
    client_cap = -1
    if client is not None and client.max_concurrency is not None:
        names.append(keys.client_leases(client.name))
        client_cap = client.max_concurrency
    names.append(keys.waiting)
    args = [capacity, client_cap]
    for spec in ordered:
        args += [spec.max_concurrency, min(spec.reserved, spec.max_concurrency)]
    return names, args


# -- budgets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """One window a reservation touches: where it lives in Redis and its limit."""

    scope: ScopeKey
    window: str
    index: int
    seconds: float
    limit: int
    key: str

    def end(self) -> float:
        return (self.index + 1) * self.seconds

    def expire_at(self) -> int:
        """Unix time the key may vanish: the window's end plus the grace for late settles."""
        return math.ceil(self.end()) + WINDOW_GRACE_S


@dataclass(frozen=True, slots=True)
class SharedReservation:
    """Tokens reserved in Redis for one request, in these windows."""

    tokens: int
    windows: tuple[WindowPlan, ...]
    headers: tuple[tuple[bytes, bytes], ...]  # x-ratelimit-* as of the reservation


def plan_windows(
    keys: Keys, scopes: Sequence[tuple[ScopeKey, Budget]], now: float
) -> list[WindowPlan]:
    """The current window of every limit of every scope, aligned like `budgets.BudgetLedger`."""
    plans = []
    for scope, budget in scopes:
        for name, seconds, limit in budget.limits():
            index = math.floor(now / seconds)
            key = keys.window(scope, name, index)
            plans.append(WindowPlan(scope, name, index, seconds, limit, key))
    return plans


def refusal_of(
    plans: Sequence[WindowPlan], counts: Sequence[tuple[int, int]], tokens: int, now: float
) -> Refusal | None:
    """The refusal, given each window's (settled, reserved) before this request; None: fits.

    Like the local ledger, the one that can never fit wins, then the longest wait.
    """
    refusals = [
        Refusal(plan.scope, plan.window, plan.limit, settled, reserved, tokens, plan.end() - now)
        for plan, (settled, reserved) in zip(plans, counts, strict=True)
        if settled + reserved + tokens > plan.limit
    ]
    if not refusals:
        return None
    return max(refusals, key=lambda r: (r.never_fits, r.retry_after_s))


def tightest_after(
    plans: Sequence[WindowPlan], counts: Sequence[tuple[int, int]], tokens: int, now: float
) -> WindowState | None:
    """The window with the least left once this reservation is counted (for the headers)."""
    states = [
        WindowState(
            plan.window,
            plan.limit,
            settled,
            reserved + tokens,
            max(0, plan.limit - settled - reserved - tokens),
            plan.end() - now,
        )
        for plan, (settled, reserved) in zip(plans, counts, strict=True)
    ]
    return min(states, key=lambda s: s.remaining, default=None)


# -- offload ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffloadView:
    """What the offload leader decided, as every gateway reads it."""

    state: str
    mode: str
    reason: str
    leader: str


def encode_view(view: OffloadView) -> str:
    return json.dumps(
        {"state": view.state, "mode": view.mode, "reason": view.reason, "leader": view.leader}
    )


def decode_view(raw: str | bytes | None) -> OffloadView | None:
    """The view stored by the leader; None when absent or unreadable (then decide locally)."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        view = OffloadView(
            str(data["state"]), str(data["mode"]), str(data["reason"]), str(data["leader"])
        )
        State(view.state)  # a state this version does not know is no view at all
        Mode(view.mode)
    except (ValueError, KeyError, TypeError):
        return None
    return view


def unavailable(lane: LaneSpec, down_for_s: float | None) -> ServiceUnavailable:
    """The 503 of a lane with ``on_redis_down: closed`` while Redis cannot be reached."""
    since = f" for {down_for_s:.0f} s" if down_for_s is not None else ""
    return ServiceUnavailable(
        f"lane {lane.name!r} is enforced across all gateways through Redis, which has been "
        f"unreachable{since}; retry shortly. Operators: check LANEGATE_REDIS_URL and the Redis "
        "server, or set `on_redis_down: open` on the lane to serve under local limits meanwhile",
        code="shared_state_unavailable",
        headers={"retry-after": "5"},
    )
