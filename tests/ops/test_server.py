"""SIGTERM on a real `lanegate serve` with live streams: drain, refuse, cut, flush, exit 0.

The upstream is the scripted one, sending a recorded llama-server stream slowly: "short"
streams take ~1.5 s, "long" ones ~10 s, against a 4 s LANEGATE_DRAIN_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA
from tests.support.processes import Service, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest
from tests.support.streams import chat_body, split_into, stream_chat, until

RECORDED = (DATA / "streams" / "llama-server__chat_stream_usage.sse").read_bytes()
DRAIN_S = 4.0
SHORT_CHUNKS, LONG_CHUNKS, CHUNK_DELAY_S = 15, 100, 0.1

POLICY = """version: 1
upstreams:
  - {{name: scripted, kind: openai, base_url: '{url}', max_concurrency: 8}}
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 8}}
  - {{name: batch, priority: 10, max_concurrency: 1, max_queue: 5, queue_timeout: 30}}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, batch]
"""


def _script(request: SeenRequest) -> Script:
    if request.method == "GET":  # discovery
        return Script(chunks=[b'{"object":"list","data":[]}'], content_type="application/json")
    model = json.loads(request.body)["model"]
    parts = LONG_CHUNKS if model == "long" else SHORT_CHUNKS
    return Script(chunks=split_into(RECORDED, parts), delay_s=CHUNK_DELAY_S)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_script) as server:
        yield server


def _serve(upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path, name: str) -> Service:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=upstream.url))
    return start_gateway(name, policy, output_dir, env={"LANEGATE_DRAIN_TIMEOUT": str(DRAIN_S)})


def _error_of(body: bytes) -> dict[str, object]:
    return dict(json.loads(body)["error"])


async def test_sigterm_drains_live_streams_then_exits_0(
    upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path
) -> None:
    gateway = _serve(upstream, tmp_path, output_dir, "gw-drain")
    try:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
            shorts = [asyncio.create_task(stream_chat(http, "short")) for _ in range(5)]
            long = asyncio.create_task(stream_chat(http, "long", lane="batch"))
            await until(lambda: upstream.in_flight == 6)
            queued = asyncio.create_task(stream_chat(http, "short", lane="batch"))
            await asyncio.sleep(0.3)  # behind the long stream: batch admits one at a time
            assert upstream.in_flight == 6 and not queued.done()

            sent_at = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            status, headers, body = await queued
            assert status == 503 and _error_of(body)["code"] == "gateway_draining"
            assert int(headers["retry-after"]) >= 1 and headers["x-lanegate-lane"] == "batch"
            assert headers["connection"] == "close"

            # A new connection during the drain is answered (not refused) and sent elsewhere.
            async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as late:
                refused = await late.post("/v1/chat/completions", json=chat_body("short"))
                ready = await late.get("/readyz")
            assert refused.status_code == 503
            assert _error_of(refused.content)["code"] == "gateway_draining"
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["connection"] == "close"
            assert ready.status_code == 503 and ready.json()["status"] == "draining"

            for status, _, body in await asyncio.gather(*shorts):
                assert status == 200 and body == RECORDED  # complete and intact

            status, _, body = await long
        assert status == 200
        head, _, last = body.rstrip(b"\n").rpartition(b"\n\n")
        assert RECORDED.startswith(head + b"\n\n")  # what was relayed is the upstream's bytes
        assert last.startswith(b"data: ")
        error = _error_of(last[len(b"data: ") :])
        assert error["code"] == "gateway_draining" and "LANEGATE_DRAIN_TIMEOUT" in str(
            error["message"]
        )
        code = await asyncio.to_thread(gateway.process.wait, DRAIN_S + 5)
        exited_after = time.monotonic() - sent_at
        assert code == 0, gateway.log()
        assert exited_after <= DRAIN_S + 2, exited_after
        assert "Application shutdown complete" in gateway.log()  # budgets/ledger flushed
    finally:
        gateway.stop(signal.SIGKILL)


async def test_idle_gateway_exits_at_once_and_second_signal_cuts_now(
    upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path
) -> None:
    idle = _serve(upstream, tmp_path, output_dir, "gw-drain-idle")
    try:
        sent_at = time.monotonic()
        idle.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(idle.process.wait, 5) == 0
        assert time.monotonic() - sent_at < DRAIN_S  # nothing in flight: no waiting
    finally:
        idle.stop(signal.SIGKILL)

    busy = _serve(upstream, tmp_path, output_dir, "gw-drain-twice")
    try:
        async with httpx.AsyncClient(base_url=busy.url, timeout=30) as http:
            long = asyncio.create_task(stream_chat(http, "long"))
            await until(lambda: upstream.in_flight == 1)
            busy.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            sent_at = time.monotonic()
            busy.process.send_signal(signal.SIGTERM)
            status, _, body = await long
            assert await asyncio.to_thread(busy.process.wait, 5) == 0
            assert time.monotonic() - sent_at < DRAIN_S  # the drain was not waited for
        assert status == 200 and b'"code": "gateway_draining"' in body.rpartition(b"data: ")[2]
        assert "Application shutdown complete" in busy.log()
    finally:
        busy.stop(signal.SIGKILL)
