"""What a request's end amounts to: budget refusals as answers, tokens to settle, records."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest, RateLimited
from gateway.lanes.budgets import Refusal
from gateway.observe.measurement import RequestRecord
from gateway.serving.outcomes import over_budget, rejected, tokens_used


def refusal(*, never_fits: bool = False, retry_after_s: float = 12.2) -> Refusal:
    return Refusal(
        scope=("lane", "batch"),
        window="minute",
        limit=3000,
        used=2500,
        reserved=400,
        requested=5000 if never_fits else 200,  # over the limit: it can never fit
        retry_after_s=retry_after_s,
    )


def test_a_request_that_could_never_fit_is_a_400_naming_max_tokens() -> None:
    error = over_budget(refusal(never_fits=True))
    assert isinstance(error, BadRequest) and error.param == "max_tokens"
    assert "3000 per minute" in error.message and "lane 'batch'" in error.message


def test_a_spent_window_is_a_429_with_the_wait_rounded_up() -> None:
    error = over_budget(refusal(retry_after_s=12.2))
    assert isinstance(error, RateLimited) and error.headers == {"retry-after": "13"}
    assert "2900/3000" in error.message


def test_anthropic_clients_get_the_window_headers() -> None:
    error = over_budget(refusal(), anthropic_now=1_700_000_000.0)
    assert error.headers["anthropic-ratelimit-tokens-limit"] == "3000"
    assert error.headers["anthropic-ratelimit-tokens-remaining"] == "100"


def record(status: int, prompt: int | None, completion: int | None) -> RequestRecord:
    return RequestRecord(
        ttft_s=None, gap_max_s=None, gap_p95_s=None, duration_s=1.0, prompt_tokens=prompt,
        completion_tokens=completion, tokens_estimated=False, chunks=0, status=status,
        error=None,
    )  # fmt: skip


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_real_usage_is_settled_when_the_upstream_said(prompt: int, completion: int) -> None:
    assert tokens_used(record(200, prompt, completion), 7, 99) == prompt + completion


def test_estimates_fill_in_what_the_upstream_did_not_say() -> None:
    assert tokens_used(record(200, None, 5), prompt_estimate=7, estimate=99) == 12
    assert tokens_used(record(200, None, None), prompt_estimate=7, estimate=99) == 99
    assert tokens_used(record(502, None, None), prompt_estimate=7, estimate=99) == 0
    assert tokens_used(record(0, None, None), prompt_estimate=7, estimate=99) == 0


def test_a_rejected_request_lasts_from_arrival_to_its_answer() -> None:
    done = rejected(429, "lane_queue_full", received_at=10.0, now=12.5)
    assert done.rejected and done.status == 429 and done.error == "lane_queue_full"
    assert done.duration_s == 2.5 and done.ttft_s is None
