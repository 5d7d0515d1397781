"""`/metrics` through real HTTP: the openai SDK → `lanegate serve` → `lanegate simulate`.

Known traffic (streamed, non-streamed, refused) must show up as exact counter and histogram
counts; state gauges must read the gateway's live state; many request ids, clients and model
names must not create new series; the Grafana dashboard may only use metrics that exist.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway import __version__
from gateway.app import create_app
from gateway.lanes.budgets import Refusal
from gateway.observe.metrics import exposition
from gateway.policy.loader import load_policy_text
from gateway.settings import Settings
from gateway.upstreams.circuit_breaker import Outcome
from tests.support.clients import OpenAIClients
from tests.support.processes import REPO, Service

MSGS = [{"role": "user", "content": "Say hello to the team"}]
ADMIN = "metrics-admin-secret"
DASHBOARD = REPO / "deploy" / "grafana" / "lanegate.json"


# The same simulator twice: "far" is the remote pool that offload would use.
GATEWAY_POLICY = """
version: 1
upstreams:
  - {name: sim, kind: ollama, base_url: '{url}', max_concurrency: 4,
      signals_url: '{url}/sim/signals'}
  - {name: far, kind: ollama, pool: remote, base_url: '{url}', max_concurrency: 2}
admin_key: env:T_METRICS_ADMIN
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4, max_queue: 20}
  - {name: small, priority: 10, max_concurrency: 1, tokens_per_day: 50, default_max_tokens: 8}
classify: {default_lane: interactive, anonymous_lanes: [interactive, small]}
models: {"llama3.2:1b": {sim: "llama3.2:1b"}}
offload: {sample_interval: 0.25, p95_ratio: 1000, swap_growth_gb: 1000, sustain: 3600,
           min_samples: 100000}
"""
GATEWAY_ENV = {"T_METRICS_ADMIN": ADMIN}


def scrape(gateway: Service) -> list[Sample]:
    response = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sample with exactly these labels (le aside), 0 if absent (a series not yet born)."""
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels)
    return found[0] if found else 0.0


def series(samples: list[Sample], name: str) -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name == name]


def test_known_traffic_counts_exactly(gateway: Service, openai_client: OpenAIClients) -> None:
    before = scrape(gateway)
    client = openai_client(gateway)
    prompt = completion = events_after_first = 0
    for _ in range(5):
        stream = client.chat.completions.create(
            model="llama3.2:1b",
            messages=MSGS,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        first = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
        events_after_first += len(chunks) - first  # the rest, and [DONE]
        usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
        prompt += usage[0].prompt_tokens
        completion += usage[0].completion_tokens
    for _ in range(3):
        reply = client.chat.completions.create(model="qwen2.5:0.5b", messages=MSGS, max_tokens=4)
        assert reply.usage is not None
        prompt += reply.usage.prompt_tokens
        completion += reply.usage.completion_tokens
    small = openai_client(gateway, **{"x-lane": "small"})
    for _ in range(2):  # 100 tokens can never fit a 50-token daily budget
        with pytest.raises(openai.BadRequestError) as caught:
            small.chat.completions.create(model="llama3.2:1b", messages=MSGS, max_tokens=100)
        assert caught.value.code == "token_budget"
    after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"lane": "interactive", "upstream": "sim", "status_class": "2xx"}
    # The policy names llama3.2:1b; the simulator lists only sim-fast: qwen is `other`.
    assert delta("lanegate_requests_total", **ok, model="llama3.2:1b") == 5
    assert delta("lanegate_requests_total", **ok, model="other") == 3
    refused = {"lane": "small", "upstream": "-", "model": "llama3.2:1b", "status_class": "4xx"}
    assert delta("lanegate_requests_total", **refused) == 2
    assert delta("lanegate_rejections_total", lane="small", reason="token_budget") == 2
    pair = {"lane": "interactive", "upstream": "sim"}
    assert delta("lanegate_ttft_seconds_count", **pair) == 5  # non-streamed bodies have none
    assert delta("lanegate_request_duration_seconds_count", **pair) == 8
    assert delta("lanegate_request_duration_seconds_count", lane="small", upstream="-") == 0
    assert delta("lanegate_queue_wait_seconds_count", lane="interactive") == 8
    assert delta("lanegate_tokens_total", **pair, kind="prompt") == prompt
    assert delta("lanegate_tokens_total", **pair, kind="completion") == completion
    # No clients in this policy: every token is the anonymous caller's ("-").
    assert delta("lanegate_client_tokens_total", client="-", kind="prompt") == prompt
    assert delta("lanegate_client_tokens_total", client="-", kind="completion") == completion
    # Each stream has gaps after its first output, at most one per later event (reads may
    # coalesce events, never split these small ones); their sum fits in the time between
    # first output and the end of the response.
    gaps = delta("lanegate_inter_chunk_gap_seconds_count", **pair)
    assert 5 <= gaps <= events_after_first
    gap_sum = delta("lanegate_inter_chunk_gap_seconds_sum", **pair)
    duration_sum = delta("lanegate_request_duration_seconds_sum", **pair)
    ttft_sum = delta("lanegate_ttft_seconds_sum", **pair)
    assert 0 < gap_sum <= duration_sum - ttft_sum
    for name in ("lanegate_ttft_seconds", "lanegate_inter_chunk_gap_seconds"):
        _check_buckets(after, name, pair)


def _check_buckets(samples: list[Sample], name: str, labels: dict[str, str]) -> None:
    """Cumulative, non-decreasing, +Inf equal to _count."""
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in samples
        if s.name == f"{name}_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    ]
    assert buckets == sorted(buckets)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert buckets[-1] == (float("inf"), value(samples, f"{name}_count", **labels))


def test_state_gauges(gateway: Service) -> None:
    samples = scrape(gateway)
    assert value(samples, "lanegate_lane_capacity", lane="interactive") == 4
    assert value(samples, "lanegate_lane_capacity", lane="small") == 1
    for lane in ("interactive", "small"):
        assert value(samples, "lanegate_lane_in_flight", lane=lane) == 0
        assert value(samples, "lanegate_queue_depth", lane=lane) == 0
    assert value(samples, "lanegate_budget_remaining_tokens", lane="small", window="day") == 50
    budgets = series(samples, "lanegate_budget_remaining_tokens")
    assert budgets == [{"lane": "small", "window": "day"}]
    for upstream in ("sim", "far"):
        assert value(samples, "lanegate_upstream_in_flight", upstream=upstream) == 0
        assert value(samples, "lanegate_upstream_up", upstream=upstream) == 1
        states = {
            s.labels["state"]: s.value
            for s in samples
            if s.name == "lanegate_upstream_breaker_state" and s.labels["upstream"] == upstream
        }
        assert states == {"closed": 1, "open": 0, "half_open": 0}
    assert value(samples, "lanegate_host_swap_used_bytes") == 0  # an idle simulator
    assert value(samples, "lanegate_host_memory_pressure", level="normal") == 1
    assert sum(s.value for s in samples if s.name == "lanegate_host_memory_pressure") == 1
    assert value(samples, "lanegate_policy_version") == 1
    assert value(samples, "lanegate_config_last_reload_successful") == 1
    loaded = value(samples, "lanegate_config_last_reload_success_timestamp_seconds")
    assert 0 < time.time() - loaded < 3600
    (build,) = [s for s in samples if s.name == "lanegate_build_info"]
    assert build.value == 1 and build.labels == {
        "version": __version__,
        "python": platform.python_version(),
    }
    # psutil's figures, on macOS as on Linux, for the gateway's own process.
    assert value(samples, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_start_time_seconds") <= time.time()
    assert value(samples, "process_open_fds") > 0


def test_offload_state_and_transitions(gateway: Service) -> None:
    before = scrape(gateway)
    assert value(before, "lanegate_offload_state", state="local") == 1
    headers = {"authorization": f"Bearer {ADMIN}"}
    for mode, state in (("force-offload", "offloading"), ("force-local", "local")):
        answer = httpx.post(
            f"{gateway.url}/admin/offload", json={"mode": mode}, headers=headers, timeout=10
        )
        assert answer.json()["state"] == state
        now = scrape(gateway)
        assert value(now, "lanegate_offload_state", state=state) == 1
        assert sum(s.value for s in now if s.name == "lanegate_offload_state") == 1
    transitions = value(now, "lanegate_offload_transitions_total")
    assert transitions - value(before, "lanegate_offload_transitions_total") == 2


def test_labels_stay_bounded(gateway: Service, openai_client: OpenAIClients) -> None:
    """60 requests, each with its own request id, client key and model name, add no label
    value beyond the bounded sets."""
    for i in range(60):
        model = f"z{chr(97 + i // 26)}{chr(97 + i % 26)}:1b"  # families "zaa", "zab", ...
        client = openai_client(gateway, key=f"client-key-{i}", **{"x-request-id": f"req-{i}"})
        client.chat.completions.create(model=model, messages=MSGS, max_tokens=1)
    samples = scrape(gateway)
    text = "\n".join(f"{s.name}{s.labels}" for s in samples)
    assert "req-" not in text and "client-key" not in text
    assert not re.search(r"z[a-z]{2}:1b", text)  # names nobody knows are `other`
    models = {s.labels["model"] for s in samples if "model" in s.labels}
    assert models <= {"llama3.2:1b", "sim-fast", "other", "-"}  # the policy's, sim's, other
    lanes = {s.labels["lane"] for s in samples if "lane" in s.labels}
    assert lanes <= {"interactive", "small", "-"}
    upstreams = {s.labels["upstream"] for s in samples if "upstream" in s.labels}
    assert upstreams <= {"sim", "far", "-"}
    for name in ("lanegate_requests_total", "lanegate_ttft_seconds_bucket"):
        assert len(series(samples, name)) < 200


async def test_gauges_read_live_state(tmp_path: Path) -> None:
    """In process, no server: the gauges follow the gateway's objects at each scrape, and
    host/offload families are absent without an `offload:` section."""
    policy = load_policy_text(
        "version: 1\nupstreams:\n  - {name: a, kind: ollama, base_url: 'http://127.0.0.1:9'}\n"
        "lanes:\n  - {name: chat, priority: 10, max_concurrency: 2, tokens_per_minute: 900}\n"
        "classify: {default_lane: chat, anonymous_lanes: [chat]}\n",
        "inline.yaml",
    )
    gw = create_app(policy, Settings(state_dir=tmp_path))

    def now() -> list[Sample]:
        text = exposition(gw.metrics).decode()
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    ticket = await gw.runtime.gate.acquire(policy.lane("chat"), None)
    reservation = gw.budgets.reserve(policy.lane("chat"), None, 300)
    assert reservation is not None and not isinstance(reservation, Refusal)
    breaker = gw.router.breaker("a")
    for _ in range(breaker.config.failures_to_open):
        breaker.record(Outcome.FAILURE, gw.clock(), "refused")
    gw.swap(dataclasses.replace(gw.runtime, version=3))
    gw.reloader.last_error = "policy.yaml:4: lanes.0.priority: not an integer"
    samples = now()
    assert value(samples, "lanegate_lane_in_flight", lane="chat") == 1
    assert value(samples, "lanegate_budget_remaining_tokens", lane="chat", window="minute") == 600
    assert value(samples, "lanegate_upstream_breaker_state", upstream="a", state="open") == 1
    assert value(samples, "lanegate_upstream_up", upstream="a") == 0
    assert value(samples, "lanegate_policy_version") == 3
    assert value(samples, "lanegate_config_last_reload_successful") == 0
    # Host signals are always sampled (not yet here: unknown); offload is not configured.
    assert value(samples, "lanegate_host_memory_pressure", level="unknown") == 1
    assert not [s for s in samples if s.name.startswith("lanegate_offload")]
    ticket.release()
    gw.budgets.release(reservation)
    samples = now()
    assert value(samples, "lanegate_lane_in_flight", lane="chat") == 0
    assert value(samples, "lanegate_budget_remaining_tokens", lane="chat", window="minute") == 900
    await gw.budgets.stop()  # closes its SQLite file


def test_dashboard_uses_only_exported_metrics(gateway: Service) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert any(v["name"] == "DS_PROMETHEUS" for v in dashboard["templating"]["list"])
    exported = _exported_names(gateway)
    exprs = [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 12
    panels = list(_panels(dashboard["panels"]))
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    used = {name for expr in exprs for name in re.findall(r"\b(?:lanegate|process)_[a-z_]+", expr)}
    assert used, "the dashboard queries no lanegate metric"
    assert used <= exported, used - exported
    # Several gateways, several upstreams: every query follows the instance picked, and the
    # upstream panels the upstream picked.
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert {"instance", "upstream", "lane"} <= set(names)
    for expr in exprs:
        for name, matchers in re.findall(r"\b((?:lanegate|process)_[a-z_]+)\{([^}]*)\}", expr):
            assert 'instance=~"$instance"' in matchers, expr
            if name.startswith("lanegate_upstream_"):
                assert 'upstream=~"$upstream"' in matchers, expr
        assert not re.search(r"\b(?:lanegate|process)_[a-z_]+(?![a-z_{])", expr), expr


def _exported_names(gateway: Service) -> set[str]:
    """Every sample name /metrics can show, also for families with no series yet."""
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def _panels(panels: list[dict[str, object]]) -> Iterator[dict[str, object]]:
    for panel in panels:
        yield panel
        nested = panel.get("panels")
        if isinstance(nested, list):
            yield from _panels(nested)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="`make system-deps` installs promtool")
def test_metrics_page_passes_promtool_check_metrics(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    client = openai_client(gateway)
    client.chat.completions.create(model="llama3.2:1b", messages=MSGS, max_tokens=2)
    for chunk in client.chat.completions.create(
        model="sim-fast", messages=MSGS, max_tokens=3, stream=True
    ):
        assert chunk.id
    page = httpx.get(f"{gateway.url}/metrics", timeout=10)
    assert "lanegate_ttft_seconds_bucket{" in page.text  # histograms with series, not empty
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=page.text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
