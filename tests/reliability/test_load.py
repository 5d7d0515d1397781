"""2,000 concurrent connections, mostly queued heartbeats, against a 4-slot simulated upstream.

Promises checked: no crash and no 5xx; gateway RSS ≤ 250 MB; full queues answer 429 with a
Retry-After; no admitted request waited longer than its lane's queue_timeout (plus one loop
tick); interactive requests, arriving after the heartbeat flood, are admitted ahead of it.
Run by `make test-load`; bounded to about a minute. Figures: test-output/reliability/load.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.reliability.conftest import SIM_ARGS, raise_open_file_limit, record_figures
from tests.support.gateway_state import LaneProbe, assert_lanes_idle
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import start_gateway, start_simulator

pytestmark = [pytest.mark.load, pytest.mark.timeout(240)]

HEARTBEATS = 1900
INTERACTIVE = 100
HEARTBEAT_TIMEOUT_S = 10
INTERACTIVE_TIMEOUT_S = 30
LOOP_TICK_S = 0.25  # an expiry timer fires after its deadline by at most a busy loop's tick
MiB = 1024 * 1024

LANES = f"""
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 4, reserved: 1, max_queue: 150,
     queue_timeout: {INTERACTIVE_TIMEOUT_S}}}
  - {{name: heartbeat, priority: 50, max_concurrency: 3, max_queue: 600,
     queue_timeout: {HEARTBEAT_TIMEOUT_S}}}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, heartbeat]
"""


@dataclass
class Outcome:
    lane: str
    status: int
    queue_ms: float | None
    retry_after: int | None
    code: str | None
    elapsed_s: float


def _request(lane: str) -> bytes:
    stream = lane == "interactive"
    body = json.dumps(
        {
            "model": "m",
            "stream": stream,
            "max_tokens": 8 if stream else 4,
            "messages": [{"role": "user", "content": "anything new?"}],
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        f"content-type: application/json\r\nx-lane: {lane}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, lane: str, go: asyncio.Event) -> Outcome:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await go.wait()
    started = time.monotonic()
    writer.write(_request(lane))
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    status = int(lines[0].split(" ")[1])
    code = None
    if status >= 400:
        code = json.loads(body)["error"]["code"]
    queue = headers.get("x-lanegate-queue-ms")
    retry = headers.get("retry-after")
    return Outcome(
        lane,
        status,
        float(queue) if queue else None,
        int(retry) if retry else None,
        code,
        time.monotonic() - started,
    )


async def _flood(port: int) -> list[Outcome]:
    """All 2,000 connections open at once; heartbeats send first, interactive 1 s later."""
    heartbeats_go, interactive_go = asyncio.Event(), asyncio.Event()
    clients = []
    for i in range(HEARTBEATS + INTERACTIVE):
        lane, go = (
            ("heartbeat", heartbeats_go) if i < HEARTBEATS else ("interactive", interactive_go)
        )
        clients.append(asyncio.ensure_future(_client(port, lane, go)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # let the accept queue drain between batches
    await asyncio.sleep(1.0)
    heartbeats_go.set()
    await asyncio.sleep(1.0)  # the heartbeat queue is full and the slots are busy
    interactive_go.set()
    return list(await asyncio.gather(*clients))


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        peak[1] = max(peak[1], process.num_fds())
        time.sleep(0.1)


def test_two_thousand_connections(output_dir: Path, tmp_path: Path) -> None:
    limit = raise_open_file_limit(HEARTBEATS * 2 + INTERACTIVE * 2 + 1000)
    assert limit >= 5000, f"RLIMIT_NOFILE hard limit too low for this test: {limit}"
    sim = start_simulator(
        "sim-load", output_dir, *SIM_ARGS, "--ttft-ms", "20", "--chunk-interval-ms", "10"
    )
    policy = write_policy(
        tmp_path / "policy.yaml", [upstream_entry("sim", sim.url, max_concurrency=4)], LANES
    )
    gateway = start_gateway(
        "gw-load",
        policy,
        output_dir,
        state=tmp_path / "state",
        env={"LANEGATE_ACCESS_LOG": "false"},
    )
    stop, peak = threading.Event(), [0, 0]
    sampler = threading.Thread(target=_sample_rss, args=(gateway.process.pid, stop, peak))
    try:
        rss_idle = psutil.Process(gateway.process.pid).memory_info().rss
        sampler.start()
        started = time.monotonic()
        outcomes = asyncio.run(_flood(gateway.port))
        wall_s = time.monotonic() - started
        stop.set()
        sampler.join()
        assert gateway.process.poll() is None, gateway.log()[-3000:]
        assert "unexpected error" not in gateway.log()
        assert_lanes_idle(gateway, [LaneProbe("interactive", 4)])
    finally:
        stop.set()
        gateway.stop()
        sim.stop()
    by = {lane: [o for o in outcomes if o.lane == lane] for lane in ("heartbeat", "interactive")}
    statuses = {o.status for o in outcomes}
    assert statuses <= {200, 429}, statuses
    rejected = [o for o in outcomes if o.status == 429]
    assert rejected and all(o.retry_after is not None and o.retry_after >= 1 for o in rejected)
    admitted = {lane: [o.queue_ms or 0.0 for o in by[lane] if o.status == 200] for lane in by}
    assert len(admitted["interactive"]) == INTERACTIVE  # none refused: they go first
    assert max(admitted["heartbeat"]) <= (HEARTBEAT_TIMEOUT_S + LOOP_TICK_S) * 1000
    assert max(admitted["interactive"]) <= (INTERACTIVE_TIMEOUT_S + LOOP_TICK_S) * 1000
    waited = [o.elapsed_s for o in by["heartbeat"] if o.code == "lane_queue_timeout"]
    assert all(w < HEARTBEAT_TIMEOUT_S + 5 for w in waited)
    # Interactive requests came last yet waited less than the heartbeats served meanwhile.
    assert statistics.median(admitted["interactive"]) < statistics.median(admitted["heartbeat"])
    assert peak[0] <= 250 * MiB, f"peak RSS {peak[0] / MiB:.0f} MiB"
    codes: dict[str, int] = {}
    for o in rejected:
        codes[f"{o.lane}:{o.code}"] = codes.get(f"{o.lane}:{o.code}", 0) + 1
    record_figures(
        "load",
        {
            "connections": HEARTBEATS + INTERACTIVE,
            "wall_s": round(wall_s, 1),
            "rss_idle_mib": round(rss_idle / MiB, 1),
            "rss_peak_mib": round(peak[0] / MiB, 1),
            "fds_peak": peak[1],
            "served": {lane: len(v) for lane, v in admitted.items()},
            "rejected_429": codes,
            "queue_ms_max": {lane: max(v) for lane, v in admitted.items()},
            "queue_ms_median": {lane: statistics.median(v) for lane, v in admitted.items()},
            "queue_timeout_s": {
                "heartbeat": HEARTBEAT_TIMEOUT_S,
                "interactive": INTERACTIVE_TIMEOUT_S,
            },
            "timed_out_wait_s_max": round(max(waited, default=0.0), 2),
        },
    )
