"""Anthropic's rate-limit headers from lanegate's token budgets (pure)."""

from __future__ import annotations

from gateway.serving.anthropic_headers import from_openai, rfc3339, tokens_headers


def test_tokens_headers_reset_is_an_rfc3339_instant_rounded_up() -> None:
    headers = dict(tokens_headers(1000, 250, 59.2, 1_700_000_000.5))
    assert headers == {
        b"anthropic-ratelimit-tokens-limit": b"1000",
        b"anthropic-ratelimit-tokens-remaining": b"250",
        b"anthropic-ratelimit-tokens-reset": b"2023-11-14T22:14:20Z",
    }
    assert dict(tokens_headers(10, -5, 0, 0))[b"anthropic-ratelimit-tokens-remaining"] == b"0"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_openai_triplet_translated() -> None:
    openai = [
        (b"x-ratelimit-limit-tokens", b"4000"),
        (b"x-ratelimit-remaining-tokens", b"3100"),
        (b"x-ratelimit-reset-tokens", b"1h2m3s"),
    ]
    assert dict(from_openai(openai, 0)) == dict(tokens_headers(4000, 3100, 3723, 0))
    assert from_openai(openai[:2], 0) == []  # incomplete: nothing made up
    assert from_openai([*openai[:2], (b"x-ratelimit-reset-tokens", b"soon")], 0) == []
