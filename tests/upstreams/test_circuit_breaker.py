"""Circuit breaker transitions, driven by a fake clock (plain floats)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.upstreams.circuit_breaker import (
    MAX_TRANSITIONS_KEPT,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Outcome,
)

CONFIG = BreakerConfig(failures_to_open=5, busy_to_open=3, cooldown_s=10.0, max_cooldown_s=35.0)


def tripped(config: BreakerConfig = CONFIG, now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(config)
    for _ in range(config.failures_to_open):
        breaker.record(Outcome.FAILURE, now, "connection refused")
    return breaker


def test_starts_closed_and_allows() -> None:
    breaker = CircuitBreaker(CONFIG)
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert breaker.allow(0.0)
    assert breaker.open_until is None
    assert breaker.transitions == ()


def test_opens_after_consecutive_failures_with_reason() -> None:
    breaker = CircuitBreaker(CONFIG)
    for _ in range(4):
        breaker.record(Outcome.FAILURE, 1.0, "connection refused")
    assert breaker.state(1.0) is BreakerState.CLOSED
    assert breaker.consecutive_failures == 4
    breaker.record(Outcome.FAILURE, 2.0, "connection refused")
    assert breaker.state(2.0) is BreakerState.OPEN
    assert breaker.reason == "5 consecutive failures: connection refused"
    assert breaker.open_until == 12.0
    assert not breaker.allow(11.99)
    (transition,) = breaker.transitions
    assert (transition.at, transition.source, transition.target) == (
        2.0,
        BreakerState.CLOSED,
        BreakerState.OPEN,
    )


def test_opens_after_consecutive_busy_answers_sooner() -> None:
    breaker = CircuitBreaker(CONFIG)
    for _ in range(2):
        breaker.record(Outcome.BUSY, 0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.record(Outcome.BUSY, 0.0, "server busy")
    assert breaker.state(0.0) is BreakerState.OPEN
    assert breaker.reason == "3 consecutive busy answers (503): server busy"


def test_reason_without_detail() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=1))
    breaker.record(Outcome.FAILURE, 0.0)
    assert breaker.reason == "1 consecutive failures"


def test_busy_and_failures_are_counted_separately() -> None:
    breaker = CircuitBreaker(CONFIG)
    for outcome in [Outcome.FAILURE, Outcome.BUSY] * 2 + [Outcome.FAILURE] * 2:
        breaker.record(outcome, 0.0)
    # 4 failures and 2 busy interleaved: neither streak has reached its threshold.
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert (breaker.consecutive_failures, breaker.consecutive_busy) == (4, 2)
    breaker.record(Outcome.BUSY, 0.0)
    assert breaker.state(0.0) is BreakerState.OPEN
    assert "busy" in breaker.reason


def test_success_resets_both_counters() -> None:
    breaker = CircuitBreaker(CONFIG)
    for outcome in [Outcome.FAILURE] * 4 + [Outcome.BUSY] * 2:
        breaker.record(outcome, 0.0)
    breaker.record(Outcome.SUCCESS, 0.0)
    assert (breaker.consecutive_failures, breaker.consecutive_busy) == (0, 0)
    for _ in range(4):
        breaker.record(Outcome.FAILURE, 0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED


def test_open_to_half_open_after_cooldown() -> None:
    breaker = tripped()
    assert breaker.state(9.99) is BreakerState.OPEN
    assert breaker.state(10.0) is BreakerState.HALF_OPEN
    assert len(breaker.transitions) == 1  # state() does not mutate
    assert breaker.allow(10.0)
    assert breaker.transitions[-1].target is BreakerState.HALF_OPEN
    assert breaker.transitions[-1].at == 10.0
    assert breaker.reason == "cooldown of 10s elapsed; probing"


def test_half_open_admits_one_probe_at_a_time() -> None:
    breaker = tripped()
    assert breaker.allow(10.0)
    assert not breaker.allow(10.5)
    assert not breaker.allow(11.0)
    breaker.release_probe()
    assert breaker.allow(11.0)
    assert not breaker.allow(11.0)


def test_probe_success_closes_and_resets_cooldown() -> None:
    breaker = tripped()
    assert breaker.allow(10.0)
    breaker.record(Outcome.FAILURE, 10.5)  # re-open with 20 s
    assert breaker.cooldown_s == 20.0
    assert breaker.allow(30.5)
    breaker.record(Outcome.SUCCESS, 31.0)
    assert breaker.state(31.0) is BreakerState.CLOSED
    assert breaker.reason == "1 probe(s) succeeded"
    assert breaker.cooldown_s == 10.0
    assert breaker.allow(31.0) and breaker.allow(31.0)


@pytest.mark.parametrize(("outcome", "word"), [(Outcome.FAILURE, "failed"), (Outcome.BUSY, "busy")])
def test_probe_failure_or_busy_reopens_with_doubled_cooldown(outcome: Outcome, word: str) -> None:
    breaker = tripped()
    assert breaker.allow(10.0)
    breaker.record(outcome, 10.0, "timeout")
    assert breaker.state(10.0) is BreakerState.OPEN
    assert breaker.open_until == 30.0
    assert word in breaker.reason and "timeout" in breaker.reason and "20s" in breaker.reason


def test_cooldown_doubles_up_to_the_cap() -> None:
    breaker = tripped()
    now, cooldowns = 0.0, []
    for _ in range(5):
        now = breaker.open_until or now
        assert breaker.allow(now)
        breaker.record(Outcome.FAILURE, now)
        cooldowns.append(breaker.cooldown_s)
    assert cooldowns == [20.0, 35.0, 35.0, 35.0, 35.0]


def test_half_open_needs_the_configured_number_of_probes() -> None:
    breaker = tripped(BreakerConfig(failures_to_open=1, half_open_probes=2))
    assert breaker.allow(10.0)
    breaker.record(Outcome.SUCCESS, 10.0)
    assert breaker.state(10.0) is BreakerState.HALF_OPEN
    assert breaker.allow(10.0)
    assert not breaker.allow(10.0)
    breaker.record(Outcome.SUCCESS, 10.1)
    assert breaker.state(10.1) is BreakerState.CLOSED
    assert breaker.reason == "2 probe(s) succeeded"


def test_results_while_open_are_ignored() -> None:
    breaker = tripped()
    breaker.record(Outcome.SUCCESS, 5.0)
    breaker.record(Outcome.FAILURE, 5.0)
    assert breaker.state(5.0) is BreakerState.OPEN
    assert breaker.open_until == 10.0


def test_record_after_cooldown_counts_as_the_probe() -> None:
    breaker = tripped()
    breaker.record(Outcome.SUCCESS, 12.0)  # a straggler, judged as the probe (documented)
    assert breaker.state(12.0) is BreakerState.CLOSED


def test_reclosed_breaker_needs_a_full_streak_again() -> None:
    breaker = tripped()
    assert breaker.allow(10.0)
    breaker.record(Outcome.SUCCESS, 10.0)
    for _ in range(4):
        breaker.record(Outcome.FAILURE, 11.0)
    assert breaker.state(11.0) is BreakerState.CLOSED


def test_transitions_are_bounded_but_counted() -> None:
    breaker = tripped(BreakerConfig(failures_to_open=1, cooldown_s=1.0, max_cooldown_s=1.0))
    now = 0.0
    for _ in range(40):
        now += 1.0
        assert breaker.allow(now)
        breaker.record(Outcome.FAILURE, now)
    assert len(breaker.transitions) == MAX_TRANSITIONS_KEPT
    assert breaker.transition_count == 81


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failures_to_open": 0},
        {"busy_to_open": 0},
        {"half_open_probes": 0},
        {"cooldown_s": 0.0},
        {"cooldown_s": 200.0, "max_cooldown_s": 100.0},
    ],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------

_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["allow", "success", "failure", "busy", "release"]),
        st.floats(min_value=0.0, max_value=30.0),
    ),
    max_size=200,
)
_CONFIGS = st.builds(
    BreakerConfig,
    failures_to_open=st.integers(1, 6),
    busy_to_open=st.integers(1, 4),
    cooldown_s=st.floats(0.5, 20.0),
    max_cooldown_s=st.just(60.0),
    half_open_probes=st.integers(1, 3),
)
_OUTCOMES = {"success": Outcome.SUCCESS, "failure": Outcome.FAILURE, "busy": Outcome.BUSY}


@given(_CONFIGS, _ACTIONS)
def test_half_open_never_has_two_probes_and_open_never_allows(
    config: BreakerConfig, actions: list[tuple[str, float]]
) -> None:
    breaker = CircuitBreaker(config)
    now, probes_in_flight = 0.0, 0
    for action, step in actions:
        now += step
        before = breaker.state(now)
        if action == "allow":
            allowed = breaker.allow(now)
            if before is BreakerState.OPEN:
                assert not allowed
                assert breaker.open_until is not None and now < breaker.open_until
            if allowed and breaker.state(now) is BreakerState.HALF_OPEN:
                probes_in_flight += 1
                assert probes_in_flight <= 1
        elif action == "release":
            breaker.release_probe()
            probes_in_flight = 0
        else:
            breaker.record(_OUTCOMES[action], now)
            probes_in_flight = 0
        if breaker.state(now) is BreakerState.OPEN:
            assert not breaker.allow(now)


@given(_CONFIGS, st.lists(st.sampled_from(list(Outcome)), max_size=100))
def test_cooldown_stays_within_bounds(config: BreakerConfig, outcomes: list[Outcome]) -> None:
    breaker = CircuitBreaker(config)
    now, hard = 0.0, False  # hard: a FAILURE since the last success
    for outcome in outcomes:
        now = max(now, breaker.open_until or now)
        breaker.allow(now)
        breaker.record(outcome, now)  # one source: 5xx answers alone never open it
        hard = (hard or outcome is Outcome.FAILURE) and outcome is not Outcome.SUCCESS
        assert config.cooldown_s <= breaker.cooldown_s <= config.max_cooldown_s
        if breaker.state(now) is BreakerState.CLOSED:
            if hard:
                assert breaker.consecutive_failures < config.failures_to_open
            assert breaker.consecutive_busy < config.busy_to_open


# --- evidence: one client's 5xx answers never open it (issue 18) -----------------------------


def test_one_sources_error_answers_never_open() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=3))
    for second in range(100):
        breaker.record(Outcome.ERROR_ANSWER, float(second), "answered 500", "mallory")
    assert breaker.state(100.0) is BreakerState.CLOSED


def test_error_answers_from_several_sources_open() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=3))
    for source in ("alice", "bob", "alice"):
        breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", source)
    assert breaker.state(1.0) is BreakerState.OPEN


def test_a_connection_failure_is_evidence_for_the_error_answers_around_it() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=3))
    breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", "mallory")
    breaker.record(Outcome.FAILURE, 1.0, "connection refused", "alice")
    breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", "mallory")
    assert breaker.state(1.0) is BreakerState.OPEN


def test_a_success_forgets_the_sources() -> None:
    breaker = CircuitBreaker(BreakerConfig(failures_to_open=2))
    breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", "alice")
    breaker.record(Outcome.SUCCESS, 1.0)
    breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", "bob")
    assert breaker.state(1.0) is BreakerState.CLOSED
    breaker.record(Outcome.ERROR_ANSWER, 1.0, "answered 500", "bob")
    assert breaker.state(1.0) is BreakerState.CLOSED  # one source since the success


@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=60), st.integers(1, 6))
def test_error_answers_open_exactly_when_several_sources_reach_the_count(
    sources: list[str | None], failures: int
) -> None:
    config = BreakerConfig(failures_to_open=failures)
    breaker = CircuitBreaker(config)
    for count, source in enumerate(sources, 1):
        breaker.record(Outcome.ERROR_ANSWER, 0.0, "answered 500", source)
        seen = len(set(sources[:count]))
        expected = count >= failures and seen >= config.sources_to_open
        assert (breaker.state(0.0) is BreakerState.OPEN) is expected
        if expected:
            break
