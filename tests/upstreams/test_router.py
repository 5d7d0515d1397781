"""Two upstreams in one pool: a dead one is skipped (retried before the first byte, then its
breaker opens), and a stream that already started is never retried elsewhere."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.clients import OpenAIClients
from tests.support.processes import FAST_SIM, Service, start_gateway, start_simulator

MSGS = [{"role": "user", "content": "hello"}]
Pair = tuple[Service, Service, Service]  # upstream a, upstream b, the gateway in front


def _sim(name: str, output_dir: Path) -> Service:
    return start_simulator(name, output_dir, *FAST_SIM, "--chunk-interval-ms", "20")


def _received(sim: Service) -> int:
    return int(httpx.get(f"{sim.url}/sim/stats").json()["received"])


@pytest.fixture
def pair(output_dir: Path, tmp_path: Path) -> Iterator[Pair]:
    first, second = _sim("sim-a", output_dir), _sim("sim-b", output_dir)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "upstreams:\n"
        f"  - {{name: a, kind: ollama, base_url: '{first.url}', timeouts: {{connect: 1}}}}\n"
        f"  - {{name: b, kind: ollama, base_url: '{second.url}', timeouts: {{connect: 1}}}}\n"
    )
    gateway = start_gateway("gw-failover", policy, output_dir)
    yield first, second, gateway
    for service in (gateway, second, first):
        service.stop()


def test_dead_upstream_is_skipped_and_its_breaker_opens(
    pair: Pair, openai_client: OpenAIClients
) -> None:
    first, second, gateway = pair
    client = openai_client(gateway, "x")
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MSGS, max_tokens=2)
    assert raw.headers["x-lanegate-upstream"] == "a"  # policy order when both are idle
    first.stop(signal.SIGKILL)
    for _ in range(10):
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=MSGS, max_tokens=2
        )
        assert raw.headers["x-lanegate-upstream"] == "b"  # no client saw the failure
    assert _received(second) == 10
    retries = gateway.log().count("failed before the first byte")
    assert 1 <= retries <= 5  # after 5 consecutive failures the breaker stops trying `a`


def test_stream_that_started_is_not_retried(pair: Pair, openai_client: OpenAIClients) -> None:
    first, second, gateway = pair
    client = openai_client(gateway, "x")
    stream = client.chat.completions.create(model="m", messages=MSGS, max_tokens=50, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for index, _ in enumerate(stream):
            if index == 2:
                first.stop(signal.SIGKILL)
    assert "upstream a" in str(caught.value)
    assert _received(second) == 0  # the started stream was not replayed on `b`


def test_all_dead_gives_502_then_503_with_retry_after(pair: Pair) -> None:
    first, second, gateway = pair
    first.stop(signal.SIGKILL)
    second.stop(signal.SIGKILL)
    body = {"model": "m", "messages": MSGS, "max_tokens": 2}
    statuses = []
    for _ in range(6):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)
        statuses.append(response.status_code)
    # Each tried `a`, then `b` (one 502 for both), until both breakers opened (5 failures
    # each; a discovery probe of a dead upstream counts one too, so it may come sooner):
    # from then on refused at once.
    assert 503 in statuses, statuses
    opened = statuses.index(503)
    assert 1 <= opened <= 5 and statuses[:opened] == [502] * opened, statuses
    assert statuses[opened:] == [503] * (len(statuses) - opened), statuses
    assert response.json()["error"]["code"] == "no_upstream"
    assert 1 <= int(response.headers["retry-after"]) <= 120
