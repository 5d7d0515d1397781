"""Agents' APIs through a real gateway in front of a real simulator, with the real SDKs:
`anthropic` (Messages streamed and not, a tool-use round trip, count_tokens, its errors),
`ollama` (legacy embeddings; model management answered with its reason) and rerank, with
lanes, budgets and the ledger doing for them what they do for chat."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import pytest

from gateway.lanes.classify import prompt_chars
from gateway.observe.ledger import LEDGER_FILE, read_rows
from gateway.observe.ledger_report import COLUMNS
from gateway.serving.flow import CHARS_PER_TOKEN
from tests.support.policies import write_policy
from tests.support.processes import Service, running, start_gateway

MODEL = "llama3.1:8b"
KEY = "agent-key-for-tests"
ASK = [{"role": "user", "content": "Plan the next step of the refactor, briefly."}]
TOOL = {
    "name": "search_code",
    "description": "Search the repository",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}
BUDGET = 400  # tokens per minute of the `tight` lane
POLICY = f"""
lanes:
  - name: interactive
    priority: 100
    max_concurrency: 4
  - name: batch
    priority: 10
    max_concurrency: 2
  - name: tight
    priority: 50
    max_concurrency: 2
    tokens_per_minute: {BUDGET}
  - name: solo
    priority: 50
    max_concurrency: 1
    max_queue: 0
clients:
  - name: agent
    key: env:LG_TEST_AGENT_KEY
classify:
  default_lane: interactive
  rules:
    - name: rerank-and-embeddings
      lane: batch
      match:
        path: [/v1/rerank, /v1/reranking, /rerank, /api/embeddings]
"""


SIM_ARGS = ("--profile", "fast", "--seed", "7", "--chunk-interval-ms", "5")  # the module's `sim`


def _gateway(output_dir: Path, policy: Path, name: str, ready: str = "/readyz") -> Service:
    env = {"LG_TEST_AGENT_KEY": KEY}
    return start_gateway(name, policy, output_dir, env=env, ready_path=ready)


def _upstream(sim: Service, kind: str, apis: str | None) -> dict[str, object]:
    upstream: dict[str, object] = {
        "name": f"sim-{kind}",
        "kind": kind,
        "base_url": sim.url,
        "timeouts": {"connect": 1, "first_byte": 10, "idle": 5},
    }
    if apis is not None:
        upstream["apis"] = apis
    return upstream


@pytest.fixture(scope="module")
def gateway(
    sim: Service, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    # The simulator answers like Ollama and also like llama-server (Messages, rerank).
    upstream = _upstream(sim, "ollama", "[openai, ollama, anthropic, rerank]")
    policy = write_policy(tmp_path_factory.mktemp("agents") / "p.yaml", [upstream], POLICY)
    with running(_gateway(output_dir, policy, "gateway-agents")) as service:
        yield service


@pytest.fixture
def claude(gateway: Service) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as client:
        yield client


def _ledger_row(gateway: Service, request_id: str) -> dict[str, Any]:
    """The request's ledger row, once the ledger has flushed it (about a second)."""
    path = gateway.log_path.parent / f"state-{gateway.name}-{gateway.port}" / LEDGER_FILE
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = read_rows(path, 0) if path.exists() else []
        found = [dict(zip(COLUMNS, r, strict=True)) for r in rows if r[1] == request_id]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no ledger row for {request_id}")


# -- Anthropic Messages ---------------------------------------------------------------------


def test_message_not_streamed_is_relayed_and_measured(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=6, messages=ASK, extra_headers={"x-request-id": "msg-plain"}
    )
    message = raw.parse()
    assert raw.headers["x-lanegate-lane"] == "interactive"
    assert raw.headers["x-lanegate-upstream"] == "sim-ollama"
    assert message.content[0].type == "text" and message.usage.output_tokens == 6


def test_streamed_message_has_ttft_gaps_and_exact_tokens(
    claude: anthropic.Anthropic, gateway: Service
) -> None:
    headers = {"x-request-id": "msg-stream"}
    with claude.messages.stream(
        model=MODEL, max_tokens=12, messages=ASK, extra_headers=headers
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 12
    row = _ledger_row(gateway, "msg-stream")
    assert row["path"] == "/v1/messages" and row["status"] == 200
    assert row["ttft_ms"] is not None and row["gap_max_ms"] is not None
    assert (row["prompt_tokens"], row["completion_tokens"]) == (final.usage.input_tokens, 12)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'lanegate_ttft_seconds_count{lane="interactive",upstream="sim-ollama"}' in metrics


def test_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=30, messages=ASK, tools=[TOOL]) as s:
        first = s.get_final_message()
    call = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "search_code"
    assert isinstance(call.input, dict) and call.input["query"]
    result = [{"type": "tool_result", "tool_use_id": call.id, "content": "3 matches"}]
    turns = [
        *ASK,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": result},
    ]
    second = claude.messages.create(model=MODEL, max_tokens=5, messages=turns, tools=[TOOL])
    assert second.content[0].type == "text" and second.content[0].text


def test_count_tokens_takes_no_slot_and_matches_usage(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.count_tokens(model=MODEL, messages=ASK)
    assert "x-lanegate-lane" not in raw.headers  # metadata: no lane, no budget
    made = claude.messages.create(model=MODEL, max_tokens=1, messages=ASK)
    assert raw.parse().input_tokens == made.usage.input_tokens


def test_wrong_key_is_an_anthropic_authentication_error(
    gateway: Service, closing: Callable[[Any], Any]
) -> None:
    wrong = closing(anthropic.Anthropic(base_url=gateway.url, api_key="not-the-key", max_retries=0))
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model=MODEL, max_tokens=5, messages=ASK)
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    # Claude Code and friends may send the key as a bearer token (ANTHROPIC_AUTH_TOKEN)
    bearer = closing(anthropic.Anthropic(base_url=gateway.url, auth_token=KEY, max_retries=0))
    assert bearer.messages.create(model=MODEL, max_tokens=1, messages=ASK).content


def test_missing_max_tokens_is_refused_before_any_upstream(gateway: Service) -> None:
    body = {"model": MODEL, "messages": ASK}
    response = httpx.post(f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": KEY})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]


def clear_of_the_minute_edge(margin_s: float = 15.0) -> None:
    """Budget windows are fixed to the wall clock: a test that spends and then reads the
    remainder must not straddle a minute boundary, so it starts after one if one is near."""
    to_edge = 60.0 - time.time() % 60.0
    if to_edge < margin_s:
        time.sleep(to_edge + 0.5)


def test_budget_reserves_max_tokens_settles_usage_and_429s(
    gateway: Service, closing: Callable[[Any], Any]
) -> None:
    clear_of_the_minute_edge()
    tight = closing(
        anthropic.Anthropic(
            base_url=gateway.url, api_key=KEY, max_retries=0, default_headers={"x-lane": "tight"}
        )
    )
    with tight.messages.stream(model=MODEL, max_tokens=40, messages=ASK) as stream:
        spent = stream.get_final_message().usage
    used = spent.input_tokens + spent.output_tokens
    # The next request's headers show the settled spend plus its own estimate.
    raw = tight.messages.with_raw_response.create(model=MODEL, max_tokens=1, messages=ASK)
    estimate = math.ceil(prompt_chars({"messages": ASK}) / CHARS_PER_TOKEN) + 1
    left = BUDGET - used - estimate
    assert raw.headers["anthropic-ratelimit-tokens-limit"] == str(BUDGET)
    assert raw.headers["anthropic-ratelimit-tokens-remaining"] == str(left)
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(left)
    second = raw.parse().usage
    remaining = left + estimate - second.input_tokens - second.output_tokens
    with pytest.raises(anthropic.RateLimitError) as caught:  # more than is left
        tight.messages.create(model=MODEL, max_tokens=remaining, messages=ASK)
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-tokens-limit"] == str(BUDGET)
    assert headers["anthropic-ratelimit-tokens-remaining"] == str(remaining)
    assert headers["anthropic-ratelimit-tokens-reset"].endswith("Z")
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.BadRequestError):  # could never fit: not worth retrying
        tight.messages.create(model=MODEL, max_tokens=BUDGET, messages=ASK)


def test_a_full_lane_queue_is_an_anthropic_429_with_retry_after(
    gateway: Service, closing: Callable[[Any], Any]
) -> None:
    solo = closing(
        anthropic.Anthropic(
            base_url=gateway.url, api_key=KEY, max_retries=0, default_headers={"x-lane": "solo"}
        )
    )
    with solo.messages.stream(model=MODEL, max_tokens=400, messages=ASK) as held:
        next(iter(held.text_stream))  # admitted and streaming: the lane's one slot is taken
        with pytest.raises(anthropic.RateLimitError) as caught:
            solo.messages.create(model=MODEL, max_tokens=5, messages=ASK)
    assert int(caught.value.response.headers["retry-after"]) >= 1
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"
    assert "solo" in body["error"]["message"]


# -- rerank and Ollama's legacy paths ---------------------------------------------------------


def test_rerank_goes_to_the_batch_lane(gateway: Service) -> None:
    body = {"query": "lanes and slots", "documents": ["fish", "slots per lane"], "top_n": 1}
    for path in ("/v1/rerank", "/v1/reranking", "/rerank"):
        response = httpx.post(gateway.url + path, json=body, headers={"x-api-key": KEY})
        assert response.status_code == 200, response.text
        assert response.headers["x-lanegate-lane"] == "batch"
        assert [r["index"] for r in response.json()["results"]] == [1]


def test_ollama_library_embeddings_and_model_management(gateway: Service) -> None:
    with ollama.Client(host=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        library_model_management(client)


def library_model_management(client: ollama.Client) -> None:
    vector = client.embeddings(model=MODEL, prompt="lanes for agents")["embedding"]
    assert len(vector) > 8 and all(isinstance(x, float) for x in vector)
    calls = {
        "pull": lambda: client.pull(MODEL),
        "push": lambda: client.push(MODEL),
        "delete": lambda: client.delete(MODEL),
        "copy": lambda: client.copy(MODEL, "mine"),
        "create": lambda: client.create(model="mine", from_=MODEL),
    }
    for verb, call in calls.items():
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 403
        assert f"ollama {verb}" in caught.value.error and "host" in caught.value.error


# -- an upstream that does not speak the API -----------------------------------------------


def test_an_upstream_that_does_not_serve_the_api_is_named(
    sim: Service, output_dir: Path, tmp_path: Path, closing: Callable[[Any], Any]
) -> None:
    policy = write_policy(tmp_path / "mlx.yaml", [_upstream(sim, "mlx", None)])
    service = _gateway(output_dir, policy, "gateway-mlx")
    try:
        claude = closing(anthropic.Anthropic(base_url=service.url, api_key="x", max_retries=0))
        for call in (
            lambda: claude.messages.create(model=MODEL, max_tokens=5, messages=ASK),
            lambda: claude.messages.count_tokens(model=MODEL, messages=ASK),
        ):
            with pytest.raises(anthropic.NotFoundError) as caught:
                call()
            message = json.dumps(caught.value.body)
            assert "sim-mlx (kind mlx)" in message and "anthropic" in message
        rerank = httpx.post(service.url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert rerank.status_code == 404 and "llama.cpp" in rerank.json()["error"]["message"]
        chat = httpx.post(
            service.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": ASK, "max_tokens": 2},
        )
        assert chat.status_code == 200  # what mlx serves still goes through
    finally:
        service.stop()
