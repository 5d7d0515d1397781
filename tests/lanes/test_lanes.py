"""Lanes through real HTTP: the openai SDK → `lanegate serve` → `lanegate simulate`.

Classification per rule, X-Lane misuse, 429s with an honest Retry-After, heartbeat model
rewrite seen by the upstream, and budget spend surviving a gateway restart.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from gateway.serving.keys import hash_key
from tests.support.clients import OpenAIClients
from tests.support.policies import policy_text, upstream_entry, write_policy
from tests.support.processes import Service, start_gateway

MSGS = [{"role": "user", "content": "Say hello to the team"}]
ALICE, BOB = "lg-alice-key-0123456789", "lg-bob-key-9876543210"

LANES = """
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 1, max_queue: 20}
  - {name: batch, priority: 10, max_concurrency: 1, max_queue: 1, queue_timeout: 1}
  - name: heartbeat
    priority: 50
    max_concurrency: 1
    tokens_per_day: 400
    default_max_tokens: 16
    model_map: {"*": "tiny:1b"}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, batch, heartbeat]
  rules:
    - {name: embeddings, lane: batch, match: {path: [/v1/embeddings]}}
    - {name: agents, lane: heartbeat, match: {user_agent: "(?i)agent", prompt_chars: {max: 400}}}
    - {name: long, lane: batch, match: {stream: false, max_tokens: {min: 256}}}
"""


GATEWAY_POLICY = policy_text([upstream_entry("sim", "{url}", max_concurrency=4)], LANES)


def _policy(path: Path, sim: Service, extra: str = LANES) -> Path:
    return write_policy(path, [upstream_entry("sim", sim.url, max_concurrency=4)], extra)


def _lane_of(raw: openai.APIResponse[object]) -> str:
    return raw.headers["x-lanegate-lane"]


def test_lanes_chosen_by_rule(gateway: Service, openai_client: OpenAIClients) -> None:
    client = openai_client(gateway)
    chat = client.chat.completions.with_raw_response
    assert (
        _lane_of(chat.create(model="m", messages=MSGS, max_tokens=4, stream=True)) == "interactive"
    )
    assert _lane_of(chat.create(model="m", messages=MSGS, max_tokens=256)) == "batch"
    emb = client.embeddings.with_raw_response.create(model="m", input="x")
    assert _lane_of(emb) == "batch"
    agent = openai_client(gateway, **{"user-agent": "my-agent/1.0"})
    raw = agent.chat.completions.with_raw_response.create(model="big:70b", messages=MSGS)
    assert _lane_of(raw) == "heartbeat"
    assert raw.headers["x-lanegate-queue-ms"]


def test_heartbeat_model_rewrite_reaches_upstream(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    agent = openai_client(gateway, **{"user-agent": "cron-agent"})
    reply = agent.chat.completions.create(model="llama3.1:70b", messages=MSGS, max_tokens=2)
    assert reply.model == "tiny:1b"  # the simulator answers with the model it was asked for


def test_x_lane_header_for_anonymous_callers(
    gateway: Service, openai_client: OpenAIClients
) -> None:
    raw = openai_client(gateway, **{"x-lane": "batch"}).chat.completions.with_raw_response.create(
        model="m", messages=MSGS, max_tokens=2
    )
    assert _lane_of(raw) == "batch"
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gateway, **{"x-lane": "nope"}).chat.completions.create(
            model="m", messages=MSGS
        )
    assert caught.value.code == "unknown_lane"


def test_budget_headers(gateway: Service, openai_client: OpenAIClients) -> None:
    agent = openai_client(gateway, **{"user-agent": "agent"})
    raw = agent.chat.completions.with_raw_response.create(model="m", messages=MSGS, max_tokens=4)
    assert int(raw.headers["x-ratelimit-limit-tokens"]) == 400
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 400
    assert raw.headers["x-ratelimit-reset-tokens"].endswith("s")


async def test_full_queue_and_queue_timeout_are_429_with_retry_after(gateway: Service) -> None:
    body = {
        "model": "m",
        "stream": True,
        "max_tokens": 240,  # ~1.2 s per request at 5 ms/chunk
        "messages": MSGS,
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:

        async def one() -> httpx.Response:
            response = await http.post(
                "/v1/chat/completions", json=body, headers={"x-lane": "batch"}
            )
            await response.aread()
            return response

        responses = await asyncio.gather(*(one() for _ in range(3)))
    codes = sorted(r.status_code for r in responses)
    assert codes[0] == 200 and codes[-1] == 429
    errors = {r.json()["error"]["code"] for r in responses if r.status_code == 429}
    assert errors <= {"lane_queue_full", "lane_queue_timeout"} and errors
    for response in responses:
        if response.status_code == 429:
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.headers["x-lanegate-lane"] == "batch"


async def test_a_client_that_leaves_while_queued_leaves_the_queue_at_once(
    gateway: Service,
) -> None:
    # batch: one slot, a queue of one, 1 s queue timeout. A holds the slot; B queues and
    # leaves; C, sent just after, must find the queue free (not lane_queue_full), which it
    # only is if B's leaving was noticed while B waited.
    body = {"model": "m", "stream": True, "max_tokens": 240, "messages": MSGS}
    lane = {"x-lane": "batch"}
    payload = json.dumps({**body, "max_tokens": 2}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-lane: batch\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=lane) as a,
    ):
        assert a.status_code == 200  # A is admitted and streaming (~1.2 s)
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(head.encode() + payload)
        await writer.drain()
        await asyncio.sleep(0.2)  # B is queued behind A
        writer.close()
        await asyncio.sleep(0.1)
        c = await http.post("/v1/chat/completions", json={**body, "max_tokens": 2}, headers=lane)
        await a.aread()
    if c.status_code != 200:
        assert c.json()["error"]["code"] == "lane_queue_timeout"


def test_clients_keys_and_x_lane_misuse(
    sim: Service, output_dir: Path, tmp_path: Path, openai_client: OpenAIClients
) -> None:
    clients = f"""
clients:
  - {{name: alice, key: "{hash_key(ALICE)}", lanes: [interactive]}}
  - {{name: bob, key: "{hash_key(BOB)}", lanes: [interactive, batch], default_lane: batch}}
"""
    gateway = start_gateway(
        "gw-keys", _policy(tmp_path / "p.yaml", sim, LANES + clients), output_dir
    )
    try:
        with pytest.raises(openai.AuthenticationError):
            openai_client(gateway, "wrong").chat.completions.create(model="m", messages=MSGS)
        denied = openai_client(gateway, ALICE, **{"x-lane": "batch"})
        with pytest.raises(openai.PermissionDeniedError) as caught:
            denied.chat.completions.create(model="m", messages=MSGS, max_tokens=2)
        assert caught.value.code == "lane_not_allowed"
        bob = openai_client(gateway, BOB).chat.completions.with_raw_response
        assert _lane_of(bob.create(model="m", messages=MSGS, max_tokens=2)) == "batch"
        ollama_native = httpx.post(f"{gateway.url}/api/chat", json={"model": "m"})
        assert ollama_native.status_code == 401 and isinstance(ollama_native.json()["error"], str)
    finally:
        gateway.stop()


def test_budget_spend_survives_restart(
    sim: Service, output_dir: Path, tmp_path: Path, openai_client: OpenAIClients
) -> None:
    policy = _policy(tmp_path / "p.yaml", sim)
    state = tmp_path / "state"
    agent_headers = {"user-agent": "agent"}

    def remaining(gateway: Service) -> int:
        raw = openai_client(gateway, **agent_headers).chat.completions.with_raw_response.create(
            model="m", messages=MSGS, max_tokens=4
        )
        return int(raw.headers["x-ratelimit-remaining-tokens"])

    first = start_gateway("gw-budget", policy, output_dir, state=state)
    try:
        for _ in range(3):
            before_restart = remaining(first)
    finally:
        first.stop()  # SIGTERM: flushes the ledger on shutdown
    second = start_gateway("gw-budget2", policy, output_dir, state=state)
    try:
        after_restart = remaining(second)
    finally:
        second.stop()
    # Each call spends the same: the restarted gateway continues where the first stopped.
    assert after_restart < before_restart
    assert before_restart - after_restart == (400 - before_restart) // 3
