"""What a finished attempt teaches the breaker (issue 18): the gateway's own limits teach
nothing, and one source's 5xx answers are not evidence that the upstream is sick."""

from __future__ import annotations

from gateway.errors import OUT_OF_FILES, UpstreamBodyTooLarge
from gateway.observe.measurement import RequestRecord
from gateway.policy.spec import Policy, Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.circuit_breaker import BreakerState
from gateway.upstreams.router import UpstreamRouter

UPSTREAM = UpstreamSpec("u", "local", UpstreamKind.OLLAMA, "http://x:1", 4, Timeouts())
POLICY = Policy("test", (UPSTREAM,), (), ())


def _record(status: int, error: str | None = None, failed: bool = False) -> RequestRecord:
    return RequestRecord(None, None, None, 0.1, None, None, False, 1, status, error,
                         upstream_failed=failed)  # fmt: skip


async def _run(router: UpstreamRouter, record: RequestRecord, source: str | None) -> None:
    attempt = router.begin(POLICY, (UPSTREAM,), "m", set(), source)
    router.finished(attempt, record)


def _router() -> UpstreamRouter:
    return UpstreamRouter(dict, clock=lambda: 0.0)


async def test_the_gateways_own_limits_teach_the_breaker_nothing() -> None:
    router = _router()
    for error in [OUT_OF_FILES, UpstreamBodyTooLarge.code] * 10:
        status = 503 if error == OUT_OF_FILES else 502
        await _run(router, _record(status, error), "alice")
    assert router.breaker("u").state(0.0) is BreakerState.CLOSED


async def test_one_sources_500s_do_not_open_several_sources_do() -> None:
    router = _router()
    for _ in range(20):
        await _run(router, _record(500), "mallory")
    assert router.breaker("u").state(0.0) is BreakerState.CLOSED
    await _run(router, _record(500), "alice")
    assert router.breaker("u").state(0.0) is BreakerState.OPEN


async def test_a_broken_connection_still_opens_it_from_one_source() -> None:
    router = _router()
    for _ in range(5):
        await _run(router, _record(502, "UpstreamDisconnected: x", failed=True), "alice")
    assert router.breaker("u").state(0.0) is BreakerState.OPEN
