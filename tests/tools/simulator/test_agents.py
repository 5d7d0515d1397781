"""The simulator's Anthropic Messages, count_tokens and rerank, read by the real `anthropic`
SDK and raw HTTP: the event order Anthropic documents, tool calls, errors in its shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.tools.simulator.sim_harness import SimServer

MODEL = "llama3:8b"
ASK = [{"role": "user", "content": "Tell me about slots and queues, briefly."}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather now in a city",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


@pytest.fixture
def sdk(sim: SimServer) -> Iterator[anthropic.Anthropic]:
    """A client of the simulator, closed at teardown (its pooled socket would warn later)."""
    with anthropic.Anthropic(base_url=sim.url, api_key="sim", max_retries=0) as made:
        yield made


def _events(raw: bytes) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name_line, data_line = block.split("\n")
            out.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return out


def test_message_not_streamed(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model=MODEL, max_tokens=5, messages=ASK)
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens == 5
    assert message.usage.input_tokens > 0


def test_stream_follows_the_documented_event_order(sim: SimServer) -> None:
    body = {"model": MODEL, "max_tokens": 4, "stream": True, "messages": ASK}
    response = httpx.post(sim.url + "/v1/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in _events(response.content)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in _events(response.content))


def test_sdk_stream_text_and_final_usage(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model=MODEL, max_tokens=6, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.usage.output_tokens == 6 and final.stop_reason == "max_tokens"


def test_tool_use_round_trip(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model=MODEL, max_tokens=40, messages=ASK, tools=[WEATHER]) as s:
        first = s.get_final_message()
    call = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and call.input["query"]  # streamed JSON parsed whole
    answer = [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]
    turns = [
        *ASK,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": answer},
    ]
    second = sdk.messages.create(model=MODEL, max_tokens=5, messages=turns, tools=[WEATHER])
    assert second.content[0].type == "text" and second.stop_reason == "max_tokens"


def test_count_tokens_matches_the_prompt_the_generation_sees(sdk: anthropic.Anthropic) -> None:
    counted = sdk.messages.count_tokens(model=MODEL, messages=ASK)
    made = sdk.messages.create(model=MODEL, max_tokens=1, messages=ASK)
    assert counted.input_tokens == made.usage.input_tokens


def test_errors_in_anthropic_shape(sim: SimServer, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="nope", max_tokens=5, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    response = httpx.post(sim.url + "/v1/messages", json={"model": MODEL, "messages": ASK})
    assert response.status_code == 400 and response.json()["type"] == "error"


def test_rerank_sorted_cut_to_top_n_with_usage(sim: SimServer) -> None:
    docs = ["bananas are yellow", "slots and queues in llama.cpp", {"text": "queues at the bank"}]
    body = {"query": "slots and queues", "documents": docs, "top_n": 2}
    for path in ("/v1/rerank", "/v1/reranking", "/rerank"):
        out = httpx.post(sim.url + path, json=body).json()
        scores = [r["relevance_score"] for r in out["results"]]
        assert out["results"][0]["index"] == 1 and scores == sorted(scores)[::-1]
        assert len(scores) == 2 and out["usage"]["prompt_tokens"] > 0
    bad = httpx.post(sim.url + "/v1/rerank", json={"query": "q", "documents": []})
    assert bad.status_code == 400
