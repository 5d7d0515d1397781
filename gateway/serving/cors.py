"""CORS for browser-based clients: which origins may call, and the headers that say so. Pure.

Off by default (no allowlist: no CORS header is ever added, and the ASGI wrapper is not even
installed). With `LANEGATE_CORS_ORIGINS`, a preflight (`OPTIONS` with
`Access-Control-Request-Method`) from an allowed origin is answered 204 with the allowed
method and the requested headers; one from another origin gets no CORS headers, so the
browser blocks the call. Actual responses carry `Access-Control-Allow-Origin` only for an
allowed origin. Keys travel in `Authorization`, not cookies, so credentials are never allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]

METHODS = b"GET, POST, HEAD, OPTIONS"
# What a browser script may read from a response: the ids and lane, and the rate limit
# and retry headers its client needs to back off.
EXPOSE = (
    b"x-request-id, x-lanegate-lane, x-lanegate-upstream, x-lanegate-queue-ms, retry-after, "
    b"x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens"
)
_ORIGIN = re.compile(r"^(https?://[A-Za-z0-9.\-]+(:\d{1,5})?|\*)$")
_TOKEN_LIST = re.compile(rb"^[A-Za-z0-9!#$%&'*+.^_`|~\-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~\-]+)*$")


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[bytes]  # exact `scheme://host[:port]`, or b"*" for any origin
    max_age_s: int = 600

    def allows(self, origin: bytes) -> bool:
        return origin in self.origins or b"*" in self.origins


def parse_origins(text: str) -> CorsPolicy | None:
    """`LANEGATE_CORS_ORIGINS` → a policy, or None (CORS off). Raises ValueError on a bad one."""
    origins = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(
                f"CORS origin {origin!r} is not scheme://host[:port] (e.g. "
                "https://chat.example.lan or http://localhost:3000) or *"
            )
    return CorsPolicy(frozenset(o.encode() for o in origins)) if origins else None


def is_preflight(method: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return method == "OPTIONS" and any(n == b"access-control-request-method" for n, _ in headers)


def preflight_headers(
    policy: CorsPolicy, origin: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> Headers | None:
    """The 204's headers for an allowed preflight; None: not allowed (answer without CORS)."""
    if not policy.allows(origin):
        return None
    requested = b""
    for name, value in headers:
        if name == b"access-control-request-headers":
            requested = value.strip()
    answer = [
        (b"access-control-allow-origin", _allow_value(policy, origin)),
        (b"access-control-allow-methods", METHODS),
        (b"access-control-max-age", str(policy.max_age_s).encode()),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]
    if requested and _TOKEN_LIST.match(requested):
        answer.append((b"access-control-allow-headers", requested))
    return answer


def response_headers(policy: CorsPolicy, origin: bytes | None) -> Headers:
    """Headers to add to an actual response: the origin if allowed, and `Vary: Origin`."""
    if origin is None or not policy.allows(origin):
        return [(b"vary", b"Origin")]
    return [
        (b"access-control-allow-origin", _allow_value(policy, origin)),
        (b"access-control-expose-headers", EXPOSE),
        (b"vary", b"Origin"),
    ]


def origin_of(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"origin":
            return value
    return None


def _allow_value(policy: CorsPolicy, origin: bytes) -> bytes:
    # An explicit list echoes the one origin (a header holds one); "*" answers "*".
    return origin if origin in policy.origins else b"*"
