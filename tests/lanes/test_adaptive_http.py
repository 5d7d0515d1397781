"""Adaptive limits seen from outside: a real gateway in front of the simulator, a policy that
names only the upstream's slots and the lanes' priorities, the openai SDK as the client.

A chat's arrival puts batch's protective limit in force at once; /admin/status, /metrics and
the log show the limit per lane and upstream and why it changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import OpenAIClients
from tests.support.processes import Service, start_lanegate

ADMIN = "adaptive-admin-key"
MODEL = "llama3.1:8b"


@pytest.fixture(scope="module")
def sim(output_dir: Path) -> Iterator[Service]:
    args = ["simulate", "--profile", "fast", "--ttft-ms", "20", "--chunk-interval-ms", "5"]
    service = start_lanegate("sim-adaptive", args, ready_path="/health", log_dir=output_dir)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def gateway(
    sim: Service, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    policy = tmp_path_factory.mktemp("adaptive") / "policy.yaml"
    # Priorities only; a pinned, generous baseline so that no chat here counts as slow.
    policy.write_text(f"""
upstreams:
  - {{name: sim, kind: ollama, base_url: '{sim.url}', max_concurrency: 4}}
admin_key: env:T_ADAPTIVE_ADMIN
lanes:
  - {{name: interactive, priority: 100}}
  - {{name: batch, priority: 10}}
classify: {{default_lane: interactive, anonymous_lanes: [interactive, batch]}}
slo: {{baseline_ttft: 10, chat_idle: 3600}}
""")
    service = start_lanegate(
        "gw-adaptive",
        ["serve", "--policy", str(policy), "--host", "127.0.0.1"],
        ready_path="/healthz",
        log_dir=output_dir,
        env={"T_ADAPTIVE_ADMIN": ADMIN},
    )
    yield service
    service.stop()


def _status(gateway: Service) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    response = httpx.get(f"{gateway.url}/admin/status", headers=headers, timeout=10)
    assert response.status_code == 200
    doc: dict[str, object] = response.json()
    return doc


def _gauge(
    gateway: Service, lane: str | None, name: str = "lanegate_lane_adaptive_limit"
) -> float | None:
    labels = {"upstream": "sim"} if lane is None else {"lane": lane, "upstream": "sim"}
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _batch_limit(doc: dict[str, object]) -> object:
    lanes = doc["lanes"]
    assert isinstance(lanes, list)
    return next(lane["adaptive_limit"] for lane in lanes if lane["name"] == "batch")


def test_a_chat_puts_the_protective_limit_in_force_visibly(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    before = _status(gateway)
    assert _batch_limit(before) == 4  # no chat yet: batch may use every slot
    assert _gauge(gateway, "batch") == 4
    adaptive = before["adaptive"]
    assert isinstance(adaptive, dict) and adaptive["enabled"]
    assert adaptive["protected_lanes"] == ["interactive"]

    client = openai_client(gateway)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=4
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    after = _status(gateway)
    assert _batch_limit(after) == 2  # halfway, before anything was learned
    assert _gauge(gateway, "batch") == 2
    adaptive = after["adaptive"]
    assert isinstance(adaptive, dict)
    (upstream,) = adaptive["upstreams"]
    assert upstream["chat_active"] and upstream["baseline_source"] == "pinned"
    assert "chat arrived after idle" in upstream["reason"]
    assert "adaptive limit: lane batch on sim 4 -> 2: chat arrived after idle" in gateway.log()
    assert upstream["engine_floor_ratio"] is None and upstream["effective_target_ratio"] == 1.3
    assert _gauge(gateway, None, "lanegate_adaptive_effective_target_ratio") == 1.3
    assert _gauge(gateway, None, "lanegate_adaptive_engine_floor_ratio") is None  # not learned
    # An interactive lane is never limited by it.
    lanes = after["lanes"]
    assert isinstance(lanes, list)
    assert next(lane for lane in lanes if lane["name"] == "interactive")["adaptive_limit"] is None


def test_chats_beside_batch_teach_the_engine_floor_visibly(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    """One batch stream kept open while chats run: the engine's floor is learned from them and
    shown; far below this pinned, generous baseline, so the target stays the SLO."""
    client = openai_client(gateway)
    batch = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "a long job"}],
        stream=True,
        max_tokens=4000,
        extra_headers={"X-Lane": "batch"},
    )
    next(iter(batch))  # it runs: one lower-lane request in flight
    for turn in range(10):
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"hi {turn}"}],
            stream=True,
            max_tokens=4,
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    batch.close()
    adaptive = _status(gateway)["adaptive"]
    assert isinstance(adaptive, dict)
    (upstream,) = adaptive["upstreams"]
    assert upstream["engine_floor_ratio"] is not None and upstream["engine_floor_ratio"] < 1
    assert upstream["effective_target_ratio"] == 1.3
    floor = _gauge(gateway, None, "lanegate_adaptive_engine_floor_ratio")
    assert floor is not None and floor == upstream["engine_floor_ratio"]
