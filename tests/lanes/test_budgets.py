"""Token-budget windows: arithmetic on plain values, then a hypothesis state machine with a fake
clock checked against an independent model of every window."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway.lanes.budgets import (
    WINDOW_SECONDS,
    BudgetLedger,
    Refusal,
    Reservation,
    ScopeKey,
    SpendRow,
    WindowKey,
    WindowState,
)
from gateway.policy.spec import Budget

LANE: ScopeKey = ("lane", "batch")
ALICE: ScopeKey = ("client", "alice")
MINUTE = Budget(tokens_per_minute=100)
DAY = 86400.0


def reserve(
    ledger: BudgetLedger, tokens: int, now: float, *scopes: tuple[ScopeKey, Budget]
) -> Reservation:
    result = ledger.reserve(list(scopes) or [(LANE, MINUTE)], tokens, now)
    assert isinstance(result, Reservation), result
    return result


def refuse(
    ledger: BudgetLedger, tokens: int, now: float, *scopes: tuple[ScopeKey, Budget]
) -> Refusal:
    result = ledger.reserve(list(scopes) or [(LANE, MINUTE)], tokens, now)
    assert isinstance(result, Refusal), result
    return result


def minute(
    ledger: BudgetLedger, now: float, scope: ScopeKey = LANE, budget: Budget = MINUTE
) -> WindowState:
    (state,) = ledger.remaining(scope, budget, now)
    return state


# -- arithmetic --------------------------------------------------------------------------------


def test_window_seconds_come_from_the_budget_spec() -> None:
    assert WINDOW_SECONDS == {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


def test_reserve_then_settle_replaces_the_estimate() -> None:
    ledger = BudgetLedger()
    r = reserve(ledger, 30, 10.0)
    assert (r.scopes, r.tokens, r.windows) == ((LANE,), 30, ((LANE, "minute", 0),))
    assert minute(ledger, 10.0) == WindowState("minute", 100, 0, 30, 70, 50.0)
    assert ledger.settle(r, 20, 12.0)
    assert minute(ledger, 12.0) == WindowState("minute", 100, 20, 0, 80, 48.0)


def test_settle_with_zero_usage_frees_the_whole_estimate() -> None:
    ledger = BudgetLedger()
    assert ledger.settle(reserve(ledger, 30, 10.0), 0, 11.0)
    assert minute(ledger, 11.0) == WindowState("minute", 100, 0, 0, 100, 49.0)
    assert ledger.drain_settled() == []  # nothing was spent, nothing to persist


def test_release_cancels_the_reservation() -> None:
    ledger = BudgetLedger()
    settled = reserve(ledger, 10, 1.0)
    ledger.settle(settled, 10, 1.0)
    assert ledger.release(reserve(ledger, 40, 2.0))
    assert minute(ledger, 2.0) == WindowState("minute", 100, 10, 0, 90, 58.0)


def test_settle_and_release_act_once() -> None:
    ledger = BudgetLedger()
    r = reserve(ledger, 30, 0.0)
    assert ledger.settle(r, 25, 1.0)
    assert not ledger.settle(r, 25, 1.0)
    assert not ledger.release(r)
    released = reserve(ledger, 30, 1.0)
    assert ledger.release(released)
    assert not ledger.release(released)
    assert not ledger.settle(released, 30, 1.0)
    assert minute(ledger, 1.0) == WindowState("minute", 100, 25, 0, 75, 59.0)


def test_reservations_in_flight_count_against_the_limit() -> None:
    ledger = BudgetLedger()
    reserve(ledger, 60, 0.0)
    reserve(ledger, 40, 0.0)
    assert refuse(ledger, 1, 0.0) == Refusal(LANE, "minute", 100, 0, 100, 1, 60.0)


def test_windows_roll_exactly_at_the_boundary() -> None:
    ledger = BudgetLedger()
    ledger.settle(reserve(ledger, 100, 0.0), 100, 0.0)
    assert refuse(ledger, 1, 59.75).retry_after_s == 0.25
    r = reserve(ledger, 100, 60.0)
    assert r.windows == ((LANE, "minute", 1),)
    assert minute(ledger, 60.0).reset_s == 60.0


def test_zero_tokens_fit_a_full_window_but_not_an_overspent_one() -> None:
    ledger = BudgetLedger()
    ledger.settle(reserve(ledger, 100, 0.0), 100, 0.0)
    reserve(ledger, 0, 1.0)
    ledger.settle(reserve(ledger, 0, 1.0), 5, 1.0)  # 105 > 100: overspent
    assert refuse(ledger, 0, 2.0).used == 105


@pytest.mark.parametrize(
    ("now", "window", "retry"),
    [
        (3 * DAY + 5 * 3600 + 100, "hour", 3500.0),
        (3 * DAY + 5 * 3600 + 100, "day", DAY - 5 * 3600 - 100),
        (0.0, "day", DAY),
    ],
)
def test_retry_after_is_the_time_until_the_refusing_window_ends(
    now: float, window: str, retry: float
) -> None:
    budget = Budget(tokens_per_hour=10) if window == "hour" else Budget(tokens_per_day=10)
    ledger = BudgetLedger()
    reserve(ledger, 10, now, (LANE, budget))
    refusal = refuse(ledger, 1, now, (LANE, budget))
    assert (refusal.window, refusal.retry_after_s, refusal.never_fits) == (window, retry, False)


def test_of_several_refusing_windows_the_longest_wait_wins() -> None:
    budget = Budget(tokens_per_minute=50, tokens_per_hour=80, tokens_per_day=1000)
    ledger = BudgetLedger()
    reserve(ledger, 50, 30.0, (LANE, budget))
    refusal = refuse(ledger, 40, 30.0, (LANE, budget))
    assert (refusal.window, refusal.retry_after_s) == ("hour", 3570.0)


def test_a_request_larger_than_a_limit_never_fits() -> None:
    budget = Budget(tokens_per_minute=50, tokens_per_day=10_000)
    ledger = BudgetLedger()
    reserve(ledger, 10_000 - 60, 0.0, (ALICE, Budget(tokens_per_day=10_000)))
    refusal = refuse(ledger, 60, 0.0, (ALICE, budget))
    assert refusal.never_fits and refusal.window == "minute" and refusal.requested == 60


def test_lane_and_client_are_both_checked() -> None:
    lane, client = Budget(tokens_per_minute=100), Budget(tokens_per_minute=50)
    ledger = BudgetLedger()
    r = reserve(ledger, 40, 0.0, (LANE, lane), (ALICE, client))
    assert r.windows == ((LANE, "minute", 0), (ALICE, "minute", 0))
    assert refuse(ledger, 20, 0.0, (LANE, lane), (ALICE, client)).scope == ALICE
    reserve(ledger, 55, 0.0, (LANE, lane), (("client", "bob"), Budget()))
    assert reserve(ledger, 5, 0.0, (ALICE, client)).tokens == 5
    assert refuse(ledger, 6, 0.0, (LANE, lane), (ALICE, client)).scope == LANE


def test_a_refused_reservation_changes_nothing() -> None:
    lane, client = Budget(tokens_per_minute=100, tokens_per_hour=500), Budget(tokens_per_day=50)
    ledger = BudgetLedger()
    first = reserve(ledger, 30, 0.0, (LANE, lane), (ALICE, client))
    before = (ledger.remaining(LANE, lane, 1.0), ledger.remaining(ALICE, client, 1.0))
    count = ledger.window_count()
    refuse(ledger, 30, 1.0, (LANE, lane), (ALICE, client))
    assert (ledger.remaining(LANE, lane, 1.0), ledger.remaining(ALICE, client, 1.0)) == before
    assert ledger.window_count() == count
    assert ledger.drain_settled() == []
    assert reserve(ledger, 1, 1.0, (LANE, lane)).id == first.id + 1


def test_unlimited_budget_reserves_nothing() -> None:
    ledger = BudgetLedger()
    r = reserve(ledger, 10**9, 0.0, (LANE, Budget()))
    assert r.windows == () and ledger.remaining(LANE, Budget(), 0.0) == []
    assert ledger.settle(r, 10**9, 1.0) and ledger.window_count() == 0


def test_invalid_arguments() -> None:
    ledger = BudgetLedger()
    with pytest.raises(ValueError, match="tokens"):
        ledger.reserve([(LANE, MINUTE)], -1, 0.0)
    with pytest.raises(ValueError, match="twice"):
        ledger.reserve([(LANE, MINUTE), (LANE, MINUTE)], 1, 0.0)
    with pytest.raises(ValueError, match="actual_tokens"):
        ledger.settle(reserve(ledger, 1, 0.0), -1, 0.0)


# -- settle window, overspend, memory ----------------------------------------------------------


def test_settle_lands_in_the_window_of_the_reservation() -> None:
    budget = Budget(tokens_per_minute=100, tokens_per_hour=1000)
    ledger = BudgetLedger()
    r = reserve(ledger, 80, 59.0, (LANE, budget))
    ledger.settle(r, 70, 61.0)
    assert ledger.remaining(LANE, budget, 61.0) == [
        WindowState("minute", 100, 0, 0, 100, 59.0),
        WindowState("hour", 1000, 70, 0, 930, 3539.0),
    ]
    rows = sorted(ledger.drain_settled(), key=lambda row: row.window)
    assert rows == [SpendRow(LANE, "hour", 0, 70), SpendRow(LANE, "minute", 0, 70)]


def test_overspend_is_charged_and_remaining_never_goes_negative() -> None:
    ledger = BudgetLedger()
    ledger.settle(reserve(ledger, 50, 0.0), 130, 1.0)  # the prompt estimate was far too low
    assert minute(ledger, 1.0) == WindowState("minute", 100, 130, 0, 0, 59.0)
    assert refuse(ledger, 1, 1.0).used == 130
    assert reserve(ledger, 100, 60.0).windows == ((LANE, "minute", 1),)


def test_ended_windows_are_dropped_unless_a_reservation_still_sits_there() -> None:
    ledger = BudgetLedger()
    ledger.settle(reserve(ledger, 10, 0.0), 10, 0.0)
    in_flight = reserve(ledger, 10, 59.0)
    minute(ledger, 61.0)
    assert ledger.window_count() == 1  # minute 0 holds the stream that is still running
    ledger.settle(in_flight, 12, 61.0)
    minute(ledger, 61.5)
    assert ledger.window_count() == 0
    assert ledger.drain_settled() == [SpendRow(LANE, "minute", 0, 22)]


def test_memory_stays_bounded_over_a_long_run() -> None:
    budget = Budget(tokens_per_minute=10**6, tokens_per_hour=10**7, tokens_per_day=10**8)
    ledger = BudgetLedger()
    for step in range(5000):
        now = step * 37.0
        r = reserve(ledger, 5, now, (LANE, budget), (ALICE, budget))
        ledger.settle(r, 5, now + 1.0)
        assert ledger.window_count() <= 6
    ledger.drain_settled()


# -- persistence -------------------------------------------------------------------------------


def test_drain_reports_each_change_once_as_absolute_totals() -> None:
    ledger = BudgetLedger()
    ledger.settle(reserve(ledger, 10, 0.0), 7, 0.0)
    assert ledger.drain_settled() == [SpendRow(LANE, "minute", 0, 7)]
    assert ledger.drain_settled() == []
    ledger.settle(reserve(ledger, 10, 1.0), 5, 1.0)
    assert ledger.drain_settled() == [SpendRow(LANE, "minute", 0, 12)]


def test_restart_restores_the_same_remaining() -> None:
    lane = Budget(tokens_per_minute=1000, tokens_per_hour=5000, tokens_per_day=20000)
    client = Budget(tokens_per_minute=300, tokens_per_day=900)
    now = 2 * DAY + 3600 * 7 + 42.0
    ledger = BudgetLedger()
    stored: dict[WindowKey, int] = {}
    for i, actual in enumerate([120, 0, 75, 200]):
        r = reserve(ledger, 250, now - 3600 + i * 1000, (LANE, lane), (ALICE, client))
        ledger.settle(r, actual, now - 3600 + i * 1000 + 5)
        stored.update(
            {(row.scope, row.window, row.index): row.tokens for row in ledger.drain_settled()}
        )
    rows = [SpendRow(scope, name, index, tokens) for (scope, name, index), tokens in stored.items()]
    restarted = BudgetLedger()
    restarted.load(rows, now)
    for scope, budget in ((LANE, lane), (ALICE, client)):
        assert restarted.remaining(scope, budget, now) == ledger.remaining(scope, budget, now)
    assert restarted.drain_settled() == []  # loaded spend is already stored


def test_load_skips_ended_windows_and_rejects_unknown_ones() -> None:
    ledger = BudgetLedger()
    ledger.load([SpendRow(LANE, "minute", 0, 50), SpendRow(LANE, "hour", 0, 50)], 60.0)
    assert ledger.window_count() == 1
    with pytest.raises(ValueError, match="fortnight"):
        ledger.load([SpendRow(LANE, "fortnight", 0, 1)], 0.0)


# -- properties --------------------------------------------------------------------------------

BOB: ScopeKey = ("client", "bob")
BUDGETS: dict[ScopeKey, Budget] = {
    LANE: Budget(tokens_per_minute=1000, tokens_per_hour=4000),
    ALICE: Budget(tokens_per_minute=400, tokens_per_day=3000),
    BOB: Budget(),
}


class LedgerMachine(RuleBasedStateMachine):
    """Random reserve/settle/release/advance/restart, checked against a per-window model.

    "Never overspent": for every window W at every moment,
        settled(W) + reserved(W) <= limit(W) + sum(max(0, actual - estimate))
    over the requests settled into W — reservations never exceed a limit; only usage beyond
    a request's own estimate can, and it is charged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ledger = BudgetLedger()
        self.now = 0.0
        self.open: dict[int, Reservation] = {}
        self.settled: dict[WindowKey, int] = {}
        self.reserved: dict[WindowKey, int] = {}
        self.excess: dict[WindowKey, int] = {}
        self.stored: dict[WindowKey, int] = {}

    @initialize(start=st.sampled_from([0.0, 59.0, 1_700_000_000.0, 1_700_003_599.5]))
    def start(self, start: float) -> None:
        self.now = start

    def _windows(self, scopes: list[ScopeKey]) -> list[tuple[WindowKey, int]]:
        return [
            ((scope, name, math.floor(self.now / seconds)), limit)
            for scope in scopes
            for name, seconds, limit in BUDGETS[scope].limits()
        ]

    @rule(client=st.sampled_from([ALICE, BOB, None]), tokens=st.integers(0, 700))
    def reserve(self, client: ScopeKey | None, tokens: int) -> None:
        scopes = [LANE] if client is None else [LANE, client]
        windows = self._windows(scopes)
        fits = all(
            self.settled.get(k, 0) + self.reserved.get(k, 0) + tokens <= limit
            for k, limit in windows
        )
        before = self._snapshot()
        result = self.ledger.reserve([(s, BUDGETS[s]) for s in scopes], tokens, self.now)
        if isinstance(result, Refusal):
            assert not fits
            assert self._snapshot() == before
            key = (
                result.scope,
                result.window,
                math.floor(self.now / WINDOW_SECONDS[result.window]),
            )
            assert (result.used, result.reserved) == (
                self.settled.get(key, 0),
                self.reserved.get(key, 0),
            )
            assert result.used + result.reserved + tokens > result.limit
            assert 0 < result.retry_after_s <= WINDOW_SECONDS[result.window]
            return
        assert fits
        assert list(result.windows) == [k for k, _ in windows]
        self.open[result.id] = result
        for key in result.windows:
            self.reserved[key] = self.reserved.get(key, 0) + tokens

    @precondition(lambda self: self.open)
    @rule(data=st.data(), extra=st.integers(-700, 300))
    def settle(self, data: st.DataObject, extra: int) -> None:
        r = self.open.pop(data.draw(st.sampled_from(sorted(self.open))))
        actual = max(0, r.tokens + extra)  # often below the estimate, sometimes above
        assert self.ledger.settle(r, actual, self.now)
        assert not self.ledger.settle(r, actual, self.now)
        for key in r.windows:
            self.reserved[key] -= r.tokens
            self.settled[key] = self.settled.get(key, 0) + actual
            self.excess[key] = self.excess.get(key, 0) + max(0, actual - r.tokens)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        r = self.open.pop(data.draw(st.sampled_from(sorted(self.open))))
        assert self.ledger.release(r)
        assert not self.ledger.release(r)
        for key in r.windows:
            self.reserved[key] -= r.tokens

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 7.0, 30.0, 59.5, 60.0, 600.0, 3600.0, 86400.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def drain(self) -> None:
        for row in self.ledger.drain_settled():
            key = (row.scope, row.window, row.index)
            assert row.tokens == self.settled[key]
            self.stored[key] = row.tokens

    @precondition(lambda self: not self.open)  # a restart drops the requests in flight
    @rule()
    def restart(self) -> None:
        self.drain()
        rows = [
            SpendRow(s, name, index, tokens) for (s, name, index), tokens in self.stored.items()
        ]
        self.ledger = BudgetLedger()
        self.ledger.load(rows, self.now)

    def _snapshot(self) -> list[list[WindowState]]:
        return [self.ledger.remaining(s, BUDGETS[s], self.now) for s in BUDGETS]

    @invariant()
    def matches_the_model_and_never_overspends(self) -> None:
        for scope, budget in BUDGETS.items():
            states = self.ledger.remaining(scope, budget, self.now)
            for state, (key, limit) in zip(states, self._windows([scope]), strict=True):
                used, reserved = self.settled.get(key, 0), self.reserved.get(key, 0)
                assert (state.used, state.reserved, state.limit) == (used, reserved, limit)
                assert state.remaining == max(0, limit - used - reserved) >= 0
                assert 0 < state.reset_s <= WINDOW_SECONDS[state.window]
        for (scope, name, index), reserved in self.reserved.items():
            limit = next(lim for n, _, lim in BUDGETS[scope].limits() if n == name)
            key = (scope, name, index)
            assert reserved >= 0
            assert self.settled.get(key, 0) + reserved <= limit + self.excess.get(key, 0)

    @invariant()
    def memory_is_bounded(self) -> None:
        live = sum(len(b.limits()) for b in BUDGETS.values())
        held = sum(len(r.windows) for r in self.open.values())
        assert self.ledger.window_count() <= live + held

    def teardown(self) -> None:
        for r in list(self.open.values()):
            if r.id % 2:
                assert self.ledger.release(r)
            else:
                assert self.ledger.settle(r, r.tokens, self.now)
            for key in r.windows:
                self.reserved[key] -= r.tokens
        self.open.clear()
        assert all(value == 0 for value in self.reserved.values())
        for scope, budget in BUDGETS.items():
            assert all(s.reserved == 0 for s in self.ledger.remaining(scope, budget, self.now))
        # A leaked reservation would pin its window: two days on, every window must be gone.
        self.ledger.remaining(LANE, BUDGETS[LANE], self.now + 2 * DAY)
        assert self.ledger.window_count() == 0


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_ledger_state_machine = LedgerMachine.TestCase
