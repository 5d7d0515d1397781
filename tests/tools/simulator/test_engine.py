"""The pure performance model: plain values, a hand-advanced clock, and property tests."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tools.simulator import engine
from gateway.tools.simulator.engine import GIB, EngineState, Profile, Seq, Step

P = Profile(
    name="unit",
    slots=2,
    max_queue=2,
    prefill_tps=1000.0,
    decode_tps=20.0,
    batch_alpha=0.5,
    prefill_chunk_tokens=100,
    base_memory_bytes=2 * GIB,
    weights_bytes=4 * GIB,
    kv_bytes_per_token=1024,
    ram_budget_bytes=8 * GIB,
)


def seq(key: int, prompt: int = 10, max_tokens: int = 3) -> Seq:
    return engine.new_seq(key, prompt, max_tokens)


def submit_all(profile: Profile, seqs: Sequence[Seq]) -> EngineState:
    state = EngineState()
    for s in seqs:
        state, ok = engine.submit(state, profile, s)
        assert ok
    return state


def run_to_idle(
    state: EngineState, profile: Profile, now: float = 0.0, limit: int = 10_000
) -> tuple[list[Step], list[engine.Emission]]:
    steps: list[Step] = []
    emitted: list[engine.Emission] = []
    for _ in range(limit):
        state, step = engine.next_step(state, profile, now)
        if step is None:
            return steps, emitted
        steps.append(step)
        state, out = engine.apply_step(state, step)
        emitted.extend(out)
        now = step.end
    raise AssertionError("engine did not go idle")


# ----------------------------------------------------------------------- admission, queue


def test_admission_is_fifo_into_free_slots() -> None:
    state = submit_all(P, [seq(1), seq(2), seq(3), seq(4)])
    state, admitted = engine.admit(state, P)
    assert admitted == (1, 2)
    assert [s.key for s in state.waiting] == [3, 4]
    assert state.max_active_seen == 2
    state, again = engine.admit(state, P)
    assert again == ()


def test_queue_bound_counts_only_requests_that_must_wait() -> None:
    no_queue = dataclasses.replace(P, max_queue=0)
    state = EngineState()
    for key in (1, 2):  # two free slots: accepted although max_queue is 0
        state, ok = engine.submit(state, no_queue, seq(key))
        assert ok
    state, ok = engine.submit(state, no_queue, seq(3))
    assert not ok and len(state.waiting) == 2
    state = submit_all(P, [seq(k) for k in range(1, 5)])  # 2 slots + 2 queue places
    _, ok = engine.submit(state, P, seq(5))
    assert not ok


def test_cancel_removes_from_slot_or_queue() -> None:
    state, _ = engine.admit(submit_all(P, [seq(1), seq(2), seq(3)]), P)
    state = engine.cancel(state, 1)
    assert [s.key for s in state.active] == [2]
    state, admitted = engine.admit(state, P)
    assert admitted == (3,)
    assert engine.cancel(state, 99) == state


# ------------------------------------------------------------------------------ step costs


def test_first_step_prefills_and_emits_the_first_token() -> None:
    state = submit_all(P, [seq(1, prompt=50)])
    state, step = engine.next_step(state, P, 10.0)
    assert step is not None
    assert step.admitted == (1,) and step.prefill == ((1, 50),) and step.emit == (1,)
    assert step.start == 10.0 and step.duration == pytest.approx(50 / 1000)
    state, out = engine.apply_step(state, step)
    assert out == (engine.Emission(1, 0, False),)
    assert state.active[0].prefill_left == 0 and state.active[0].generated == 1


def test_long_prompts_prefill_in_chunks_before_the_first_token() -> None:
    state = submit_all(P, [seq(1, prompt=250)])
    emits = []
    for _ in range(3):
        state, step = engine.next_step(state, P, 0.0)
        assert step is not None
        emits.append(step.emit)
        state, _ = engine.apply_step(state, step)
    assert emits == [(), (), (1,)]
    assert state.active[0].context_tokens == 251


def test_decode_steps_slow_with_more_streams_but_aggregate_grows() -> None:
    one = engine.decode_step_seconds(P, 1)
    two = engine.decode_step_seconds(P, 2)
    assert one == pytest.approx(1 / 20)
    assert one < two < 2 * one
    assert engine.aggregate_decode_tps(P, 2) == pytest.approx(20 * math.sqrt(2))
    assert engine.decode_step_seconds(P, 0) == 0.0


def test_new_prompt_prefill_stalls_running_decodes_for_that_step() -> None:
    state, _ = engine.admit(submit_all(P, [seq(1, prompt=10, max_tokens=50)]), P)
    state, step = engine.next_step(state, P, 0.0)
    assert step is not None
    state, _ = engine.apply_step(state, step)
    state, _ = engine.submit(state, P, seq(2, prompt=100))
    state, step = engine.next_step(state, P, 1.0)
    assert step is not None
    assert step.decoding == 1 and step.emit == (1, 2)
    expected = 100 / 1000 + engine.decode_step_seconds(P, 1)
    assert step.duration == pytest.approx(expected)


def test_sequences_finish_after_max_tokens_and_free_the_slot() -> None:
    state = submit_all(P, [seq(1, max_tokens=2), seq(2, max_tokens=4), seq(3, max_tokens=1)])
    steps, out = run_to_idle(state, P)
    finished = [e.key for e in out if e.finished]
    assert finished == [1, 3, 2]
    assert [e.index for e in out if e.key == 2] == [0, 1, 2, 3]
    admitted_at = {k: s.start for s in steps for k in s.admitted}
    first_done = next(s.end for s in steps if 1 in s.emit and s is not steps[0])
    assert admitted_at[3] == pytest.approx(first_done)


def test_cancel_during_a_step_drops_its_emission() -> None:
    state = submit_all(P, [seq(1), seq(2)])
    state, step = engine.next_step(state, P, 0.0)
    assert step is not None
    state = engine.cancel(state, 1)
    state, out = engine.apply_step(state, step)
    assert [e.key for e in out] == [2]
    assert [s.key for s in state.active] == [2]


def test_idle_engine_plans_nothing() -> None:
    assert engine.next_step(EngineState(), P, 0.0) == (EngineState(), None)


# ---------------------------------------------------------------------------- memory model


def test_no_swap_within_budget_then_growing_swap_and_slowdown() -> None:
    free_kv_tokens = (8 - 2 - 4) * GIB // 1024
    assert engine.swap_used_bytes(P, free_kv_tokens) == 0
    assert engine.swap_slowdown(P, free_kv_tokens) == 1.0
    over = free_kv_tokens + GIB // 1024  # one GiB past the budget
    assert engine.swap_used_bytes(P, over) == GIB
    assert engine.swap_slowdown(P, over) == pytest.approx(1 + P.swap_slowdown_per_gib)


def test_host_signals_pressure_levels_and_swap_total() -> None:
    calm = engine.host_signals(P, 0, 1, 0)
    assert (calm.pressure_level, calm.swap_used_bytes, calm.swap_total_bytes) == (1, 0, GIB)
    assert calm.memory_used_bytes == 6 * GIB and calm.active == 1
    near = engine.host_signals(P, int(1.5 * GIB) // 1024, 0, 0)  # 7.5 of 8 GiB
    assert near.pressure_level == 2 and near.swap_used_bytes == 0
    little = engine.host_signals(P, (2 * GIB + 1024 * 10) // 1024, 0, 0)
    assert little.pressure_level == 2 and 0 < little.swap_used_bytes < GIB
    heavy = engine.host_signals(P, 5 * GIB // 1024, 0, 3)
    assert heavy.pressure_level == 4 and heavy.swap_used_bytes == 3 * GIB
    assert heavy.swap_total_bytes == 3 * GIB and heavy.queued == 3


def test_swap_slows_steps() -> None:
    big = dataclasses.replace(P, prefill_chunk_tokens=10**9)
    huge_prompt = 3 * GIB // 1024  # one GiB past the budget once prefilled
    _state, step = engine.next_step(submit_all(big, [seq(1, prompt=huge_prompt)]), big, 0.0)
    assert step is not None and step.slowdown > 1.0
    assert step.duration == pytest.approx(huge_prompt / 1000 * step.slowdown)


# --------------------------------------------------------------------- text and validation


def test_token_text_is_deterministic_per_seed() -> None:
    a = engine.token_texts(engine.token_seed(1, 7), 20)
    b = engine.token_texts(engine.token_seed(1, 7), 20)
    c = engine.token_texts(engine.token_seed(1, 8), 20)
    assert a == b != c
    assert not a[0].startswith(" ") and all(t.startswith(" ") for t in a[1:])


def test_prompt_token_estimate_and_embeddings() -> None:
    assert engine.estimate_tokens("") == 1 and engine.estimate_tokens("x" * 40) == 10
    v = engine.embedding_vector(3, "hello", 32)
    assert v == engine.embedding_vector(3, "hello", 32) != engine.embedding_vector(4, "hello", 32)
    assert sum(x * x for x in v) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "change",
    [{"slots": 0}, {"decode_tps": 0.0}, {"batch_alpha": 1.5}, {"mode": "turbo"}, {"max_queue": -1}],
)
def test_bad_profiles_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="profile 'unit'"):
        dataclasses.replace(P, **change)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- property tests

ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 300), st.integers(1, 12)),
        st.tuples(st.just("cancel"), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("step"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@dataclasses.dataclass
class Trace:
    accepted: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    admitted: list[int] = dataclasses.field(default_factory=list)
    cancelled: list[int] = dataclasses.field(default_factory=list)
    steps: list[Step] = dataclasses.field(default_factory=list)
    emissions: list[engine.Emission] = dataclasses.field(default_factory=list)


def _drive(profile: Profile, script: list[tuple[str, int, int]]) -> Trace:
    """Run a script of submits, cancels and steps, then drain; record what happened."""
    state, now, key, trace = EngineState(), 0.0, 0, Trace()

    def step() -> None:
        nonlocal state, now
        state, planned = engine.next_step(state, profile, now)
        if planned is None:
            return
        assert len(state.active) <= profile.slots
        trace.admitted.extend(planned.admitted)
        trace.steps.append(planned)
        state, out = engine.apply_step(state, planned)
        assert {e.key for e in out if e.finished} == set(planned.finish)
        trace.emissions.extend(out)
        now = planned.end

    for op, a, b in script:
        if op == "submit":
            key += 1
            state, ok = engine.submit(state, profile, engine.new_seq(key, a, b))
            if ok:
                trace.accepted.append((key, b))
        elif op == "cancel":
            if any(s.key == a for s in (*state.active, *state.waiting)):
                trace.cancelled.append(a)
            state = engine.cancel(state, a)
        else:
            step()
        assert len(state.active) <= profile.slots
        assert len(state.waiting) <= profile.max_queue + profile.slots
    for _ in range(10_000):
        if not state.active and not state.waiting:
            break
        step()
    return trace


@settings(max_examples=150, deadline=None)
@given(script=ops, slots=st.integers(1, 4))
def test_fifo_bounded_slots_and_every_survivor_finishes(
    script: list[tuple[str, int, int]], slots: int
) -> None:
    profile = dataclasses.replace(P, slots=slots, max_queue=3)
    trace = _drive(profile, script)
    assert trace.admitted == sorted(trace.admitted)  # FIFO: keys are arrival order
    emitted: dict[int, list[engine.Emission]] = {}
    for e in trace.emissions:
        emitted.setdefault(e.key, []).append(e)
    for key, max_tokens in trace.accepted:
        if key in trace.cancelled:
            continue
        got = emitted[key]
        assert [e.index for e in got] == list(range(max_tokens))
        assert [e.finished for e in got] == [False] * (max_tokens - 1) + [True]


@settings(max_examples=50, deadline=None)
@given(script=ops)
def test_same_script_same_schedule(script: list[tuple[str, int, int]]) -> None:
    assert _drive(P, script) == _drive(P, script)


@settings(max_examples=100, deadline=None)
@given(slots=st.integers(1, 16), alpha=st.floats(0.05, 1.0))
def test_aggregate_decode_is_sublinear_and_non_decreasing(slots: int, alpha: float) -> None:
    profile = dataclasses.replace(P, slots=slots, batch_alpha=alpha)
    rates = [engine.aggregate_decode_tps(profile, n) for n in range(1, slots + 1)]
    for n, rate in enumerate(rates, start=1):
        assert rate <= n * rates[0] + 1e-9
    assert all(b >= a - 1e-9 for a, b in pairwise(rates))


@settings(max_examples=100, deadline=None)
@given(tokens=st.integers(0, 16 * GIB // 1024))
def test_swap_appears_only_past_the_budget(tokens: int) -> None:
    demand = engine.memory_demand_bytes(P, tokens)
    swap = engine.swap_used_bytes(P, tokens)
    assert (swap > 0) == (demand > P.ram_budget_bytes)
    assert (engine.swap_slowdown(P, tokens) > 1.0) == (swap > 0)
    assert engine.swap_slowdown(P, tokens + 1024) >= engine.swap_slowdown(P, tokens)


def test_engine_imports_only_the_standard_library() -> None:
    """The model stays pure: no asyncio, no clocks, nothing from the shell or third parties."""
    import ast
    import sys

    tree = ast.parse(Path(engine.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names <= set(sys.stdlib_module_names) | {"__future__"}
    assert not names & {"asyncio", "time", "datetime", "threading", "socket"}
