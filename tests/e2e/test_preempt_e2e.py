"""Preemption in front of a real llama.cpp `llama-server`, driven by the openai SDK.

The gateway is given one of the engine's four slots, so a chat arriving while a non-streamed
batch request runs must preempt it: the chat is answered, and the batch client still gets one
complete answer of all its tokens from the re-run, counted in the access log.

The cut generation stops. llama-server does not stop a *non-streamed* task whose connection
closed while other requests run (it decoded it to its last token in 3 of 3 probes), so
lanegate sends a preemptible non-streamed request to it as a stream and assembles the answer
(gateway/serving/assemble.py); a closed stream stops at once. Shown by the engine's own count
of generated tokens (`llamacpp:tokens_predicted_total`, cancelled tasks included): the cut run
adds no more than the tokens the gateway had received from it before the cut. And the
assembled answer has exactly the keys and value types of the same request sent straight to
llama-server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import Engine, access_record
from tests.support.policies import PREEMPTIBLE_LANES, write_policy
from tests.support.processes import Service, running, start_gateway
from tests.support.streams import shape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120, func_only=True)]

LANES = PREEMPTIBLE_LANES
MESSAGES: list[Any] = [{"role": "user", "content": "Say something about slots and lanes."}]
BATCH_TOKENS = 600  # ~10 s of decoding: still running when the chat comes
CHAT_TOKENS = 4
IN_FLIGHT_TOKENS = 5  # ~80 ms of this engine's decoding: sent, not yet read, at the cut


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


def predicted_tokens(engine: Engine) -> float:
    """The engine's count of generated tokens, cancelled tasks' included."""
    text = httpx.get(engine.base_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total "):
            return float(line.split()[1])
    raise AssertionError(f"no llamacpp:tokens_predicted_total in /metrics:\n{text[:500]}")


def test_a_preempted_batch_request_stops_on_the_engine_and_still_gets_every_token(
    gateway: Service, large_engine: Engine
) -> None:
    large_engine.wait_busy(0, timeout=30)
    predicted_before = predicted_tokens(large_engine)
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="e2e", max_retries=0, timeout=60
    ) as client:
        rid = f"e2e-preempt-{uuid.uuid4().hex[:8]}"
        answer: dict[str, Any] = {}

        def batch() -> None:
            answer["response"] = client.chat.completions.with_raw_response.create(
                model=large_engine.alias,
                messages=MESSAGES,
                max_tokens=BATCH_TOKENS,
                extra_headers={"x-lane": "batch", "x-request-id": rid},
            )

        thread = threading.Thread(target=batch, daemon=True)
        thread.start()
        large_engine.wait_busy(1, timeout=10)

        chat = client.chat.completions.create(
            model=large_engine.alias,
            messages=MESSAGES,
            max_tokens=CHAT_TOKENS,
            extra_headers={"x-lane": "interactive"},
        )
        assert chat.choices[0].message.content is not None
        assert chat.usage is not None
        thread.join(60)
    raw = answer["response"]
    response = raw.parse()
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == BATCH_TOKENS
    assert raw.headers["content-type"].startswith("application/json")
    record = access_record(gateway, rid)
    assert record["status"] == 200 and record["preemptions"] == 1
    assert record["ttft_ms"] is not None  # the first token of the final run's stream
    large_engine.wait_busy(0, timeout=30)

    # The cut run stopped at the cut: besides the chat and the final run, the engine generated
    # no more than the tokens the gateway had received from it (counted as they arrived) and
    # the few on their way when the stream closed. Sent non-streamed (before), the cut run
    # went on for 37-56 tokens here, with 5-7 received: this fails then.
    cut_run = predicted_tokens(large_engine) - predicted_before
    cut_run -= BATCH_TOKENS + chat.usage.completion_tokens
    assert 0 < record["preempted_tokens"] < BATCH_TOKENS
    assert cut_run <= record["preempted_tokens"] + IN_FLIGHT_TOKENS

    # The assembled answer is shaped as llama-server's own non-streamed one.
    direct = httpx.post(
        large_engine.base_url + "/v1/chat/completions",
        json={"model": large_engine.alias, "messages": MESSAGES, "max_tokens": 8},
        timeout=60,
    )
    assert direct.headers["content-type"].startswith("application/json")
    assert shape(raw.http_response.json()) == shape(direct.json())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES}),
        ("/v1/completions", {"prompt": "Slots and lanes"}),
    ],
)
def test_an_assembled_answer_is_shaped_as_the_engines_own(
    gateway: Service, large_engine: Engine, path: str, body: dict[str, Any]
) -> None:
    """Every non-streamed request of a preemptible lane is assembled, cut or not."""
    request = {"model": large_engine.alias, "max_tokens": 8, **body}
    via = httpx.post(gateway.url + path, json=request, headers={"x-lane": "batch"}, timeout=60)
    direct = httpx.post(large_engine.base_url + path, json=request, timeout=60)
    assert via.status_code == direct.status_code == 200
    assert via.headers["content-type"] == direct.headers["content-type"]
    assert shape(via.json()) == shape(direct.json())
    assert via.json()["usage"]["completion_tokens"] == direct.json()["usage"]["completion_tokens"]
