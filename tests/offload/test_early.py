"""Early offload: the pure decision, and end to end (two simulators, a real gateway): while a
chat is active and batch is at its adaptive limit, the next batch request goes to the idle
remote pool at once, with no sustained breach; with no chat, batch stays local."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from gateway.offload.early import EarlyView, go_remote_early
from tests.support.metrics import metric
from tests.support.processes import start_lanegate

GO = EarlyView(
    offloadable=True,
    held_back=True,
    remote_free=2,
    remote_healthy=True,
    remote_ttft_s=0.05,
    local_ttft_s=0.08,
)


def test_goes_remote_only_when_every_condition_holds() -> None:
    assert go_remote_early(GO)[0]
    assert go_remote_early(replace(GO, remote_ttft_s=None))[0]  # not measured yet: try it


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"offloadable": False}, "not offloadable"),
        ({"held_back": False}, "local limit has room"),
        ({"remote_free": 0}, "unhealthy or full"),
        ({"remote_healthy": False}, "unhealthy or full"),
        ({"remote_ttft_s": 0.2}, "not better than local"),
        ({"local_ttft_s": None}, "not better than local"),
    ],
)
def test_stays_local_and_says_why(change: dict[str, object], why: str) -> None:
    go, reason = go_remote_early(replace(GO, **change))  # type: ignore[arg-type]
    assert not go and why in reason


def test_batch_goes_remote_at_once_beside_an_active_chat(output_dir: Path, tmp_path: Path) -> None:
    sim_args = ["simulate", "--profile", "fast", "--ttft-ms", "20", "--chunk-interval-ms", "40"]
    local = start_lanegate("sim-early-local", sim_args, ready_path="/health", log_dir=output_dir)
    remote = start_lanegate("sim-early-remote", sim_args, ready_path="/health", log_dir=output_dir)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
upstreams:
  - {{name: mini, kind: ollama, base_url: '{local.url}', max_concurrency: 4}}
  - {{name: m4, kind: ollama, pool: remote, base_url: '{remote.url}', max_concurrency: 4}}
lanes:
  - {{name: interactive, priority: 100}}
  - {{name: batch, priority: 10, offloadable: true, queue_timeout: 60}}
classify: {{default_lane: interactive, anonymous_lanes: [interactive, batch]}}
offload: {{p95_ratio: 1000, swap_growth_gb: 1000, sustain: 3600, sample_interval: 0.25,
           min_samples: 100000}}
slo: {{baseline_ttft: 10, chat_idle: 3600}}
""")
    gateway = start_lanegate(
        "gw-early",
        ["serve", "--policy", str(policy), "--host", "127.0.0.1"],
        ready_path="/healthz",
        log_dir=output_dir,
    )
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}
    batch = {**body, "stream": False, "max_tokens": 60}
    started = threading.Event()

    def chat() -> None:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            chat_body = {**body, "stream": True, "max_tokens": 150}
            with http.stream("POST", "/v1/chat/completions", json=chat_body) as response:
                for _ in response.iter_bytes():
                    started.set()

    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            alone = http.post("/v1/chat/completions", json=batch, headers={"x-lane": "batch"})
            assert alone.headers["x-lanegate-upstream"] == "mini"  # no chat: batch stays local
            talker = threading.Thread(target=chat)
            talker.start()
            assert started.wait(30)  # the chat is running: batch's limit is 2 of 4
            fillers = [
                threading.Thread(
                    target=lambda: http.post(
                        "/v1/chat/completions", json=batch, headers={"x-lane": "batch"}
                    )
                )
                for _ in range(2)
            ]
            for filler in fillers:
                filler.start()
            deadline = time.monotonic() + 30
            while _batch_in_flight(gateway.url) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            third = http.post("/v1/chat/completions", json=batch, headers={"x-lane": "batch"})
            assert third.status_code == 200
            assert third.headers["x-lanegate-upstream"] == "m4"
            for filler in [*fillers, talker]:
                filler.join(60)
        assert "offload: early, lane batch goes remote" in gateway.log()
        assert metric(gateway.url, "lanegate_offload_early_total", {"lane": "batch"}) >= 1
    finally:
        gateway.stop()
        remote.stop()
        local.stop()


def _batch_in_flight(url: str) -> float:
    return metric(url, "lanegate_lane_in_flight", {"lane": "batch"})
