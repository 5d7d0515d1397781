"""The isolation bench's own parts: its policies are what they claim, its interval brackets."""

from __future__ import annotations

import math
import random

from gateway.policy.loader import check_policy_text
from tests.bench import isolation


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
