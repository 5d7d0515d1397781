"""`GET /admin/status` and `lanegate status` against a real gateway in front of a real
simulator, and the status table rendered from a sample document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.app import create_app
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.status import build_status
from gateway.policy.loader import load_policy_text
from gateway.settings import Settings
from tests.support.clients import OpenAIClients
from tests.support.processes import REPO, Service, free_port
from tests.support.threads import Worker, check_all

ADMIN_KEY = "status-admin-key"
CLIENT_KEY = "status-client-key"
MODEL = "llama3.1:8b"
SIM_TTFT_MS = 100
ENV = {"T_STATUS_ADMIN": ADMIN_KEY, "T_STATUS_CLIENT": CLIENT_KEY}


SIM_ARGS = ("--profile", "fast", "--ttft-ms", str(SIM_TTFT_MS), "--chunk-interval-ms", "20")
GATEWAY_POLICY = """
upstreams:
  - {name: sim, kind: ollama, base_url: '{url}', max_concurrency: 4,
      signals_url: '{url}/sim/signals'}
admin_key: env:T_STATUS_ADMIN
clients:
  - {name: app, key: env:T_STATUS_CLIENT, lanes: [interactive, batch]}
lanes:
  - {name: interactive, priority: 100, max_concurrency: 3, tokens_per_minute: 1000000}
  - {name: batch, priority: 10, max_concurrency: 1, queue_timeout: 60}
classify: {default_lane: interactive}
"""
GATEWAY_ENV = ENV


def status(gateway: Service, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gateway.url}/admin/status", headers=headers, timeout=10)


def doc(gateway: Service) -> dict[str, Any]:
    response = status(gateway)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def lane(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in document["lanes"] if item["name"] == name)


def chat(oa: openai.OpenAI, lane_name: str = "interactive") -> str:
    stream = oa.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        stream=True,
        extra_headers={"X-Lane": lane_name},
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


# -- authentication ---------------------------------------------------------------------------


def test_status_needs_the_admin_key(gateway: Service) -> None:
    missing = status(gateway, None)
    assert missing.status_code == 401
    assert "admin key" in missing.json()["error"]["message"]
    wrong = status(gateway, "not-the-key")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    as_client = status(gateway, CLIENT_KEY)
    assert as_client.status_code == 403
    assert as_client.json()["error"]["code"] == "admin_only"


# -- what traffic does to the document --------------------------------------------------------


def test_status_reports_traffic_per_lane_and_upstream(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    before = doc(gateway)
    oa = openai_client(gateway, CLIENT_KEY)
    requests = 6
    for _ in range(requests):
        assert chat(oa)
    after = doc(gateway)

    interactive, old = lane(after, "interactive"), lane(before, "interactive")
    assert interactive["requests"]["1m"] - old["requests"]["1m"] == requests
    for window in ("1m", "5m", "15m"):
        ttft = interactive["ttft"][window]
        assert ttft["count"] - old["ttft"][window]["count"] == requests
        # The simulator waits SIM_TTFT_MS before its first token; 1% histogram error.
        assert ttft["p50_ms"] >= SIM_TTFT_MS * 0.99
        assert ttft["p50_ms"] <= ttft["p95_ms"] <= ttft["p99_ms"]
        assert interactive["gap_p95"][window]["p95_ms"] > 0
    assert interactive["in_flight"] == 0
    assert interactive["queued"] == 0
    assert interactive["max_concurrency"] == 3
    (minute,) = interactive["budget"]
    assert minute["window"] == "minute"
    assert minute["limit"] == 1_000_000
    used_before = old["budget"][0]["used"] if old["budget"][0]["window"] == "minute" else 0
    assert minute["used"] > used_before

    (sim,) = after["upstreams"]
    assert sim["name"] == "sim"
    assert sim["healthy"] is True
    assert sim["in_flight"] == 0
    assert sim["breaker"]["state"] == "closed"
    assert "sim-fast" in sim["models"]
    assert sim["ttft"]["1m"]["count"] >= requests
    assert (
        lane(after, "batch")["ttft"]["1m"]["count"] == lane(before, "batch")["ttft"]["1m"]["count"]
    )


def test_status_has_host_signals_without_an_offload_section(gateway: Service) -> None:
    document = doc(gateway)
    host = document["host"]
    assert host["source"] == "simulator"
    assert host["pressure"] in ("normal", "warn", "critical")
    assert isinstance(host["swap_total_bytes"], int)
    assert isinstance(host["memory_total_bytes"], int)
    assert host["sampled_at"] is not None
    assert host["error"] is None
    assert document["offload"]["configured"] is False
    assert document["policy"]["version"] == 1
    assert document["policy"]["reload_error"] is None
    assert document["policy"]["source"].endswith("policy.yaml")
    assert document["generated_at"] >= document["policy"]["loaded_at"]


def test_status_shows_in_flight_and_queue_of_a_lane(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    """Batch has one slot: three concurrent batch requests show 1 in flight and a queue."""
    oa = openai_client(gateway, CLIENT_KEY)
    start = lane(doc(gateway), "batch")["requests"]["1m"]
    workers = [Worker(lambda: chat(oa, "batch"), name=f"batch-{i}") for i in range(3)]
    for worker in workers:
        worker.start()
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 30
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        batch = lane(doc(gateway), "batch")
        seen.append((batch["in_flight"], batch["queued"]))
        time.sleep(0.02)
    check_all(workers, 30)
    assert all(in_flight <= 1 for in_flight, _ in seen), seen
    assert any(in_flight == 1 and queued >= 1 for in_flight, queued in seen), seen
    final = lane(doc(gateway), "batch")
    assert (final["in_flight"], final["queued"]) == (0, 0)
    assert final["requests"]["1m"] - start == 3


# -- the command line -------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "LANEGATE_ADMIN_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "status", *args],
        cwd=REPO,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_prints_tables_and_json(gateway: Service, openai_client: OpenAIClients) -> None:
    assert chat(openai_client(gateway, CLIENT_KEY))
    shown = run_cli("--url", gateway.url, env={"LANEGATE_ADMIN_KEY": ADMIN_KEY})
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    row = next(line for line in lines if line.startswith("interactive "))
    assert "/3" in row.split()[1]  # in flight / cap
    assert any(line.startswith("UPSTREAM") for line in lines)
    assert any(line.startswith("sim ") and " ok " in line for line in lines)
    assert any(line.startswith("host (simulator): pressure") for line in lines)

    as_json = run_cli("--url", gateway.url, "--admin-key", ADMIN_KEY, "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert [item["name"] for item in document["lanes"]] == ["interactive", "batch"]


def test_cli_says_why_it_failed(gateway: Service) -> None:
    refused = run_cli("--url", gateway.url, "--admin-key", "wrong")
    assert refused.returncode == 1
    assert "401" in refused.stderr and "admin key is not valid" in refused.stderr
    no_key = run_cli("--url", gateway.url)
    assert no_key.returncode == 1
    assert "LANEGATE_ADMIN_KEY" in no_key.stderr
    nobody = f"http://127.0.0.1:{free_port()}"  # a port just freed: nothing listens there
    unreachable = run_cli("--url", nobody, "--admin-key", ADMIN_KEY)
    assert unreachable.returncode == 1
    assert "cannot reach the gateway" in unreachable.stderr


# -- the document, built in process --------------------------------------------------------


async def test_totals_add_up_across_pools_and_trends_span_15_minutes(tmp_path: Path) -> None:
    """In process: a request holding a local slot and one holding a remote slot are both in
    the header's count, which the lanes add up to; recorded waits land in their 10 s slice."""
    policy = load_policy_text(
        "version: 1\nupstreams:\n"
        "  - {name: mini, kind: ollama, base_url: 'http://127.0.0.1:9', max_concurrency: 4}\n"
        "  - {name: m4, kind: ollama, pool: remote, base_url: 'http://127.0.0.1:9',"
        " max_concurrency: 2}\n"
        "offload: {}\nlanes:\n  - {name: chat, priority: 100, max_concurrency: 2}\n"
        "  - {name: batch, priority: 10, max_concurrency: 2, offloadable: true}\n"
        "classify: {default_lane: chat}\n",
        "inline.yaml",
    )
    gw = create_app(policy, Settings(state_dir=tmp_path))
    assert gw.runtime.remote_gate is not None
    local = await gw.runtime.gate.acquire(policy.lane("chat"), None)
    remote = await gw.runtime.remote_gate.acquire(policy.lane("batch"), None)
    now = gw.clock()
    record = RequestRecord(None, None, None, 1.5, None, None, False, 0, 200, None)
    for queue_s in (0.2, 0.4):
        labels = RequestLabels(
            "r", "POST", "/v1/chat/completions", "batch", "m4", "m", queue_s=queue_s
        )
        gw.recorder.record(labels, record, now)
    try:
        doc = build_status(gw, wall_now=1000.0)
    finally:
        local.release()
        remote.release()
        await gw.budgets.stop()
    assert doc["totals"] == {
        "in_flight": 2,
        "queued": 0,
        "local": {"in_flight": 1, "capacity": 4},
        "remote": {"in_flight": 1, "capacity": 2},
    }
    assert sum(lane["in_flight"] for lane in doc["lanes"]) == doc["totals"]["in_flight"]
    assert (doc["capacity"], doc["in_flight"]) == (4, 1)  # the local pool, as before
    batch = next(lane for lane in doc["lanes"] if lane["name"] == "batch")
    assert batch["queue_wait"]["1m"]["count"] == 2 and batch["queue_wait"]["1m"]["p95_ms"] == 400
    assert batch["duration"]["1m"]["p95_ms"] == 1500
    trends = doc["history"]["lanes"]["batch"]
    assert doc["history"]["slice_s"] == 10 and len(trends["queue_wait_p95_ms"]) == 90
    assert (
        trends["queue_wait_p95_ms"][-1] == 400 and trends["queue_wait_p95_ms"][:-1] == [None] * 89
    )
    assert trends["ttft_p95_ms"] == [None] * 90  # not streamed: no TTFT, ever
