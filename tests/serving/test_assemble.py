"""Assembling a streamed answer into the non-streamed one, over recorded streams.

The llama-server streams were captured from the engine lanegate assembles for
(tests/data/streams/SOURCES.md); the tool-call streams come from DeepSeek and Ollama (llama.cpp
writes `tool_calls` deltas in the same OpenAI shape; no recorded llama.cpp tool-call stream
exists here: the tiny test model does not call tools).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.serving.assemble import STREAM_FACTOR, Assembler, Incomplete, TooLarge
from gateway.serving.event_framing import EventFramer
from gateway.serving.stream_events import Api
from tests.support.streams import shape

STREAMS = Path(__file__).parent.parent / "data" / "streams"
LIMIT = 1 << 20


def recorded(name: str) -> bytes:
    return (STREAMS / name).read_bytes()


def assembled(api: Api, stream: bytes, limit: int = LIMIT) -> dict[str, Any]:
    assembler = Assembler(api, limit)
    assembler.push(stream)
    answer: dict[str, Any] = json.loads(assembler.body())
    return answer


def data_events(stream: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in stream.splitlines()
        if line.startswith(b"data: {")  # the recorded streams' one-line events
    ]


def test_llama_server_chat_stream_becomes_its_non_streamed_answer() -> None:
    stream = recorded("llama-server__chat_stream_usage.sse")
    events = data_events(stream)
    answer = assembled(Api.CHAT, stream)
    direct = json.loads(recorded("llama-server__chat_nonstream.json"))
    assert shape(answer) == shape(direct)  # the same keys and types as a direct answer
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length",
        }
    ]
    assert answer["object"] == "chat.completion"
    for key in ("id", "created", "model", "system_fingerprint"):
        assert answer[key] == events[0][key]
    assert answer["usage"] == events[-1]["usage"]
    assert answer["timings"] == events[-1]["timings"]


def test_a_stream_without_usage_keeps_the_finish_chunks_timings() -> None:
    stream = recorded("llama-server__chat_stream_plain.sse")
    answer = assembled(Api.CHAT, stream)
    assert "usage" not in answer
    assert answer["timings"] == data_events(stream)[-1]["timings"]


def test_llama_server_completions_stream() -> None:
    stream = recorded("llama-server__compl_stream_usage.sse")
    events = data_events(stream)
    answer = assembled(Api.COMPLETIONS, stream)
    assert answer["object"] == "text_completion"
    text = "".join(e["choices"][0]["text"] for e in events)
    assert answer["choices"] == [
        {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
    ]
    assert answer["usage"] == events[-1]["usage"]


def test_reasoning_and_a_tool_call_are_merged() -> None:
    stream = recorded("deepseek__chat_reasoning_tool_calls.sse")
    events = data_events(stream)
    message = assembled(Api.CHAT, stream)["choices"][0]["message"]
    deltas = [e["choices"][0]["delta"] for e in events]
    assert message["reasoning_content"] == "".join(d.get("reasoning_content") or "" for d in deltas)
    [call] = message["tool_calls"]
    arguments = "".join(
        c["function"].get("arguments", "") for d in deltas for c in d.get("tool_calls") or ()
    )
    assert call["function"]["arguments"] == arguments
    json.loads(call["function"]["arguments"])  # the pieces make whole JSON
    assert call["id"] and call["type"] == "function" and call["function"]["name"]
    assert "index" not in call  # a non-streamed tool call has none


def test_parallel_tool_calls_keep_their_order() -> None:
    answer = assembled(Api.CHAT, recorded("ollama__v1_chat_tool_calls.sse"))
    [choice] = answer["choices"]
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [
        '{"command":"ls"}',
        '{"command":"ls -l"}',
    ]
    assert [c["id"] for c in calls] == ["call_wteop8bt", "call_rk2xye1l"]
    assert choice["finish_reason"] == "tool_calls"


def test_several_choices_by_index() -> None:
    """n > 1 (no recorded llama.cpp stream has it): interleaved choices, answered in order."""
    events = [
        {"id": "x", "choices": [{"index": 1, "delta": {"content": "B1"}, "finish_reason": None}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "A1"}, "finish_reason": None}]},
        {"id": "x", "choices": [{"index": 1, "delta": {"content": "B2"}, "finish_reason": "stop"}]},
        {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    ]
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    choices = assembled(Api.CHAT, stream + b"data: [DONE]\n\n")["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "A1", "length"),
        (1, "B1B2", "stop"),
    ]


STREAMED = [
    ("llama-server__chat_stream_usage.sse", Api.CHAT),
    ("llama-server__compl_stream_usage.sse", Api.COMPLETIONS),
    ("deepseek__chat_reasoning_tool_calls.sse", Api.CHAT),
]


@pytest.mark.parametrize(("name", "api"), STREAMED)
@given(cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_any_chunking_gives_the_same_answer(name: str, api: Api, cuts: list[int]) -> None:
    """Through the relay's framing, however the network cut the stream."""
    stream = recorded(name)
    framer, assembler = EventFramer(ndjson=False), Assembler(api, LIMIT)
    edges = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(edges):
        assembler.push(framer.push(stream[start:end]))
    assembler.push(framer.flush())
    assert json.loads(assembler.body()) == assembled(api, stream)


@pytest.mark.parametrize(("name", "api"), STREAMED)
def test_garbage_between_events_is_ignored(name: str, api: Api) -> None:
    stream = recorded(name)
    noisy = stream.replace(
        b"\n\ndata: ",
        b"\n\n: keep-alive\n\ndata: not json\n\nevent: ping\n\ndata: [1,2]\n\n"
        b'data: {"choices":"no"}\n\ndata: {"choices":[{"index":"x"}]}\n\ndata: ',
        3,
    )
    assert noisy != stream
    assert assembled(api, noisy) == assembled(api, stream)


def test_a_finished_stream_without_done_is_whole() -> None:
    stream = recorded("llama-server__chat_stream_usage.sse")
    without = stream.replace(b"data: [DONE]\n\n", b"")
    assert without != stream
    assert assembled(Api.CHAT, without) == assembled(Api.CHAT, stream)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_a_stream_cut_before_its_finish_is_incomplete(keep: int) -> None:
    events = recorded("llama-server__chat_stream_usage.sse").split(b"\n\n")
    assembler = Assembler(Api.CHAT, LIMIT)
    assembler.push(b"\n\n".join(events[:keep]))
    with pytest.raises(Incomplete):
        assembler.body()


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"error":{"code":400,"message":"the request exceeds the context size",'
        b'"type":"exceed_context_size_error"}}',
        b'error: {"code":400,"message":"the request exceeds the context size",'
        b'"type":"exceed_context_size_error"}',
    ],
)
def test_an_error_event_becomes_the_non_streamed_error(event: bytes) -> None:
    head = recorded("llama-server__chat_stream_usage.sse").split(b"\n\n")[:3]
    assembler = Assembler(Api.CHAT, LIMIT)
    assembler.push(b"\n\n".join([*head, event, b'data: {"choices":[]}', b"data: [DONE]", b""]))
    assert assembler.error is not None
    assert assembler.error.status == 400
    assert assembler.error.message == "the request exceeds the context size"
    error = json.loads(assembler.error.body)["error"]
    assert error == {
        "code": 400,
        "message": "the request exceeds the context size",
        "type": "exceed_context_size_error",
    }


def test_an_error_without_a_code_is_a_500() -> None:
    assembler = Assembler(Api.CHAT, LIMIT)
    assembler.push(b'data: {"error":"boom"}\n\n')
    assert assembler.error is not None
    assert (assembler.error.status, assembler.error.message) == (500, "boom")
    assert json.loads(assembler.error.body)["error"]["message"] == "boom"


def test_a_null_error_is_no_error() -> None:
    stream = recorded("llama-server__chat_stream_usage.sse")
    noisy = stream.replace(b"data: [DONE]", b'data: {"error":null}\n\ndata: [DONE]')
    assert assembled(Api.CHAT, noisy) == assembled(Api.CHAT, stream)


def test_the_assembled_answer_is_bounded() -> None:
    piece = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 100 + b'"}}]}\n\n'
    assembler = Assembler(Api.CHAT, 1000)
    with pytest.raises(TooLarge):
        for _ in range(11):
            assembler.push(piece)


def test_an_endless_stream_of_empty_events_is_bounded() -> None:
    empty = b'data: {"choices":[{"index":0,"delta":{}}]}\n\n'
    assembler = Assembler(Api.CHAT, 1000)
    pushed = 0
    with pytest.raises(TooLarge):
        while pushed <= STREAM_FACTOR * 1000:
            assembler.push(empty)
            pushed += len(empty)
    assert pushed <= STREAM_FACTOR * 1000  # stopped at the bound, not after it


def test_other_apis_have_no_non_streamed_shape() -> None:
    with pytest.raises(ValueError, match="responses"):
        Assembler(Api.RESPONSES, LIMIT)
