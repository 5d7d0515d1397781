"""Clients that misbehave: one that never reads, and hundreds that leave at random points.

Afterwards nothing may be left behind: no slot held, nothing queued, every budget
reservation settled or released (tests/support/gateway_state.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.reliability.conftest import ADMIN, LANES, record_figures, restart_on
from tests.support.gateway_state import (
    BudgetProbe,
    LaneProbe,
    assert_lanes_idle,
    stuck_reservations,
)
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

pytestmark = pytest.mark.faults

PROBES = [LaneProbe("interactive", 2), LaneProbe("work", 2)]
MiB = 1024 * 1024


def _request(path: str, body: dict[str, object], lane: str) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"x-lane: {lane}\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _rss(service: Service) -> int:
    return int(psutil.Process(service.process.pid).memory_info().rss)


# -- a client that never reads -------------------------------------------------------------

FLOOD_EVENT = b"data: " + json.dumps({"choices": [{"delta": {"content": "x" * 8000}}]}).encode()
FLOOD = [FLOOD_EVENT + b"\n\n"] * 25_000  # ~200 MB per request if it were buffered


def _flood(request: SeenRequest) -> Script:
    if request.method == "GET":
        return Script(status=404, content_type="application/json", chunks=[b"{}"])
    return Script(chunks=FLOOD)


@pytest.fixture(scope="module")
def flood_upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_flood) as server:
        yield server


def test_client_that_never_reads_gets_backpressure(
    flood_upstream: ScriptedUpstream, output_dir: Path, tmp_path: Path
) -> None:
    """The gateway reads from the upstream only as fast as the client takes the bytes: four
    clients that never read cost socket buffers, not the ~800 MB the upstream would send."""
    timeouts = {"first_byte": 2, "idle": 1}
    upstreams = [
        upstream_entry(
            "flood", flood_upstream.url, "llamacpp", max_concurrency=4, timeouts=timeouts
        )
    ]
    policy = write_policy(tmp_path / "policy.yaml", upstreams, LANES)
    gateway = start_gateway("gw-never-reads", policy, output_dir, state=tmp_path / "state")
    sockets: list[socket.socket] = []
    try:
        baseline = _rss(gateway)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        for lane in ("interactive", "interactive", "work", "work"):
            sock = socket.create_connection(("127.0.0.1", gateway.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(_request("/v1/chat/completions", body, lane))
            sockets.append(sock)
        peak = baseline
        for _ in range(30):  # 3 s: the flood would be gigabytes by now on loopback
            time.sleep(0.1)
            peak = max(peak, _rss(gateway))
        assert peak - baseline < 40 * MiB, f"RSS grew {(peak - baseline) / MiB:.1f} MiB"
        record_figures(
            "never_reading_clients",
            {"clients": 4, "rss_baseline_mib": baseline / MiB, "rss_peak_mib": peak / MiB},
        )
        # Stalled for longer than the idle timeout, the clients count as gone: their slots
        # are free while their sockets are still open, and the upstream is not blamed.
        assert_lanes_idle(gateway, PROBES, ADMIN)
        log = gateway.log()
        assert log.count('"error":"client_stalled"') == 4, log[-3000:]
        assert '"error":"idle_timeout"' not in log
    finally:
        for sock in sockets:
            sock.close()
        gateway.stop()


# -- clients that disconnect at random points ----------------------------------------------

REQUESTS = 500
CONCURRENCY = 24


async def _one(port: int, rng: random.Random) -> str:
    """One client: sends (maybe half) a request, then leaves at a random point."""
    lane = rng.choice(["interactive", "work"])
    stream = rng.random() < 0.7
    body = {
        "model": "m",
        "stream": stream,
        "max_tokens": rng.randint(1, 60),
        "messages": [{"role": "user", "content": "tell me a story " * rng.randint(1, 20)}],
    }
    raw = _request("/v1/chat/completions", body, lane)
    point = rng.choice(["mid_request", "queued", "after_headers", "mid_stream", "complete"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if point == "mid_request":
            writer.write(raw[: rng.randint(1, len(raw) - 1)])
            await writer.drain()
            await asyncio.sleep(rng.random() * 0.05)
            return point
        writer.write(raw)
        await writer.drain()
        if point == "queued":
            await asyncio.sleep(rng.random() * 0.02)  # often before admission or headers
            return point
        await reader.readuntil(b"\r\n\r\n")
        if point == "mid_stream":
            await reader.read(rng.randint(1, 2000))
        elif point == "complete":
            await asyncio.wait_for(reader.read(), timeout=0.2)  # keep-alive: read what comes
        return point
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return point
    finally:
        writer.transport.abort()  # an RST, like a killed client or a closed laptop lid


async def _chaos(port: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    counts: dict[str, int] = {}

    async def guarded() -> None:
        async with semaphore:
            point = await _one(port, rng)
            counts[point] = counts.get(point, 0) + 1

    await asyncio.gather(*(guarded() for _ in range(REQUESTS)))
    return counts


def test_random_disconnects_leave_nothing_behind(
    sim: Service, output_dir: Path, tmp_path: Path
) -> None:
    upstreams = [upstream_entry("sim", sim.url, max_concurrency=4)]
    policy = write_policy(tmp_path / "policy.yaml", upstreams, LANES)
    state = tmp_path / "state"
    gateway = start_gateway("gw-disconnects", policy, output_dir, state=state)
    try:
        counts = asyncio.run(_chaos(gateway.port, seed=10))
        assert sum(counts.values()) == REQUESTS and len(counts) == 5, counts
        assert gateway.process.poll() is None
        assert "unexpected error" not in gateway.log()
        assert_lanes_idle(gateway, PROBES, ADMIN)
        restart = restart_on(output_dir, policy, state, "gw-disconnects-2")
        stuck, gateway = stuck_reservations(gateway, BudgetProbe("work"), restart)
        assert stuck == 0
    finally:
        gateway.stop()
