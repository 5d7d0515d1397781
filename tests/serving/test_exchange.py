"""One request's exchange: ids, the disconnect watcher's start, and interruption."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Message

from gateway.serving.exchange import CLIENT_LEFT, Exchange, RequestIds


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def test_request_id_is_the_clients_when_sane_else_fresh_and_stable_per_scope() -> None:
    ids = RequestIds()
    assert ids.of(_scope((b"x-request-id", b"abc-123"))) == "abc-123"
    for bad in (b"", b"x" * 129, "é".encode()):
        fresh = ids.of(_scope((b"x-request-id", bad)))
        assert len(fresh) == 32 and int(fresh, 16) >= 0
    scope = _scope()
    first = ids.of(scope)
    assert ids.of(scope) == first  # every part of the gateway sees the same id
    assert len({ids.of(_scope()) for _ in range(1000)}) == 1000
    assert RequestIds().of(_scope()) != RequestIds().of(_scope())  # seeded per process


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _disconnect() -> Message:
    return {"type": "http.disconnect"}


async def test_watcher_starts_at_the_first_wait_not_before() -> None:
    exchange = Exchange("r", 0.0, time.monotonic)
    exchange.watch(_never)
    assert exchange.watcher is None  # nothing made on the request's path yet
    await asyncio.sleep(0)
    assert exchange.watcher is not None and not exchange.watcher.done()
    exchange.close()
    await asyncio.sleep(0)
    assert exchange.watcher.cancelled()


async def test_no_watcher_for_an_exchange_closed_before_it_waited() -> None:
    exchange = Exchange("r", 0.0, time.monotonic)
    exchange.watch(_never)
    exchange.close()
    await asyncio.sleep(0)
    assert exchange.watcher is None


async def test_a_client_that_leaves_interrupts_the_request() -> None:
    exchange = Exchange("r", 0.0, time.monotonic)
    exchange.watch(_disconnect)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert exchange.reason == CLIENT_LEFT
    asyncio.current_task().uncancel()  # type: ignore[union-attr]
    exchange.close()


async def test_nothing_interrupts_a_response_that_went_out_whole() -> None:
    # uvicorn's receive answers http.disconnect once the response is complete: that must not
    # turn a finished 200 into a 499 while the handler still cleans up.
    exchange = Exchange("r", 0.0, time.monotonic)
    exchange.watch(_never)
    await asyncio.sleep(0)
    exchange.done()
    exchange.interrupt(CLIENT_LEFT)
    await asyncio.sleep(0)  # a cancel would land here
    assert exchange.reason is None
    assert exchange.watcher is not None and exchange.watcher.cancelled()
    exchange.close()


async def test_preempt_only_while_preemptible_once_and_the_client_leaving_wins() -> None:
    exchange = Exchange("r", 0.0, time.monotonic)
    assert not exchange.preempt()  # not preemptible (streamed, or its answer started)
    exchange.preemptible = True
    assert exchange.preempt()
    assert not exchange.preempt() and not exchange.preemptible  # once
    exchange.interrupt(CLIENT_LEFT)  # left while the preemption was on its way
    with pytest.raises(asyncio.CancelledError):  # one cancel, not two
        await asyncio.sleep(1)
    assert exchange.reason == CLIENT_LEFT  # ends as a 499, not re-run for nobody
    asyncio.current_task().uncancel()  # type: ignore[union-attr]
    await asyncio.sleep(0)  # no second cancel is pending
    exchange.close()
    exchange.preemptible = True
    assert not exchange.preempt()  # the response went out: never
    assert exchange.reason == CLIENT_LEFT
