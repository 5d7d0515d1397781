"""What one event says (pure): after the first output, the fast path never misses what a full
parse finds (usage, an error), on every event of every recorded stream."""

from __future__ import annotations

import json

import pytest

from gateway.serving.stream_events import (
    NOTHING,
    Api,
    body_facts_of,
    classify_fast,
    parse_event,
)
from tests.support.paths import DATA

STREAMS = DATA / "streams"
RECORDED = [
    ("llama-server__chat_stream_usage.sse", Api.CHAT),
    ("llama-server__chat_stream_plain.sse", Api.CHAT),
    ("openai__chat_include_usage_excerpt.sse", Api.CHAT),
    ("deepseek__chat_reasoning_tool_calls.sse", Api.CHAT),
    ("llama-server__compl_stream_usage.sse", Api.COMPLETIONS),
    ("openai__completions_include_usage.sse", Api.COMPLETIONS),
    ("openai__responses_function_call.sse", Api.RESPONSES),
    ("openai__responses_error.sse", Api.RESPONSES),
    ("xai__responses_text.sse", Api.RESPONSES),
    ("ollama__api_chat.ndjson", Api.OLLAMA_CHAT),
    ("ollama__api_generate.ndjson", Api.OLLAMA_GENERATE),
    ("llama-server__messages_stream.sse", Api.MESSAGES),
    ("llama-server__messages_error.sse", Api.MESSAGES),
]


def _events(name: str, api: Api) -> list[bytes]:
    body = (STREAMS / name).read_bytes().replace(b"\r\n", b"\n")
    delimiter = b"\n" if name.endswith(".ndjson") else b"\n\n"
    return [piece for piece in body.split(delimiter) if piece.strip()]


@pytest.mark.parametrize(("name", "api"), RECORDED)
def test_the_fast_path_sees_every_usage_and_error_a_full_parse_sees(name: str, api: Api) -> None:
    events = _events(name, api)
    assert events
    seen_output = False  # until the first output every event is parsed in full
    for piece in events:
        full = parse_event(api, piece)
        if seen_output:
            fast = classify_fast(api, piece, len(piece))
            assert (fast.usage, fast.error) == (full.usage, full.error), piece
        seen_output = seen_output or full.output


@pytest.mark.parametrize(("name", "api"), RECORDED)
def test_a_recorded_stream_says_output_and_ends_with_usage_or_an_error(name: str, api: Api) -> None:
    parsed = [parse_event(api, piece) for piece in _events(name, api)]
    errors = [event.error for event in parsed if event.error]
    usages = [event.usage for event in parsed if event.usage]
    assert errors if "error" in name else any(event.output for event in parsed)
    if "usage" in name:
        assert usages


def test_done_and_an_old_llama_server_error_line() -> None:
    assert parse_event(Api.CHAT, b"data: [DONE]") is NOTHING
    old = b'error: {"code": 500, "message": "slot unavailable", "type": "server_error"}'
    event = parse_event(Api.CHAT, old)
    assert not event.output and event.error and "slot unavailable" in event.error


def test_a_whole_answer_has_output_and_usage() -> None:
    answer = json.loads((STREAMS / "llama-server__chat_nonstream.json").read_bytes())
    output, usage, error = body_facts_of(Api.CHAT, answer)
    assert output and usage is not None and error is None
