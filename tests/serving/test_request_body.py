"""Request facts: only what the gateway needs, and a clear 400 for garbage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.serving.request_body import parse_request
from gateway.serving.routes import match_route

CHAT = match_route("POST", "/v1/chat/completions")
OLLAMA_CHAT = match_route("POST", "/api/chat")
SHOW = match_route("POST", "/api/show")
TAGS = match_route("GET", "/api/tags")
assert CHAT and OLLAMA_CHAT and SHOW and TAGS


def test_openai_defaults_to_not_streaming() -> None:
    facts = parse_request(CHAT, b'{"model": "m", "messages": []}')
    assert facts.model == "m" and facts.stream is False and facts.max_tokens is None


def test_ollama_native_streams_by_default() -> None:
    assert parse_request(OLLAMA_CHAT, b'{"model": "m"}').stream is True
    assert parse_request(OLLAMA_CHAT, b'{"model": "m", "stream": false}').stream is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 9, "max_tokens": 7}, 9),
        ({"max_output_tokens": 11}, 11),
        ({"options": {"num_predict": 13}}, 13),
        ({"max_tokens": True}, None),
        ({"max_tokens": "7"}, None),
        ({"options": "x"}, None),
        ({"max_tokens": -5}, None),  # never a negative budget reservation (was a 500)
        ({"options": {"num_predict": -1}}, None),  # Ollama's "until done"
        ({"max_tokens": -5, "max_output_tokens": 3}, 3),
    ],
)
def test_max_tokens_from_any_api(body: dict[str, object], expected: int | None) -> None:
    raw = json.dumps({"model": "m", **body}).encode()
    assert parse_request(CHAT, raw).max_tokens == expected


def test_get_routes_have_no_body() -> None:
    assert parse_request(TAGS, b"").body is None


def test_show_needs_a_model() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(SHOW, b"{}")
    assert caught.value.code == "missing_model" and caught.value.param == "model"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"null", "invalid_json"),
        (b'"text"', "invalid_json"),
        (b"\xff", "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"model": 3}', "missing_model"),
        (b'{"model": "  "}', "missing_model"),
        (b'{"model": "m", "stream": 1}', "invalid_stream"),
        (b'{"model": "m", "stream": "true"}', "invalid_stream"),
    ],
)
def test_garbage_is_a_bad_request(raw: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(CHAT, raw)
    assert caught.value.code == code
    assert caught.value.status == 400


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_bad_request(raw: bytes) -> None:
    try:
        parse_request(CHAT, raw)
    except BadRequest as error:
        assert error.message
