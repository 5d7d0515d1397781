"""The pure parts of the shared state: key names, lease arguments, fail modes, budget windows
(checked against the local ledger), the offload view; and the lease script against the pure
admission rule it repeats, on a real Redis."""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from gateway.lanes import admission
from gateway.lanes.admission import Occupancy
from gateway.lanes.budgets import BudgetLedger, Refusal, SpendRow
from gateway.policy.spec import Budget, ClientSpec, LaneSpec
from gateway.shared import scripts as redis_scripts
from gateway.shared.plan import (
    Keys,
    LeaseOutcome,
    OffloadView,
    decode_view,
    encode_view,
    fails_open,
    lease_request,
    outcome_of,
    plan_windows,
    refusal_of,
    tightest_after,
    unavailable,
)
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

LANES = {
    "interactive": LaneSpec("interactive", 100, max_concurrency=4, reserved=2),
    "batch": LaneSpec("batch", 10, max_concurrency=3, on_redis_down="closed"),
    "heartbeat": LaneSpec("heartbeat", 50, max_concurrency=1, reserved=1),
}
CAPPED = ClientSpec("ci", "env:X", ("batch",), max_concurrency=2)


def test_keys_live_under_one_prefix() -> None:
    keys = Keys("team-a")
    assert keys.lane_leases("batch") == "team-a:lease:lane:batch"
    assert keys.client_leases("ci") == "team-a:lease:client:ci"
    assert keys.window(("lane", "batch"), "hour", 7) == "team-a:budget:lane:batch:hour:7"
    names = [
        keys.waiting,
        keys.freed_channel,
        keys.offload_leader,
        keys.offload_state,
        keys.offload_mode,
    ]
    assert all(name.startswith("team-a:") for name in names) and len(set(names)) == 5


def test_lease_request_puts_the_target_lane_first_and_the_client_last() -> None:
    keys, args = lease_request(Keys(), LANES["batch"], CAPPED, LANES, capacity=6)
    assert keys == [
        "lanegate:lease:lane:batch",
        "lanegate:lease:lane:interactive",
        "lanegate:lease:lane:heartbeat",
        "lanegate:lease:client:ci",
        "lanegate:waiting",
    ]
    assert args == [6, 2, 3, 0, 4, 2, 1, 1]
    uncapped = ClientSpec("anyone", "env:Y", ("batch",))
    keys, args = lease_request(Keys(), LANES["batch"], uncapped, LANES, capacity=6)
    assert len(keys) == 4 and args[1] == -1


def test_script_replies_and_fail_modes() -> None:
    assert outcome_of(1) is LeaseOutcome.WON
    assert outcome_of(-3) is LeaseOutcome.POOL_FULL
    with pytest.raises(ValueError):
        outcome_of(0)
    assert fails_open(LANES["interactive"]) and not fails_open(LANES["batch"])
    error = unavailable(LANES["batch"], 12.3)
    assert (error.status, error.code) == (503, "shared_state_unavailable")
    assert "on_redis_down: open" in error.message and "12 s" in error.message


windows = st.fixed_dictionaries(
    {
        "minute": st.integers(1, 500),
        "hour": st.integers(1, 5000),
        "day": st.integers(1, 50000),
    }
)


@given(
    limits=windows,
    settled=st.tuples(st.integers(0, 600), st.integers(0, 6000), st.integers(0, 60000)),
    reserved=st.integers(0, 300),
    tokens=st.integers(0, 700),
    now=st.floats(0, 1e9, allow_nan=False),
)
def test_shared_refusals_match_the_local_ledger(
    limits: dict[str, int], settled: tuple[int, int, int], reserved: int, tokens: int, now: float
) -> None:
    budget = Budget(limits["minute"], limits["hour"], limits["day"])
    scope = ("lane", "batch")
    plans = plan_windows(Keys(), [(scope, budget)], now)
    ledger = BudgetLedger()
    ledger.load(
        [SpendRow(scope, p.window, p.index, s) for p, s in zip(plans, settled, strict=True)], now
    )
    held = ledger.reserve([(scope, budget)], reserved, now)
    in_flight = 0 if isinstance(held, Refusal) else reserved
    counts = [(s, in_flight) for s in settled]
    local = ledger.reserve([(scope, budget)], tokens, now)
    shared = refusal_of(plans, counts, tokens, now)
    if isinstance(local, Refusal):
        assert shared == local
    else:
        assert shared is None
        state = tightest_after(plans, counts, tokens, now)
        assert state is not None and state.remaining == min(
            p.limit - s - r - tokens for p, (s, r) in zip(plans, counts, strict=True)
        )


def test_offload_view_round_trips_and_rejects_garbage() -> None:
    view = OffloadView("offloading", "force-offload", "operator set mode", "gw-1")
    assert decode_view(encode_view(view)) == view
    assert decode_view(encode_view(view).encode()) == view
    for raw in (None, "", "{", '{"state": "local"}', encode_view(view).replace("offloading", "x")):
        assert decode_view(raw) is None


def test_lease_script_decides_like_the_pure_admission_rule(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Random global occupancies put into Redis: the script admits exactly when
    `admission.can_admit` would over the same counts (caps, capacity, reserved slots)."""
    store = redis.Redis.from_url(redis_server.url)
    acquire = store.register_script(redis_scripts.ACQUIRE)
    rng = random.Random(11)
    keys_of = Keys("plan")
    try:
        for case in range(300):
            store.flushdb()
            capacity = rng.randint(1, 8)
            by_lane = {name: rng.randint(0, lane.max_concurrency) for name, lane in LANES.items()}
            by_client = {"ci": rng.randint(0, 2)}
            for name, count in by_lane.items():
                for i in range(count):
                    store.zadd(keys_of.lane_leases(name), {f"held-{i}": 2**50})
            for i in range(by_client["ci"]):
                store.zadd(keys_of.client_leases("ci"), {f"held-{i}": 2**50})
            lane = LANES[rng.choice(list(LANES))]
            client = rng.choice([None, CAPPED])
            keys, args = lease_request(keys_of, lane, client, LANES, capacity)
            reply = acquire(keys=keys, args=[f"new-{case}", 10_000, len(LANES), *args])
            occupancy = Occupancy(capacity, by_lane, by_client)
            expected = admission.can_admit(lane, client, occupancy, LANES)
            assert (outcome_of(int(reply)) is LeaseOutcome.WON) == expected, (
                case,
                by_lane,
                by_client,
                lane.name,
                client,
            )
            assert bool(store.exists(keys_of.waiting)) is not expected  # a loss raises the flag
    finally:
        store.close()
