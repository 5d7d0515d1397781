"""The isolation bench's own parts: its policies are what they claim, its interval brackets."""

from __future__ import annotations

import math
import random

from gateway.policy.loader import check_policy_text
from tests.bench import isolation, remote


def test_the_arms_policies_are_what_they_claim() -> None:
    hand = check_policy_text(
        isolation.policy_text("http://127.0.0.1:1", "llamacpp", 4, isolation.HAND_CAPS), "hand"
    )
    assert hand.warnings == () and not hand.policy.protection.enabled
    assert hand.policy.lane("batch").max_concurrency == 3
    adaptive = check_policy_text(
        isolation.policy_text("http://127.0.0.1:1", "llamacpp", 4, isolation.PRIORITIES_ONLY), "p"
    )
    assert adaptive.warnings == () and adaptive.policy.protection.enabled
    assert {lane.max_concurrency for lane in adaptive.policy.lanes} == {4}  # the slots only


def test_p95_interval_brackets_the_p95_of_the_distribution() -> None:
    """Over many draws of 100 samples from a known distribution, the 90% interval holds the
    true p95 about 90% of the time (well above 80%: the approximation is not far off)."""
    rng = random.Random(17)
    true_p95 = -2.0 * math.log(0.05)  # exponential, mean 2
    held = 0
    for _ in range(400):
        samples = [rng.expovariate(0.5) for _ in range(100)]
        low, high = isolation.p95_interval(samples)
        held += low <= true_p95 <= high
    assert 0.8 <= held / 400 <= 0.99


def test_the_preemption_arm_is_priorities_only_with_batch_preemptible() -> None:
    """The same lanes as the adaptive arm but one field; a gateway that does not know the
    field yet refuses it, naming it (the arm then reports itself skipped), else takes it."""
    changed = [
        (old, new)
        for old, new in zip(
            isolation.PRIORITIES_ONLY.splitlines(),
            isolation.PREEMPTIBLE.splitlines(),
            strict=True,
        )
        if old != new
    ]
    assert len(changed) == 1 and "name: batch" in changed[0][1]
    assert changed[0][1].endswith("preemptible: true}")
    text = isolation.policy_text("http://127.0.0.1:1", "llamacpp", 4, isolation.PREEMPTIBLE)
    refused = isolation.refusal(text)
    if refused is not None:
        assert "preemptible" in refused
    else:
        batch = check_policy_text(text, "p").policy.lane("batch")
        assert getattr(batch, "preemptible", None) is True
    assert isolation.refusal(text.replace("priority: 10,", "priority: ten,")) is not None


def test_preemption_figures_from_metrics_or_null() -> None:
    exposition = (
        'lanegate_preemptions_total{lane="batch",upstream="bench"} 4.0\n'
        'lanegate_preempted_tokens_total{lane="batch"} 90.0\n'
    )
    assert isolation.preemption(exposition, 1800) == {
        "preemptions": 4.0,
        "preempted_tokens": 90.0,
        "batch_generated_tokens": 1800,
        "thrown_share": 0.05,
    }
    absent = isolation.preemption("lanegate_requests_total 3\n", 1800)
    assert absent["preemptions"] is None and absent["thrown_share"] is None


def test_chat_figures_flag_too_few_chats() -> None:
    few = isolation.chat_figures([0.1] * 99, base_p95=0.05)
    assert few["enough_samples"] is False and few["interactive_p95_ratio"] == 2.0
    enough = isolation.chat_figures([0.05] * 100, base_p95=0.05)
    assert enough["enough_samples"] is True
    assert isolation.chat_figures([], base_p95=0.05) == {"enough_samples": False}


def test_the_s7_policy_has_no_hand_caps_and_default_offload() -> None:
    remote_yaml = (
        "  - {name: m4, pool: remote, kind: ollama, base_url: 'http://h:2', max_concurrency: 8}\n"
    )
    text = remote.early_offload_policy("http://127.0.0.1:1", remote_yaml)
    checked = check_policy_text(text, "s7")
    policy = checked.policy
    assert checked.warnings == () and policy.protection.enabled
    assert policy.offload is not None and policy.offload.baseline_ttft_s is None  # defaults
    # No caps written: each lane's bound is the slots it may use (batch: both pools').
    bounds = {lane.name: lane.max_concurrency for lane in policy.lanes}
    assert bounds == {"interactive": 4, "batch": 4 + 8, "heartbeat": 4}
    assert [lane.name for lane in policy.lanes if lane.offloadable] == ["batch"]
    assert sorted(spec.pool for spec in policy.upstreams) == ["local", "remote"]
