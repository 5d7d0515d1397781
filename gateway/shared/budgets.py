"""Token budgets shared by several gateways: the same windows as `budgets`, kept in Redis.

Owns: reserve (one Lua script checks every window of the lane and client and reserves in all
of them, or in none), settle and release (scheduled off the request path, retried after a
Redis outage), and the fall-back to the local `Budgets` while Redis is down for lanes that
fail open. Must not: decide the windows or the refusal (the pure `shared_plan` does), or be on
the path of a gateway without Redis (request_flow awaits it only when Redis is configured).

A window is one hash `{settled, reserved}` that expires after the window's end plus a grace
for late settles. The script checks `settled + reserved + tokens <= limit` in every window
before it reserves, so across all gateways a window is overspent by at most what real usage
beat the estimates by (the same bound as the local ledger's). A gateway that dies holds its
in-flight reservations until their windows roll (at most one estimate per request it had).
"""

from __future__ import annotations

import functools
from collections import deque

from gateway.lanes.budget_store import Budgets, Held, _duration, _scopes
from gateway.lanes.budgets import Refusal, Reservation
from gateway.policy.spec import ClientSpec, LaneSpec
from gateway.shared import scripts as redis_scripts
from gateway.shared.plan import (
    SharedReservation,
    WindowPlan,
    fails_open,
    plan_windows,
    refusal_of,
    tightest_after,
    unavailable,
)
from gateway.shared.state import REDIS_DOWN, SharedState, Write

RETRY_LIMIT = 10_000  # settles kept for after an outage; beyond, the oldest are dropped


class SharedBudgets:
    def __init__(self, shared: SharedState, local: Budgets) -> None:
        self.shared = shared
        self.local = local
        self._reserve = shared.client.register_script(redis_scripts.BUDGET_RESERVE)
        self._settle = shared.client.register_script(redis_scripts.BUDGET_SETTLE)
        self._pending: deque[tuple[SharedReservation, int]] = deque(maxlen=RETRY_LIMIT)
        shared.on_reconnect(self._retry_pending)

    async def reserve(
        self, lane: LaneSpec, client: ClientSpec | None, tokens: int
    ) -> SharedReservation | Reservation | Refusal | None:
        """Like `Budgets.reserve`, across all gateways; the local ledger while Redis is down
        (fail-open lanes), a 503 for fail-closed lanes."""
        scopes = _scopes(lane, client)
        if not scopes:
            return None
        if self.shared.healthy:
            now = self.local.wall_clock()
            plans = plan_windows(self.shared.keys, scopes, now)
            args: list[int] = [tokens]
            for plan in plans:
                args += [plan.limit, plan.expire_at()]
            try:
                reply = await self._reserve(keys=[p.key for p in plans], args=args)
            except REDIS_DOWN as error:
                self.shared.mark_down(error)
            else:
                return _reading(plans, [int(x) for x in reply], tokens, now)
        if not fails_open(lane):
            raise unavailable(lane, None)
        return self.local.reserve(lane, client, tokens)

    hold = reserve  # the BudgetService interface (lanes.budget_store)

    def headers(
        self, lane: LaneSpec, client: ClientSpec | None, reservation: Held
    ) -> list[tuple[bytes, bytes]]:
        if isinstance(reservation, SharedReservation):
            return list(reservation.headers)
        return self.local.rate_limit_headers(lane, client)

    def settle(self, reservation: SharedReservation | Reservation | None, actual: int) -> None:
        if isinstance(reservation, SharedReservation):
            self._apply(reservation, actual)
        else:
            self.local.settle(reservation, actual)

    def release(self, reservation: SharedReservation | Reservation | None) -> None:
        if isinstance(reservation, SharedReservation):
            self._apply(reservation, 0)
        else:
            self.local.release(reservation)

    def _apply(self, reservation: SharedReservation, actual: int) -> None:
        """Settle (release: 0 tokens) off the request path; kept for after an outage."""
        args = [reservation.tokens, actual, *(p.expire_at() for p in reservation.windows)]
        keys = [p.key for p in reservation.windows]
        keep = functools.partial(self._pending.append, (reservation, actual))
        self.shared.write_soon(Write(self._settle, keys, args, keep))

    async def _retry_pending(self) -> None:
        pending, self._pending = list(self._pending), deque(maxlen=RETRY_LIMIT)
        for reservation, actual in pending:
            self._apply(reservation, actual)


def _reading(
    plans: list[WindowPlan], reply: list[int], tokens: int, now: float
) -> SharedReservation | Refusal:
    counts = [(reply[2 * i + 1], reply[2 * i + 2]) for i in range(len(plans))]
    if not reply[0]:
        refusal = refusal_of(plans, counts, tokens, now)
        if refusal is None:  # cannot happen unless the script and the plan disagree
            raise RuntimeError(f"budget script refused, but every window fits: {counts}")
        return refusal
    tightest = tightest_after(plans, counts, tokens, now)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if tightest is not None:
        headers = (
            (b"x-ratelimit-limit-tokens", str(tightest.limit).encode()),
            (b"x-ratelimit-remaining-tokens", str(tightest.remaining).encode()),
            (b"x-ratelimit-reset-tokens", _duration(tightest.reset_s).encode()),
        )
    return SharedReservation(tokens, tuple(plans), headers)
