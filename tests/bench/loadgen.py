"""An asyncio load generator on aiohttp: measured here ~7,000 req/s where an httpx client
capped near 300, so it is not the bottleneck. TTFT is the first chunk carrying generated
output, found by the gateway's own stream scanner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aiohttp

from gateway.serving.stream_parser import Api, StreamScanner
from tests.bench.figures import completion_tokens

log = logging.getLogger("bench.loadgen")


@dataclass(frozen=True, slots=True)
class Sample:
    ttft: float | None
    e2e: float
    status: int
    upstream: str | None = None  # x-lanegate-upstream, through the gateway
    completion_tokens: int | None = None  # a non-streamed answer's usage, when it has one


def session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, force_close=False
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def one(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    headers: dict[str, str] | None = None,
) -> Sample:
    """One request; a connection that fails or closes mid-answer is a sample with status 0
    (counted as an error by the scenarios), not the end of the benchmark."""
    started = time.perf_counter()
    ttft: float | None = None
    tokens: int | None = None
    headers = {"content-type": "application/json", **(headers or {})}
    try:
        async with http.post(url, data=body, headers=headers) as response:
            if stream:
                scanner = StreamScanner(Api.CHAT)
                async for chunk in response.content.iter_any():
                    if ttft is None and scanner.feed(chunk):
                        ttft = time.perf_counter() - started
            else:
                raw = await response.read()
                tokens = completion_tokens(raw) if response.status == 200 else None
            status = response.status
            upstream = response.headers.get("x-lanegate-upstream")
    except (aiohttp.ClientError, TimeoutError) as exc:  # TimeoutError: the session's total
        log.warning("%s: %s: %s", url, type(exc).__name__, exc)
        return Sample(None, time.perf_counter() - started, 0)
    return Sample(ttft, time.perf_counter() - started, status, upstream, tokens)


async def sequential(
    http: aiohttp.ClientSession, url: str, body: bytes, stream: bool, count: int
) -> list[Sample]:
    return [await one(http, url, body, stream) for _ in range(count)]


async def closed_loop(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    concurrency: int,
    *,
    duration: float | None = None,
    per_worker: int | None = None,
) -> tuple[list[Sample], float]:
    """Keep `concurrency` requests in flight for `duration` s (or `per_worker` each)."""
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + duration if duration else None

    async def worker() -> None:
        done = 0
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if per_worker is not None and done >= per_worker:
                return
            samples.append(await one(http, url, body, stream))
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started
