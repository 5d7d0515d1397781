"""The `anthropic` SDK through the gateway in front of a real llama.cpp `llama-server`.

llama-server answers `/v1/messages` (converting to its chat pipeline) and
`/v1/messages/count_tokens`; what this proves beyond the simulator: the relay and the stream
scanner agree with a real engine's Anthropic framing (usage split between `message_start`
and `message_delta`, prompt-cache tokens counted apart), and TTFT is measured on it.

What the tiny random-weight test models cannot do, and so is not tested here: call a tool
(its vocab-only GGUF has no tool-calling chat template, so even `tool_choice: any` yields
text; the second half of a round trip — a `tool_use` turn and its `tool_result` — is sent
and answered), and rerank (llama-server reranks only with a reranking model started with
`--reranking`; its refusal, a 501, is relayed unchanged and accounted).
"""

from __future__ import annotations

import uuid

import anthropic
import httpx
import pytest

from tests.e2e.conftest import access_record
from tests.support.processes import Service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90, func_only=True)]

ASK = [{"role": "user", "content": "Say something about slots and lanes."}]
TOOL = {
    "name": "search_code",
    "description": "Search the repository",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


def new_id() -> str:
    return f"e2e-msg-{uuid.uuid4().hex[:12]}"


def claude(gateway: Service) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="e2e", max_retries=0, timeout=30)


def test_message_not_streamed(small_gateway: Service) -> None:
    request_id = new_id()
    message = claude(small_gateway).messages.create(
        model="tiny", max_tokens=8, messages=ASK, extra_headers={"x-request-id": request_id}
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 8
    prompt = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    record = access_record(small_gateway, request_id)
    assert (record["path"], record["status"]) == ("/v1/messages", 200)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, 8)


def test_message_streamed_is_measured(large_gateway: Service) -> None:
    # The large engine (~60 tok/s): the small one can put all 16 tokens in one chunk, and
    # one chunk has no gap to measure.
    request_id = new_id()
    with claude(large_gateway).messages.stream(
        model="tiny", max_tokens=16, messages=ASK, extra_headers={"x-request-id": request_id}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 16
    record = access_record(large_gateway, request_id)
    assert record["ttft_ms"] is not None and record["gap_max_ms"] is not None
    assert record["completion_tokens"] == 16 and not record["tokens_estimated"]
    prompt = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    assert record["prompt_tokens"] == prompt
    metrics = httpx.get(large_gateway.url + "/metrics").text
    assert "lanegate_ttft_seconds_count{" in metrics


def test_count_tokens_agrees_with_the_generation(small_gateway: Service) -> None:
    sdk = claude(small_gateway)
    counted = sdk.messages.count_tokens(model="tiny", messages=ASK).input_tokens
    usage = sdk.messages.create(model="tiny", max_tokens=1, messages=ASK).usage
    assert counted == usage.input_tokens + (usage.cache_read_input_tokens or 0)


def test_tools_offered_and_a_tool_result_answered(small_gateway: Service) -> None:
    sdk = claude(small_gateway)
    offered = sdk.messages.create(model="tiny", max_tokens=8, messages=ASK, tools=[TOOL])
    assert offered.content  # text: the tiny model cannot call tools (see the module doc)
    call = {"type": "tool_use", "id": "toolu_e2e1", "name": "search_code", "input": {"query": "x"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_e2e1", "content": "3 matches"}
    turns = [
        *ASK,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
    ]
    with sdk.messages.stream(model="tiny", max_tokens=8, messages=turns, tools=[TOOL]) as s:
        answer = s.get_final_message()
    assert answer.content[0].type == "text" and answer.usage.output_tokens == 8


def test_rerank_refusal_is_relayed_and_recorded(small_gateway: Service) -> None:
    request_id = new_id()
    response = httpx.post(
        small_gateway.url + "/v1/rerank",
        json={"query": "lanes", "documents": ["slots", "fish"]},
        headers={"x-request-id": request_id},
        timeout=30,
    )
    assert response.status_code == 501
    assert "--reranking" in response.json()["error"]["message"]
    assert access_record(small_gateway, request_id)["status"] == 501
