"""What a request's end amounts to: the answer to a budget refusal, the tokens to settle, the
record of a request the gateway answered itself. Pure: the flow calls these.
"""

from __future__ import annotations

import math

from gateway.errors import BadRequest, GatewayError, RateLimited
from gateway.lanes.budgets import Refusal
from gateway.observe.measurement import RequestRecord
from gateway.serving.anthropic_headers import tokens_headers


def over_budget(refusal: Refusal, anthropic_now: float | None = None) -> GatewayError:
    """The answer to a budget refusal: 400 when it could never fit, else 429 with the wait
    (and Anthropic's window headers when `anthropic_now`, the wall clock, is given)."""
    scope = f"{refusal.scope[0]} {refusal.scope[1]!r}"
    if refusal.never_fits:
        return BadRequest(
            f"this request may use up to {refusal.requested} tokens, more than the "
            f"{refusal.limit} per {refusal.window} that {scope} allows; lower max_tokens",
            code="token_budget",
            param="max_tokens",
        )
    seconds = max(1, math.ceil(refusal.retry_after_s))
    headers = {"retry-after": str(seconds)}
    if anthropic_now is not None:  # Anthropic clients read the window from these
        left = refusal.limit - refusal.used - refusal.reserved
        window = tokens_headers(refusal.limit, left, seconds, anthropic_now)
        headers.update((k.decode(), v.decode()) for k, v in window)
    return RateLimited(
        f"{scope} has used its token budget for this {refusal.window} "
        f"({refusal.used + refusal.reserved}/{refusal.limit}); retry in {seconds} s",
        code="token_budget",
        headers=headers,
    )


def tokens_used(record: RequestRecord, prompt_estimate: int, estimate: int) -> int:
    """Real usage when the upstream said; otherwise the prompt estimate plus what was counted."""
    if record.prompt_tokens is not None and record.completion_tokens is not None:
        return record.prompt_tokens + record.completion_tokens
    if record.completion_tokens is not None:
        return prompt_estimate + record.completion_tokens
    if record.status >= 400 or record.status == 0:
        return 0  # refused or failed before generating: nothing was spent upstream
    return estimate


def rejected(status: int, code: str, received_at: float, now: float) -> RequestRecord:
    """The record of a request answered by the gateway itself, before or instead of a relay."""
    return RequestRecord(
        ttft_s=None,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=now - received_at,
        prompt_tokens=None,
        completion_tokens=None,
        tokens_estimated=False,
        chunks=0,
        status=status,
        error=code,
        rejected=True,
    )
