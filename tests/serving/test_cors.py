"""CORS decisions (gateway.cors): pure functions of origin, allowlist and request headers."""

from __future__ import annotations

import pytest

from gateway.serving.cors import (
    CorsPolicy,
    is_preflight,
    parse_origins,
    preflight_headers,
    response_headers,
)

POLICY = CorsPolicy(frozenset({b"https://chat.example.lan", b"http://localhost:3000"}))
ASKING = [(b"access-control-request-method", b"POST")]


def test_empty_means_off() -> None:
    assert parse_origins("") is None and parse_origins(" , ") is None


def test_origins_are_normalised_and_checked() -> None:
    policy = parse_origins("https://a.example/, http://localhost:3000")
    assert policy is not None
    assert policy.origins == frozenset({b"https://a.example", b"http://localhost:3000"})
    for bad in ("a.example", "https://a.example/path", "ftp://a.example", "https://a b"):
        with pytest.raises(ValueError, match="scheme://host"):
            parse_origins(bad)


def test_a_preflight_needs_options_and_the_request_method_header() -> None:
    assert is_preflight("OPTIONS", ASKING)
    assert not is_preflight("OPTIONS", [])
    assert not is_preflight("POST", ASKING)


def test_allowed_preflight_echoes_the_origin_and_token_headers() -> None:
    asked = [*ASKING, (b"access-control-request-headers", b"authorization, x-stainless-os")]
    answer = dict(preflight_headers(POLICY, b"http://localhost:3000", asked) or [])
    assert answer[b"access-control-allow-origin"] == b"http://localhost:3000"
    assert answer[b"access-control-allow-headers"] == b"authorization, x-stainless-os"
    assert b"POST" in answer[b"access-control-allow-methods"]
    assert b"access-control-allow-credentials" not in answer


def test_malformed_requested_headers_are_not_echoed() -> None:
    asked = [*ASKING, (b"access-control-request-headers", b"a, b\x00c")]
    answer = dict(preflight_headers(POLICY, b"https://chat.example.lan", asked) or [])
    assert b"access-control-allow-headers" not in answer


def test_other_origins_get_nothing() -> None:
    assert preflight_headers(POLICY, b"https://chat.example.lan.evil", ASKING) is None
    assert preflight_headers(POLICY, b"null", ASKING) is None
    assert response_headers(POLICY, b"https://evil.example") == [(b"vary", b"Origin")]
    assert response_headers(POLICY, None) == [(b"vary", b"Origin")]


def test_star_allows_any_origin_and_says_star() -> None:
    policy = parse_origins("*")
    assert policy is not None
    headers = dict(response_headers(policy, b"https://anyone.example"))
    assert headers[b"access-control-allow-origin"] == b"*"
