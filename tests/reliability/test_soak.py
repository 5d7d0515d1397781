"""A soak with modest mixed load: memory flat, file descriptors back, no unintended error.

LANEGATE_SOAK_MINUTES sets the length (default 20, as the issue asks). The first quarter is
warm-up; over the rest, the least-squares RSS slope times that window must stay ≤ 5 MB (the
last 15 minutes of a 20-minute run). File descriptors after the load stops must be back to
their count after the warm-up burst (idle upstream keep-alive connections, which the pool
may keep, counted apart). Statuses other than 200, intended 429s and our own
disconnects fail the test. Figures: test-output/reliability/soak.json. `make test-load` only.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.reliability.conftest import record_figures
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway

MINUTES = float(os.environ.get("LANEGATE_SOAK_MINUTES", "20"))
pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60) + 240)]
SAMPLE_S = 5.0
GROWTH_LIMIT = 5 * 1024 * 1024
MiB = 1024 * 1024

LANES = """
lanes:
  - {name: interactive, priority: 100, max_concurrency: 3, reserved: 1, max_queue: 10}
  - {name: heartbeat, priority: 50, max_concurrency: 1, max_queue: 2, queue_timeout: 2,
     tokens_per_minute: 2000}
  - {name: batch, priority: 10, max_concurrency: 2, max_queue: 20}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, heartbeat, batch]
  rules:
    - {name: embeddings, lane: batch, match: {path: [/v1/embeddings]}}
"""
INTENDED = {200, 429}


def _chat(stream: bool, max_tokens: int) -> dict[str, object]:
    return {
        "model": "m",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "soak " * random.randint(1, 40)}],
    }


async def _worker(url: str, kind: str, until: float, statuses: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < until:
            status = await _one(http, kind)
            key = f"{kind}:{status}"
            statuses[key] = statuses.get(key, 0) + 1
            await asyncio.sleep(random.uniform(0.05, 0.3))


async def _one(http: httpx.AsyncClient, kind: str) -> int:
    if kind == "embed":
        response = await http.post("/v1/embeddings", json={"model": "m", "input": ["a", "b"]})
        return response.status_code
    if kind == "heartbeat":
        response = await http.post(
            "/v1/chat/completions", json=_chat(False, 8), headers={"x-lane": "heartbeat"}
        )
        return response.status_code
    async with http.stream("POST", "/v1/chat/completions", json=_chat(True, 24)) as response:
        if kind == "leaver":  # a client that leaves mid-stream: ours, and intended
            async for _ in response.aiter_raw():
                break
            return 499
        async for _ in response.aiter_raw():
            pass
        return response.status_code


async def _load(url: str, seconds: float, statuses: dict[str, int]) -> None:
    until = time.monotonic() + seconds
    kinds = ["chat", "chat", "chat", "heartbeat", "heartbeat", "embed", "leaver"]
    await asyncio.gather(*(_worker(url, kind, until, statuses) for kind in kinds))


def _sampler(pid: int, stop: threading.Event, samples: list[tuple[float, int, int]]) -> None:
    process = psutil.Process(pid)
    started = time.monotonic()
    while not stop.wait(SAMPLE_S):
        samples.append((time.monotonic() - started, process.memory_info().rss, process.num_fds()))


def _settled_fds(pid: int, upstream_port: int) -> tuple[int, int]:
    """(descriptors other than upstream connections, idle upstream connections) once the
    clients are gone. Idle keep-alive connections to the upstream are the pool's to keep
    (up to `pool_size`'s 32 here) until the upstream closes them (the simulator after 5 s);
    everything else must be back to where it started."""
    time.sleep(7.0)
    process = psutil.Process(pid)
    upstream = sum(
        1
        for conn in process.net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == upstream_port
    )
    return process.num_fds() - upstream, upstream


def test_soak(sim: Service, output_dir: Path, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "policy.yaml", [upstream_entry("sim", sim.url, max_concurrency=4)], LANES
    )
    gateway = start_gateway(
        "gw-soak",
        policy,
        output_dir,
        state=tmp_path / "state",
        env={"LANEGATE_ACCESS_LOG": "false"},
    )
    pid = gateway.process.pid
    total_s = MINUTES * 60
    warmup_s = total_s / 4
    statuses: dict[str, int] = {}
    stop = threading.Event()
    samples: list[tuple[float, int, int]] = []
    try:
        asyncio.run(_load(gateway.url, min(30.0, warmup_s), statuses))  # pools fill up
        fds_start, pool_start = _settled_fds(pid, sim.port)
        sampler = threading.Thread(target=_sampler, args=(pid, stop, samples))
        sampler.start()
        asyncio.run(_load(gateway.url, total_s, statuses))
        stop.set()
        sampler.join()
        fds_end, pool_end = _settled_fds(pid, sim.port)
        assert gateway.process.poll() is None
        log = gateway.log()
    finally:
        stop.set()
        gateway.stop()
    unintended = {k: v for k, v in statuses.items() if int(k.split(":")[1]) not in INTENDED}
    unintended.pop("leaver:499", None)
    assert not unintended, unintended
    assert "unexpected error" not in log and "Traceback" not in log
    window = [(t, rss) for t, rss, _ in samples if t >= warmup_s]
    assert len(window) >= 5, samples
    slope, _ = statistics.linear_regression([t for t, _ in window], [r for _, r in window])
    growth = slope * (window[-1][0] - window[0][0])
    record_figures(
        "soak",
        {
            "minutes": MINUTES,
            "requests": statuses,
            "rss_mib_first": round(samples[0][1] / MiB, 2),
            "rss_mib_last": round(samples[-1][1] / MiB, 2),
            "rss_mib_max": round(max(r for _, r, _ in samples) / MiB, 2),
            "rss_growth_mib_over_window": round(growth / MiB, 3),
            "window_minutes": round((window[-1][0] - window[0][0]) / 60, 2),
            "fds_start": fds_start,
            "fds_end": fds_end,
            "idle_upstream_connections_start": pool_start,
            "idle_upstream_connections_end": pool_end,
            "fds_max_under_load": max(f for _, _, f in samples),
        },
    )
    assert growth <= GROWTH_LIMIT, f"RSS grew {growth / MiB:.2f} MiB after warm-up"
    assert fds_end <= fds_start, (fds_start, fds_end)
    assert pool_end <= 32  # the pool's bound on idle connections (upstream_client.pool_size)
