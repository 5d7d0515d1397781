"""Upstream selection inside a pool: healthy, has the model, resident, least loaded, stable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.spec import Policy, Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.selection import Candidate, choose, default_upstream


def _spec(name: str, slots: int = 4, pool: str = "local") -> UpstreamSpec:
    return UpstreamSpec(name, pool, UpstreamKind.OLLAMA, f"http://{name}:1", slots, Timeouts())


def test_default_upstream_is_first_local() -> None:
    policy = Policy("p", (_spec("r", pool="remote"), _spec("a"), _spec("b")))
    assert default_upstream(policy).name == "a"
    assert default_upstream(Policy("p", (_spec("r", pool="remote"),))).name == "r"


def test_unhealthy_never_chosen() -> None:
    assert choose([Candidate(_spec("a"), healthy=False)]) is None
    best = choose([Candidate(_spec("a"), healthy=False), Candidate(_spec("b"), in_flight=9)])
    assert best is not None and best.spec.name == "b"


def test_model_then_resident_then_load_then_order() -> None:
    lacking = Candidate(_spec("a"), has_model=False, resident=False, in_flight=0)
    cold = Candidate(_spec("b"), has_model=True, resident=False, in_flight=0)
    warm_busy = Candidate(_spec("c"), has_model=True, resident=True, in_flight=3)
    warm_idle = Candidate(_spec("d"), has_model=True, resident=True, in_flight=1)
    assert choose([lacking, cold]) is cold
    assert choose([cold, warm_busy]) is warm_busy  # a cold load costs more than a queue slot
    assert choose([warm_busy, warm_idle]) is warm_idle
    twin = Candidate(_spec("e"), has_model=True, resident=True, in_flight=1)
    assert choose([warm_idle, twin]) is warm_idle  # ties keep the policy's order


def test_load_is_relative_to_slots() -> None:
    big = Candidate(_spec("big", slots=8), in_flight=4)  # half full
    small = Candidate(_spec("small", slots=2), in_flight=2)  # full
    assert choose([small, big]) is big


def test_unknown_model_list_is_not_a_reason_to_avoid() -> None:
    unknown = Candidate(_spec("a"), has_model=None)
    lacking = Candidate(_spec("b"), has_model=False)
    assert choose([lacking, unknown]) is unknown


@given(
    st.lists(
        st.tuples(
            st.booleans(), st.sampled_from([True, False, None]), st.booleans(), st.integers(0, 10)
        ),
        min_size=1,
        max_size=8,
    )
)
def test_choice_is_healthy_and_not_dominated(
    rows: list[tuple[bool, bool | None, bool, int]],
) -> None:
    candidates = [
        Candidate(_spec(f"u{i}"), healthy=h, has_model=m, resident=r, in_flight=n)
        for i, (h, m, r, n) in enumerate(rows)
    ]
    best = choose(candidates)
    if not any(c.healthy for c in candidates):
        assert best is None
        return
    assert best is not None and best.healthy
    for other in candidates:
        if other.healthy and other.has_model is not False and best.has_model is False:
            raise AssertionError("chose an upstream without the model over one that may have it")
