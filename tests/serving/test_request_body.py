"""Request facts: only what the gateway needs, and a clear 400 for garbage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.serving.request_body import (
    MAX_MODEL_CHARS,
    MAX_TOKENS_VALUE,
    check_body_type,
    parse_request,
)
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
        # The largest field present: each server obeys its own (issue 18, a budget bypass).
        ({"max_completion_tokens": 9, "max_tokens": 7}, 9),
        ({"max_completion_tokens": 1, "max_tokens": 2000}, 2000),
        ({"max_tokens": 1, "options": {"num_predict": 5000}}, 5000),
        ({"max_tokens": 1, "n_predict": 300}, 300),
        ({"max_output_tokens": 11}, 11),
        ({"options": {"num_predict": 13}}, 13),
        ({"options": "x"}, None),
        ({"options": {"num_predict": -1}}, None),  # Ollama's "until done": the lane default
        ({"n_predict": -1, "max_tokens": 4}, 4),
    ],
)
def test_max_tokens_from_any_api(body: dict[str, object], expected: int | None) -> None:
    raw = json.dumps({"model": "m", **body}).encode()
    assert parse_request(CHAT, raw).max_tokens == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "7"}, "max_tokens"),
        ({"max_tokens": 1e6}, "max_tokens"),  # a float skipped the too-large check
        ({"max_tokens": 7.0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),  # llama.cpp reads -1 as "no limit"
        ({"max_tokens": -5, "max_output_tokens": 3}, "max_tokens"),
        ({"max_completion_tokens": 10**12}, "max_completion_tokens"),
        ({"options": {"num_predict": -3}}, "options.num_predict"),
        ({"options": {"num_predict": 2.5}}, "options.num_predict"),
    ],
)
def test_token_limits_are_strict(body: dict[str, object], param: str) -> None:
    raw = json.dumps({"model": "m", **body}).encode()
    with pytest.raises(BadRequest) as caught:
        parse_request(CHAT, raw)
    assert caught.value.code == "invalid_max_tokens" and caught.value.param == param


@given(st.integers(min_value=0, max_value=MAX_TOKENS_VALUE), st.integers(0, MAX_TOKENS_VALUE))
def test_the_reservation_covers_every_field_an_upstream_may_obey(a: int, b: int) -> None:
    body = {"model": "m", "max_tokens": a, "options": {"num_predict": b}}
    assert parse_request(OLLAMA_CHAT, json.dumps(body).encode()).max_tokens == max(a, b)


def test_a_long_model_name_is_refused_without_echoing_it() -> None:
    model = "m" * (MAX_MODEL_CHARS + 1)
    with pytest.raises(BadRequest) as caught:
        parse_request(CHAT, json.dumps({"model": model}).encode())
    assert caught.value.code == "model_too_long" and model not in caught.value.message
    assert parse_request(CHAT, json.dumps({"model": model[1:]}).encode()).model == model[1:]


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ([(b"content-type", b"text/plain"), (b"origin", b"https://a.example")], True),
        ([(b"content-type", b"application/x-www-form-urlencoded"), (b"origin", b"x")], True),
        ([(b"content-type", b"Multipart/Form-Data; boundary=x"), (b"origin", b"x")], True),
        ([(b"content-type", b"application/json"), (b"origin", b"https://a.example")], False),
        ([(b"content-type", b"application/x-www-form-urlencoded")], False),  # curl -d
        ([(b"origin", b"https://a.example")], False),
    ],
)
def test_cross_site_simple_posts_are_refused(
    headers: list[tuple[bytes, bytes]], refused: bool
) -> None:
    if refused:
        with pytest.raises(UnsupportedMediaType):
            check_body_type(headers)
    else:
        check_body_type(headers)


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
