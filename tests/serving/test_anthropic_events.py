"""Anthropic Messages events and bodies: output, usage (with cache tokens) and errors.

Whole recorded streams (Anthropic's documented tool-use stream, llama-server's own) are in
test_stream_parser.py's table; these are the cases one event at a time.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.serving.stream_parser import Api, ScanResult, StreamScanner, scan_body
from tests.support.paths import DATA


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _delta(delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    )


START = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 5,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 7,
                "output_tokens": 1,
            }
        },
    },
)


def _scan(*events: bytes) -> tuple[ScanResult, list[bool]]:
    scanner = StreamScanner(Api.MESSAGES)
    flags = [scanner.feed(event) for event in events]
    scanner.close()
    return scanner.result(), flags


@pytest.mark.parametrize(
    ("delta", "is_output"),
    [
        ({"type": "text_delta", "text": "Hi"}, True),
        ({"type": "text_delta", "text": ""}, False),
        ({"type": "input_json_delta", "partial_json": '{"city":'}, True),
        ({"type": "input_json_delta", "partial_json": ""}, False),  # the usual first one
        ({"type": "thinking_delta", "thinking": "Let me see"}, True),
        ({"type": "signature_delta", "signature": "EqQBCgIYAhIM"}, False),
    ],
)
def test_which_deltas_are_first_output(delta: dict[str, Any], is_output: bool) -> None:
    _, flags = _scan(START, _event("ping", {"type": "ping"}), _delta(delta))
    assert flags == [False, False, is_output]


def test_prompt_counts_cache_reads_and_writes_and_start_output_is_a_placeholder() -> None:
    result, _ = _scan(START, _delta({"type": "text_delta", "text": "x"}))
    # No message_delta (a cut stream): output is counted, not taken from message_start's 1.
    assert (result.prompt_tokens, result.completion_tokens) == (42, 1)
    assert result.tokens_estimated


def test_output_tokens_come_from_the_last_message_delta() -> None:
    final = _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9},
        },
    )
    text = _delta({"type": "text_delta", "text": "a fairly long piece of generated text"})
    result, flags = _scan(
        START, text, text, final, _event("message_stop", {"type": "message_stop"})
    )
    assert flags == [False, True, False, False, False]
    assert (result.prompt_tokens, result.completion_tokens, result.output_events) == (42, 9, 2)
    assert not result.tokens_estimated


def test_anthropic_error_event_after_output() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    text = _delta({"type": "text_delta", "text": "a fairly long piece of generated text"})
    result, _ = _scan(START, text, _event("error", error))
    assert result.error == "Overloaded"


def test_non_streamed_message_from_llama_server() -> None:
    body = (DATA / "streams" / "llama-server__messages_nonstream.json").read_bytes()
    result = scan_body(Api.MESSAGES, body)
    # input_tokens 1 + cache_read_input_tokens 48: the whole prompt was 49 tokens
    assert result == ScanResult(49, 8, False, 1, None)


def test_non_streamed_tool_use_is_output_and_error_body_is_an_error() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    body = {"type": "message", "content": [tool], "usage": {"input_tokens": 3, "output_tokens": 4}}
    assert scan_body(Api.MESSAGES, json.dumps(body).encode()) == ScanResult(3, 4, False, 1, None)
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert scan_body(Api.MESSAGES, json.dumps(error).encode()).error == "bad"
