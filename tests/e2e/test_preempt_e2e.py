"""Preemption in front of a real llama.cpp `llama-server`, driven by the openai SDK.

The gateway is given one of the engine's four slots, so a chat arriving while a non-streamed
batch request runs must preempt it: the chat is answered, and the batch client still gets one
complete answer of all its tokens from the re-run, counted in the access log.

What this does NOT show, because it is not true of this engine: that the cut generation stops.
llama-server cancels a non-streamed task whose connection closed only when it next checks
(about 5 s after the request began, measured alone), and while other requests run it did not
cancel it at all (3 of 3 probes: the cut task decoded all its tokens). `lanegate policy check`
warns about a preemptible lane in front of a llama.cpp server (docs/policy.md, Preemption).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Engine, access_record
from tests.support.policies import write_policy
from tests.support.processes import Service, running, start_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120, func_only=True)]

LANES = """
lanes:
  - {name: interactive, priority: 100}
  - {name: batch, priority: 10, preemptible: true}
classify: {default_lane: interactive, anonymous_lanes: [interactive, batch]}
slo: {adaptive_limits: false}
"""
MESSAGES: list[Any] = [{"role": "user", "content": "Say something about slots and lanes."}]


@pytest.fixture(scope="module")
def gateway(
    large_engine: Engine, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    upstream = {
        "name": "llama-large",
        "kind": "llamacpp",
        "base_url": large_engine.base_url,
        "max_concurrency": 1,  # of the engine's four: a chat must take the batch's slot
        "timeouts": {"connect": 2, "first_byte": 60, "idle": 10},
    }
    policy = write_policy(tmp_path_factory.mktemp("preempt-e2e") / "policy.yaml", [upstream], LANES)
    with running(start_gateway("gw-preempt-e2e", policy, output_dir)) as service:
        yield service


def test_a_preempted_batch_request_still_gets_every_token(
    gateway: Service, large_engine: Engine
) -> None:
    large_engine.wait_busy(0, timeout=30)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="e2e", max_retries=0, timeout=60)
    rid = f"e2e-preempt-{uuid.uuid4().hex[:8]}"
    answer: dict[str, Any] = {}

    def batch() -> None:
        answer["response"] = client.chat.completions.create(
            model=large_engine.alias,
            messages=MESSAGES,
            max_tokens=600,  # ~10 s of decoding: still running when the chat comes
            extra_headers={"x-lane": "batch", "x-request-id": rid},
        )

    thread = threading.Thread(target=batch, daemon=True)
    thread.start()
    large_engine.wait_busy(1, timeout=10)

    chat = client.chat.completions.create(
        model=large_engine.alias,
        messages=MESSAGES,
        max_tokens=4,
        extra_headers={"x-lane": "interactive"},
    )
    assert chat.choices[0].message.content is not None
    thread.join(60)
    response = answer["response"]
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 600
    record = access_record(gateway, rid)
    assert record["status"] == 200 and record["preemptions"] == 1
    assert record["preempted_tokens"] > 0
    large_engine.wait_busy(0, timeout=30)  # leave the shared engine idle for the next test
