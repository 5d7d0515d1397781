"""The offload loop's remote view: memory pressure read from the agents of the remote pool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.recorder import MAX_MODEL_SERIES, Recorder
from gateway.observe.rolling import RollingRegistry
from gateway.offload.controller import Signals
from gateway.offload.loop import OffloadLoop
from gateway.offload.signals import SignalSampler, UnsupportedSource
from gateway.policy.loader import load_policy_text
from gateway.upstreams.router import Attempt, UpstreamRouter
from tests.support.clock import FakeClock
from tests.support.processes import AGENT_KEY, Service

pytestmark = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")


def loop_for(agent: Service, key_var: str) -> OffloadLoop:
    policy = load_policy_text(
        f"""
upstreams:
  - {{name: mini, kind: ollama, base_url: 'http://127.0.0.1:9'}}
  - {{name: m4, kind: ollama, pool: remote, base_url: 'http://127.0.0.1:9',
      signals_url: '{agent.url}/signals', signals_key: 'env:{key_var}'}}
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 4}}
  - {{name: batch, priority: 10, max_concurrency: 4, offloadable: true}}
classify: {{default_lane: interactive}}
offload: {{sample_interval: 0.2}}
""",
        "test-policy.yaml",
    )
    sampler = SignalSampler(UnsupportedSource("test"))
    router = UpstreamRouter(dict, clock=lambda: 0.0)
    return OffloadLoop(policy, sampler, RollingRegistry(), router, lambda: 0.0)


@pytest.mark.parametrize(
    ("key", "pressures", "error"),
    [
        # This Linux machine's PSI verdict, read through the agent: a real level.
        (AGENT_KEY, ("normal", "warn", "critical"), None),
        ("not-the-key", ("unknown",), "401"),
    ],
)
async def test_remote_pressure_comes_from_the_keyed_agent(
    agent: Service,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    pressures: tuple[str, ...],
    error: str | None,
) -> None:
    monkeypatch.setitem(os.environ, "T_REMOTE_SIGNALS_KEY", key)
    loop = loop_for(agent, "T_REMOTE_SIGNALS_KEY")
    await loop.start()
    try:
        signals = loop.signals()
    finally:
        await loop.stop()
    assert signals.remote_pressure in pressures
    seen = loop.remote_samplers["m4"].error
    assert seen is None if error is None else (seen is not None and error in seen)


# -- the learned single-stream baseline --------------------------------------------------------

LEARNING_POLICY = """
upstreams:
  - {name: mini, kind: ollama, base_url: 'http://127.0.0.1:9', max_concurrency: 4}
  - {name: m4, kind: ollama, pool: remote, base_url: 'http://127.0.0.1:9'}
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4}
  - {name: batch, priority: 10, max_concurrency: 4, offloadable: true}
classify: {default_lane: interactive}
offload: {min_samples: 5}
"""


def record(ttft_s: float) -> RequestRecord:
    return RequestRecord(
        ttft_s=ttft_s,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=ttft_s,
        prompt_tokens=None,
        completion_tokens=None,
        tokens_estimated=False,
        chunks=1,
        status=200,
        error=None,
    )


def test_requests_sent_alone_teach_the_baseline_and_overlapping_ones_do_not() -> None:
    policy = load_policy_text(LEARNING_POLICY, "learning.yaml")
    clock, rolling = FakeClock(1000.0), RollingRegistry()
    router = UpstreamRouter(dict, clock)
    recorder = Recorder(rolling, access_log_enabled=False)
    loop = OffloadLoop(policy, SignalSampler(UnsupportedSource("t")), rolling, router, clock)
    calm = Signals(clock.now, 0, "normal", None, 0, True, None, "unknown")
    loop.controller.observe(calm)
    pool = router.pool_of(policy)

    def finish(attempt: Attempt, ttft: float) -> None:
        done = record(ttft)
        alone = router.finished(attempt, done)
        labels = RequestLabels("r", "POST", "/v1/chat/completions", "interactive",
                               attempt.spec.name, "m", alone=alone)  # fmt: skip
        recorder.record(labels, done, clock.now)

    for _ in range(6):  # one at a time: each was alone on `mini`
        finish(router.begin(policy, pool, "m", set()), 0.2)
    overlapping = [router.begin(policy, pool, "m", set()) for _ in range(3)]
    for attempt in overlapping:
        finish(attempt, 5.0)
    clock.now += 1
    # Only the six lone requests count: the overlapping 5 s TTFTs would have dominated the p95.
    baseline = loop.learn(clock.now)
    assert baseline is not None and abs(baseline - 0.2) < 0.01
    assert loop.controller.baseline_ttft_s == baseline


async def test_no_baseline_is_learned_on_a_host_that_is_not_calm() -> None:
    policy = load_policy_text(LEARNING_POLICY, "learning.yaml")
    clock, rolling = FakeClock(1000.0), RollingRegistry()
    router = UpstreamRouter(dict, clock)
    loop = OffloadLoop(policy, SignalSampler(UnsupportedSource("t")), rolling, router, clock)
    loop.controller.observe(Signals(clock.now, 0, "warn", None, 0, True, None, "unknown"))
    for _ in range(6):
        rolling.add(("ttft_solo", "interactive", "mini"), 0.2, clock.now)
    assert loop.learn(clock.now + 1) is None


# -- early offload compares the request's model on each pool -----------------------------------


def test_early_offload_compares_the_requests_model_on_each_pool() -> None:
    """Model a is slower on the remote pool, model b faster: only b's batch goes remote early.
    A model with no series of its own is judged on every lane's TTFT (remote faster here)."""
    policy = load_policy_text(LEARNING_POLICY, "learning.yaml")
    clock, rolling = FakeClock(1000.0), RollingRegistry()
    recorder = Recorder(rolling, access_log_enabled=False)
    loop = OffloadLoop(
        policy, SignalSampler(UnsupportedSource("t")), rolling, UpstreamRouter(dict, clock), clock
    )
    loop.models = recorder.models
    for model, local, remote in (("a", 0.1, 0.4), ("b", 0.6, 0.2)):
        for upstream, ttft in (("mini", local), ("m4", remote)):
            labels = RequestLabels("r", "POST", "/v1/chat/completions", "batch", upstream, model)
            recorder.record(labels, record(ttft), clock.now)
    batch = policy.lane("batch")
    assert not loop.early(batch, True, 2, "a")
    assert loop.early(batch, True, 2, "b")
    # Lane-wide: the worst p95 on each pool, 0.6 local against 0.4 remote.
    assert loop.early(batch, True, 2, "never-seen")
    assert not loop.early(batch, False, 2, "b")  # the local limit has room: stays local


def test_per_model_series_are_bounded_by_the_first_names_seen() -> None:
    rolling = RollingRegistry()
    recorder = Recorder(rolling, access_log_enabled=False)
    for index in range(MAX_MODEL_SERIES + 10):
        labels = RequestLabels("r", "POST", "/v1/chat/completions", "batch", "mini", f"m{index}")
        recorder.record(labels, record(0.1), 1000.0)
    assert len(recorder.models) == MAX_MODEL_SERIES
    assert f"m{MAX_MODEL_SERIES}" not in recorder.models
    assert rolling.snapshot(("ttft_model", f"m{MAX_MODEL_SERIES}", "mini"), 1000.0, 60).count == 0
    assert rolling.snapshot(("ttft_model", "m0", "mini"), 1000.0, 60).count == 1
