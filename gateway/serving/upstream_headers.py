"""Which of an upstream's response headers reach the client: an allow-list, size-bounded. Pure.

An upstream is a server the operator runs, not one the client chose, but what it says about
itself (cookies, server names, internal hosts in custom headers, headers of any size) is not
the client's business and must not let a misbehaving upstream make the gateway relay
kilobytes of headers. Only content negotiation, caching, retry and rate-limit headers
(OpenAI's and Anthropic's) and Anthropic's `request-id` pass; each value is at most
`MAX_VALUE_BYTES`, and together at most `MAX_TOTAL_BYTES` (the rest are dropped, in the
upstream's order). Hop-by-hop headers, `server`, `date`, `set-cookie`,
`x-request-id` (the gateway sets its own) and any `x-lanegate-*` are never relayed.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

ALLOWED = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-language",
        b"cache-control",
        b"retry-after",
        b"openai-model",
        b"openai-processing-ms",
        b"openai-version",
        b"request-id",  # Anthropic's id of the upstream request (the SDK reads it)
    }
)
ALLOWED_PREFIXES = (b"x-ratelimit-", b"anthropic-ratelimit-")
MAX_VALUE_BYTES = 1024
MAX_TOTAL_BYTES = 8 * 1024


def allowed(name: bytes) -> bool:
    lowered = name.lower()
    return lowered in ALLOWED or lowered.startswith(ALLOWED_PREFIXES)


def relayed_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The upstream's headers a client may see, in order, within the size bounds."""
    kept: Headers = []
    total = 0
    for name, value in raw:
        if not allowed(name) or len(value) > MAX_VALUE_BYTES:
            continue
        total += len(name) + len(value)
        if total > MAX_TOTAL_BYTES:
            break
        kept.append((name, value))
    return kept
