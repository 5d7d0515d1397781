"""Anthropic's rate-limit headers for lanegate's token budgets. Pure: wall time is passed in.

Anthropic clients read `anthropic-ratelimit-tokens-{limit,remaining,reset}` (reset an RFC 3339
instant) and, on a 429, `retry-after` in seconds. The budgets already describe the tightest
window as OpenAI's `x-ratelimit-*-tokens` triplet (reset a duration such as `6m0s`, for the
local and the shared budgets alike); Messages responses get the same facts in Anthropic's words.
Requests are not counted by lanegate's budgets, so no `-requests-` headers are made up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

Header = tuple[bytes, bytes]

_PREFIX = b"anthropic-ratelimit-tokens-"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def tokens_headers(limit: int, remaining: int, reset_in_s: float, now: float) -> list[Header]:
    """The three `anthropic-ratelimit-tokens-*` headers for one budget window."""
    return [
        (_PREFIX + b"limit", str(limit).encode()),
        (_PREFIX + b"remaining", str(max(0, remaining)).encode()),
        (_PREFIX + b"reset", rfc3339(now + max(0.0, reset_in_s)).encode()),
    ]


def from_openai(headers: Iterable[Header], now: float) -> list[Header]:
    """Anthropic's headers for the window OpenAI's `x-ratelimit-*-tokens` describe (none if
    the triplet is incomplete or unreadable)."""
    found = {name: value for name, value in headers if name.startswith(b"x-ratelimit-")}
    limit = found.get(b"x-ratelimit-limit-tokens", b"")
    remaining = found.get(b"x-ratelimit-remaining-tokens", b"")
    reset = _seconds(found.get(b"x-ratelimit-reset-tokens", b"").decode("latin-1"))
    if not (limit.isdigit() and remaining.isdigit()) or reset is None:
        return []
    return tokens_headers(int(limit), int(remaining), reset, now)


def rfc3339(epoch_s: float) -> str:
    """`2026-12-04T21:40:00Z`: whole seconds, rounded up (a reset is never early)."""
    whole = int(epoch_s) + (1 if epoch_s % 1 else 0)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(duration: str) -> float | None:
    match = _DURATION.match(duration)
    if not duration or match is None:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)
