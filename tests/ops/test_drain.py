"""The pure drain state machine: phases, the deadline, the cut grace, repeated signals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.ops.drain import DRAINING_CODE, Drain, Phase, Step, cut_error


def test_serving_never_stops_or_refuses() -> None:
    drain = Drain(timeout_s=30)
    assert drain.tick(1e9, 0) is Step.WAIT and drain.tick(1e9, 5) is Step.WAIT
    assert not drain.refusing and drain.phase is Phase.SERVING


def test_drain_stops_as_soon_as_nothing_is_in_flight() -> None:
    drain = Drain(timeout_s=30)
    assert drain.on_signal(100.0) is Step.WAIT
    assert drain.refusing
    assert drain.tick(101.0, 3) is Step.WAIT
    assert drain.tick(102.0, 0) is Step.STOP
    assert drain.phase is Phase.DONE and not drain.forced


def test_deadline_cuts_then_stops_when_the_cut_requests_have_ended() -> None:
    drain = Drain(timeout_s=30, grace_s=1)
    drain.on_signal(100.0)
    assert drain.tick(129.9, 2) is Step.WAIT
    assert drain.tick(130.0, 2) is Step.CUT
    assert drain.tick(130.1, 1) is Step.WAIT
    assert drain.tick(130.2, 0) is Step.STOP


def test_requests_that_ignore_the_cut_get_only_the_grace() -> None:
    drain = Drain(timeout_s=5, grace_s=1)
    drain.on_signal(0.0)
    assert drain.tick(5.0, 1) is Step.CUT
    assert drain.tick(5.5, 1) is Step.WAIT
    assert drain.tick(6.0, 1) is Step.STOP


def test_second_signal_cuts_now_and_third_forces() -> None:
    drain = Drain(timeout_s=30)
    assert drain.on_signal(0.0) is Step.WAIT
    assert drain.on_signal(1.0) is Step.CUT and drain.phase is Phase.CUTTING
    assert drain.tick(1.1, 0) is Step.STOP and not drain.forced
    again = Drain(timeout_s=30)
    again.on_signal(0.0)
    again.on_signal(0.1)
    assert again.on_signal(0.2) is Step.STOP and again.forced


def test_refusal_is_a_503_that_sends_the_client_elsewhere() -> None:
    drain = Drain(timeout_s=30)
    drain.on_signal(0.0)
    early, late = drain.refusal(1.0), drain.refusal(29.0)
    assert early.status == 503 and early.code == DRAINING_CODE
    assert early.headers["connection"] == "close"
    assert int(early.headers["retry-after"]) > int(late.headers["retry-after"]) >= 1
    assert cut_error().status == 503 and cut_error().code == DRAINING_CODE


@given(
    timeout=st.floats(0, 120),
    grace=st.floats(0, 5),
    steps=st.lists(st.tuples(st.floats(0.001, 3), st.integers(0, 50)), max_size=200),
)
def test_the_drain_always_ends_by_timeout_plus_grace(
    timeout: float, grace: float, steps: list[tuple[float, int]]
) -> None:
    """Whatever is in flight, a tick after timeout + grace (plus one tick) says STOP."""
    drain = Drain(timeout_s=timeout, grace_s=grace)
    now = 0.0
    drain.on_signal(now)
    stopped_at = None
    for gap, in_flight in [*steps, *[(1.0, 7)] * (int(timeout + grace) + 3)]:
        now += gap
        if drain.tick(now, in_flight) is Step.STOP:
            stopped_at = now
            break
    assert stopped_at is not None
    assert stopped_at <= timeout + grace + 2 * 3  # at most one tick past each deadline
    assert drain.phase is Phase.DONE and drain.refusing
