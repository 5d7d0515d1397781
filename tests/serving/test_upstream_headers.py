"""Upstream response headers a client sees: an allow-list, size-bounded (issue 18)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.serving.upstream_headers import (
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    allowed,
    relayed_headers,
)


def test_only_the_allow_list_passes() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"set-cookie", b"session=1"),
        (b"server", b"llama.cpp"),
        (b"x-lanegate-lane", b"spoofed"),
        (b"x-request-id", b"upstream-id"),
        (b"x-ratelimit-remaining-requests", b"9"),
        (b"x-internal-host", b"10.0.0.7"),
        (b"retry-after", b"3"),
    ]
    assert relayed_headers(raw) == [
        (b"Content-Type", b"application/json"),
        (b"x-ratelimit-remaining-requests", b"9"),
        (b"retry-after", b"3"),
    ]


def test_a_long_value_is_dropped() -> None:
    raw = [(b"cache-control", b"x" * (MAX_VALUE_BYTES + 1)), (b"content-type", b"text/plain")]
    assert relayed_headers(raw) == [(b"content-type", b"text/plain")]


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=2000)), max_size=200))
def test_never_more_than_the_bound_nor_a_header_off_the_list(
    raw: list[tuple[bytes, bytes]],
) -> None:
    kept = relayed_headers(raw)
    assert sum(len(n) + len(v) for n, v in kept) <= MAX_TOTAL_BYTES
    assert all(allowed(name) and len(value) <= MAX_VALUE_BYTES for name, value in kept)


def test_anthropic_rate_limit_headers_and_request_id_pass() -> None:
    raw = [
        (b"anthropic-ratelimit-tokens-remaining", b"900"),
        (b"request-id", b"req_01"),
        (b"anthropic-organization-id", b"org"),
    ]
    assert relayed_headers(raw) == raw[:2]
