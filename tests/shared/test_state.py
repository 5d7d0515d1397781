"""Several gateway processes, one real Redis: lanes, budgets and offload hold across all of them.

Two (or three) real `lanegate serve` processes share one `redis-server` on a loopback port, in
front of one scripted upstream that counts the requests it is answering at once. Covered: a
lane cap held across both under load (and, as the control, broken without Redis), a budget
never overspent, a killed gateway's slots coming back within the lease TTL, Redis stopped and
started again mid-run (fail-open and fail-closed lanes, recovery without a restart), and the
gateways agreeing on the offload state.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

LEASE_TTL_S = 2.0
LANES = ("batch", "metered")  # metered: a token budget and on_redis_down: closed
USAGE = {"prompt_tokens": 5, "completion_tokens": 95, "total_tokens": 100}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": USAGE,
}
EVENT = b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'  # noqa: E501


def _script(request: SeenRequest) -> Script:
    """Streams hang after one event (held slots); the rest answer after 0.3 s with usage."""
    body = json.loads(request.body or b"{}")
    if body.get("stream"):
        return Script(chunks=[EVENT], after_chunks="hang")
    return Script(
        chunks=[json.dumps(ANSWER).encode()], content_type="application/json", delay_s=0.3
    )


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_script) as server:
        yield server


SHARED_LANES = """
lanes:
  - {name: batch, priority: 10, max_concurrency: 3, queue_timeout: 60}
  - {name: metered, priority: 20, max_concurrency: 8, tokens_per_day: 1000,
      on_redis_down: closed}
classify: {default_lane: batch, anonymous_lanes: [batch, metered]}
"""


def _policy(path: Path, upstream: ScriptedUpstream, extra: str = "") -> Path:
    entry = upstream_entry("up", upstream.url, "openai", max_concurrency=8)
    return write_policy(path, [entry], extra + SHARED_LANES)


def _start(
    count: int, policy: Path, log_dir: Path, redis_url: str | None, prefix: str, **env: str
) -> list[Service]:
    shared = {"LANEGATE_ACCESS_LOG": "false", **env}
    if redis_url is not None:
        shared |= {
            "LANEGATE_REDIS_URL": redis_url,
            "LANEGATE_REDIS_PREFIX": prefix,
            "LANEGATE_REDIS_LEASE_TTL": str(LEASE_TTL_S),
        }
    return [start_gateway(f"gw{i}-{prefix}", policy, log_dir, env=shared) for i in range(count)]


def _stop(gateways: list[Service]) -> None:
    for gateway in gateways:
        gateway.stop()


async def _chat(
    gateway: Service | openai.AsyncOpenAI, lane: str, max_tokens: int = 100
) -> tuple[int, str, float]:
    """(status, error code or "", queue ms) of one request through the openai SDK."""
    if isinstance(gateway, Service):
        async with _client(gateway) as client:
            return await _chat(client, lane, max_tokens)
    try:
        raw = await gateway.chat.completions.with_raw_response.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=max_tokens,
            extra_headers={"x-lane": lane},
        )
        return raw.http_response.status_code, "", float(raw.headers["x-lanegate-queue-ms"])
    except openai.APIStatusError as error:
        code = error.body.get("code", "") if isinstance(error.body, dict) else ""
        return error.status_code, str(code), math.nan


def _client(gateway: Service) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)


async def _load(gateways: list[Service], lane: str, count: int) -> list[tuple[int, str, float]]:
    """`count` requests at once, alternating between the gateways (clients made beforehand, so
    every request is in flight together)."""
    clients = [_client(gateway) for gateway in gateways]
    try:
        return await asyncio.gather(*(_chat(clients[i % len(clients)], lane) for i in range(count)))
    finally:
        for client in clients:
            await client.close()


async def test_lane_cap_is_held_across_two_gateways(
    redis_server: RedisServer,  # noqa: F811
    upstream: ScriptedUpstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    gateways = _start(
        2, _policy(tmp_path / "p.yaml", upstream), output_dir, redis_server.url, _id()
    )
    try:
        results = await _load(gateways, "batch", 24)
    finally:
        _stop(gateways)
    assert [status for status, _, _ in results] == [200] * 24
    assert upstream.max_in_flight == 3  # the cap was reached, and never passed


async def test_without_redis_each_gateway_has_its_own_cap(
    upstream: ScriptedUpstream, output_dir: Path, tmp_path: Path
) -> None:
    """The control for the test above: without shared state the caps add up."""
    gateways = _start(2, _policy(tmp_path / "p.yaml", upstream), output_dir, None, _id())
    try:
        results = await _load(gateways, "batch", 24)
    finally:
        _stop(gateways)
    assert [status for status, _, _ in results] == [200] * 24
    assert upstream.max_in_flight > 3


async def test_budget_is_never_overspent_across_two_gateways(
    redis_server: RedisServer,  # noqa: F811
    upstream: ScriptedUpstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    day = _day()
    gateways = _start(
        2, _policy(tmp_path / "p.yaml", upstream), output_dir, redis_server.url, _id()
    )
    try:
        results = await _load(gateways, "metered", 30)
        served = [await _chat(g, "metered") for g in gateways]  # after the settles landed
    finally:
        _stop(gateways)
    if _day() != day:
        pytest.skip("the UTC day rolled during the test; its window check would not hold")
    ok = [r for r in [*results, *served] if r[0] == 200]
    refused = [r for r in [*results, *served] if r[0] != 200]
    # Each request reserves 1 + 100 tokens and uses 100; alone, each gateway would serve 10.
    assert len(ok) * USAGE["total_tokens"] <= 1000
    assert len(ok) >= 1000 // 101
    assert refused and all(r[:2] == (429, "token_budget") for r in refused)


async def test_a_killed_gateways_slots_come_back_within_the_lease_ttl(
    redis_server: RedisServer,  # noqa: F811
    upstream: ScriptedUpstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    prefix = _id()
    gateways = _start(
        2, _policy(tmp_path / "p.yaml", upstream), output_dir, redis_server.url, prefix
    )
    victim, survivor = gateways
    leases = f"{prefix}:lease:lane:batch"
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        async with httpx.AsyncClient(base_url=victim.url, timeout=30) as http:
            streams = [await _open_stream(http) for _ in range(3)]  # the lane's whole cap
            assert await _live(store, leases) == 3
            victim.stop(signal.SIGKILL)
            for response, _ in streams:
                await response.aclose()
        assert await _live(store, leases) == 3  # nobody released them: they must expire
        started = time.monotonic()
        results = await asyncio.gather(*(_chat(survivor, "batch") for _ in range(3)))
        waited = time.monotonic() - started
    finally:
        _stop(gateways)
        await store.aclose()
    assert [status for status, _, _ in results] == [200] * 3
    assert min(queue_ms for _, _, queue_ms in results) >= 300  # queued until the leases expired
    assert waited <= LEASE_TTL_S + 3  # TTL, plus one re-check and the answers' own 0.3 s


async def test_redis_stopped_and_started_again_mid_run(
    upstream: ScriptedUpstream, output_dir: Path, tmp_path: Path
) -> None:
    if _missing_redis():
        pytest.skip("redis-server is not installed (make system-deps)")
    server = RedisServer(tmp_path).start()
    gateways = _start(2, _policy(tmp_path / "p.yaml", upstream), output_dir, server.url, _id())
    try:
        for gateway in gateways:
            assert (await _chat(gateway, "metered"))[0] == 200
        clients = [_client(g) for g in gateways]
        running = [asyncio.ensure_future(_chat(c, lane)) for c in clients for lane in LANES]
        for _ in range(100):  # admitted and upstream: then Redis goes away under them
            if upstream.in_flight == len(running):
                break
            await asyncio.sleep(0.02)
        assert upstream.in_flight == len(running)
        server.stop()
        assert [r[:2] for r in await asyncio.gather(*running)] == [(200, "")] * 4
        for client in clients:
            await client.close()
        down = [
            await _chat(gateways[i % 2], lane) for i in range(4) for lane in ("batch", "metered")
        ]
        assert [r[:2] for r in down if r[0] == 200] == [(200, "")] * 4  # batch: fail open
        assert [r[:2] for r in down if r[0] != 200] == [(503, "shared_state_unavailable")] * 4
        for gateway in gateways:
            shared = (await _ready(gateway))["shared"]
            assert shared["redis_ok"] is False and shared["outages"] == 1
            assert int(str(shared["local_admissions"])) >= 2  # the batch requests, fail-open
            assert gateway.log().count("Redis unreachable") == 1  # once per outage
            async with httpx.AsyncClient(timeout=5) as http:  # ... and in /metrics
                metrics = (await http.get(f"{gateway.url}/metrics")).text
            assert "\nlanegate_redis_up 0.0\n" in metrics
        server.start()
        for gateway in gateways:
            await _until_redis_ok(gateway)
            assert (await _chat(gateway, "metered"))[0] == 200  # fail-closed lane serves again
            assert "Redis reachable again" in gateway.log()
    finally:
        _stop(gateways)
        server.stop()


def _id() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _day() -> int:
    return math.floor(time.time() / 86400)


def _missing_redis() -> bool:
    import shutil

    return shutil.which("redis-server") is None


async def _open_stream(http: httpx.AsyncClient) -> tuple[httpx.Response, AsyncIterator[bytes]]:
    """A stream that has started (holds its slot); the iterator must be kept, or the
    garbage collector closes it and the gateway sees the client leave."""
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    request = http.build_request("POST", "/v1/chat/completions", json=body)
    response = await http.send(request, stream=True)
    assert response.status_code == 200
    chunks = response.aiter_bytes()
    await chunks.__anext__()
    return response, chunks


async def _live(store: aioredis.Redis, key: str) -> int:
    """Leases in `key` that have not expired, by Redis' own clock."""
    seconds, micros = await store.time()
    return int(await store.zcount(key, seconds * 1000 + micros // 1000, "+inf"))


async def _ready(gateway: Service) -> dict[str, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as http:
        return dict((await http.get(f"{gateway.url}/readyz")).json())


async def _until_redis_ok(gateway: Service) -> None:
    for _ in range(100):
        if (await _ready(gateway))["shared"]["redis_ok"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{gateway.name} did not reconnect to Redis:\n{gateway.log()[-2000:]}")


async def test_gateways_agree_on_the_offload_state(
    redis_server: RedisServer,  # noqa: F811
    upstream: ScriptedUpstream,
    output_dir: Path,
    tmp_path: Path,
) -> None:
    remote = (
        f"  - {{name: far, pool: remote, kind: openai, base_url: '{upstream.url}', "
        "max_concurrency: 8}\n"
        "admin_key: env:T_ADMIN_KEY\n"
        "offload: {sustain: 30, recover: 30, sample_interval: 0.2}\n"
    )
    policy = _policy(tmp_path / "p.yaml", upstream, remote)
    gateways = _start(2, policy, output_dir, redis_server.url, _id(), T_ADMIN_KEY="admin-secret")
    try:
        assert {(await _offload(g))["state"] for g in gateways} == {"local"}
        # The operator forces offload on one gateway; whichever leads, both route by it.
        await _offload(gateways[1], "force-offload")
        await _until_offload(gateways, "offloading", "force-offload")
        await _offload(gateways[0], "force-local")
        await _until_offload(gateways, "local", "force-local")
    finally:
        _stop(gateways)


async def _offload(gateway: Service, mode: str | None = None) -> dict[str, str]:
    headers = {"authorization": "Bearer admin-secret"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=5) as http:
        if mode is None:
            response = await http.get("/admin/offload")
        else:
            response = await http.post("/admin/offload", json={"mode": mode})
        assert response.status_code == 200, response.text
        return dict(response.json())


async def _until_offload(gateways: list[Service], state: str, mode: str) -> None:
    seen: list[dict[str, str]] = []
    for _ in range(100):
        seen = [await _offload(g) for g in gateways]
        if all(s["state"] == state and s["mode"] == mode for s in seen):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"gateways disagree on offload: {seen}")
