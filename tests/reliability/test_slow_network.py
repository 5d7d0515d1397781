"""A slow network between the gateway and its upstream: latency and a bandwidth cap, added by
a small asyncio TCP proxy. The measurements must show it (TTFT and chunk gaps grow by what the
network adds), and nothing may time out that should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import LANES, record_figures
from tests.support.loop_server import LoopServer
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway

pytestmark = pytest.mark.faults

LATENCY_S = 0.25  # one way, upstream → gateway
BYTES_PER_S = 4000  # about 25 small SSE events a second


class SlowProxy(LoopServer):
    """TCP proxy on a loopback port: bytes from the upstream arrive `latency_s` late and at
    most `bytes_per_s`; bytes to the upstream pass at once. Runs its own loop in a thread."""

    def __init__(self, target_port: int, latency_s: float, bytes_per_s: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.latency_s = latency_s
        self.bytes_per_s = bytes_per_s

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        tasks = [
            asyncio.ensure_future(_copy(client_r, upstream_w)),
            asyncio.ensure_future(self._slow_copy(upstream_r, client_w)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            upstream_w.close()

    async def _slow_copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                for i in range(0, len(data), 256):  # the bandwidth cap, 256 bytes at a time
                    writer.write(data[i : i + 256])
                    await writer.drain()
                    await asyncio.sleep(256 / self.bytes_per_s)

        delivery = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(4096):
                queue.put_nowait((time.monotonic() + self.latency_s, data))
            queue.put_nowait((0.0, b""))
            await delivery
        finally:
            delivery.cancel()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _measured(gateway: Service, lane: str) -> dict[str, object]:
    """Stream one chat through `gateway`; its access-log line (looked up by request id)."""
    request_id = uuid.uuid4().hex
    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hello"}],
    }
    headers = {"x-request-id": request_id, "x-lane": lane}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200 and received.rstrip().endswith(b"[DONE]"), received[-200:]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in gateway.log().splitlines():
            if request_id in line and "lanegate.access" in line:
                return dict(json.loads(line.split("lanegate.access ", 1)[1]))
        time.sleep(0.05)
    raise AssertionError("no access-log line for the request")


def test_slow_network_shows_in_measurements_and_times_nothing_out(
    sim: Service, output_dir: Path, tmp_path: Path
) -> None:
    timeouts = {"connect": 2, "first_byte": 5, "idle": 3}  # well above what the network adds

    def measure(name: str, url: str) -> list[dict[str, object]]:
        upstreams = [upstream_entry(name, url, timeouts=timeouts)]
        policy = write_policy(tmp_path / f"{name}.yaml", upstreams, LANES)
        gateway = start_gateway(
            f"gw-net-{name}", policy, output_dir, state=tmp_path / f"state-{name}"
        )
        try:
            return [_measured(gateway, "interactive") for _ in range(3)]
        finally:
            gateway.stop()

    direct = measure("direct", sim.url)
    with SlowProxy(sim.port, LATENCY_S, BYTES_PER_S) as proxy:
        slow = measure("slow", f"http://127.0.0.1:{proxy.port}")
    assert {r["upstream"] for r in direct} == {"direct"}
    assert {r["upstream"] for r in slow} == {"slow"}
    assert all(r["error"] is None and r["status"] == 200 for r in direct + slow)
    ttft_direct = max(float(r["ttft_ms"]) for r in direct)  # type: ignore[arg-type]
    ttft_slow = min(float(r["ttft_ms"]) for r in slow)  # type: ignore[arg-type]
    assert ttft_slow >= ttft_direct + LATENCY_S * 1000 * 0.9, (ttft_direct, ttft_slow)
    duration_direct = max(float(r["duration_ms"]) for r in direct)  # type: ignore[arg-type]
    duration_slow = min(float(r["duration_ms"]) for r in slow)  # type: ignore[arg-type]
    assert duration_slow > duration_direct  # the bandwidth cap stretches the stream
    gap_direct = max(float(r["gap_p95_ms"]) for r in direct)  # type: ignore[arg-type]
    assert all(float(r["gap_p95_ms"]) > gap_direct for r in slow)  # type: ignore[arg-type]
    record_figures(
        "slow_network",
        {
            "latency_ms_added": LATENCY_S * 1000,
            "bandwidth_bytes_per_s": BYTES_PER_S,
            "direct": [{k: r[k] for k in ("ttft_ms", "gap_p95_ms", "duration_ms")} for r in direct],
            "slow": [{k: r[k] for k in ("ttft_ms", "gap_p95_ms", "duration_ms")} for r in slow],
        },
    )
