"""The gateway end to end with real clients: the openai and ollama SDKs against a real
`lanegate serve` in front of a real `lanegate simulate`, both on loopback ports."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.support.clients import OpenAIClients
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, free_port, running, start_gateway, start_simulator

MODEL = "llama3.1:8b"
MSGS = [{"role": "user", "content": "Say hello"}]
FAST = ("--profile", "fast", "--seed", "7")
SIM_ARGS = (*FAST, "--chunk-interval-ms", "2", "--ttft-ms", "5")  # the module's `sim`


def _simulator(output_dir: Path, *extra: str, port: int | None = None) -> Service:
    return start_simulator("sim", output_dir, *FAST, *extra, port=port)


def _gateway(output_dir: Path, policy_dir: Path, sim: Service, name: str) -> Service:
    timeouts = {"connect": 1, "first_byte": 10, "idle": 5}
    policy = write_policy(
        policy_dir / f"{name}.yaml", [upstream_entry("sim", sim.url, timeouts=timeouts)]
    )
    return start_gateway(name, policy, output_dir, ready_path="/readyz")


@pytest.fixture(scope="module")
def gateway(
    sim: Service, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with running(_gateway(output_dir, tmp_path_factory.mktemp("app"), sim, "gateway-sdk")) as gw:
        yield gw


@pytest.fixture
def oa(gateway: Service, openai_client: OpenAIClients) -> openai.OpenAI:
    return openai_client(gateway)


def test_openai_chat_non_streamed(oa: openai.OpenAI) -> None:
    raw = oa.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS, max_tokens=5)
    assert raw.headers["x-lanegate-upstream"] == "sim"
    # The simulator echoes x-request-id, as many servers do: the client still sees one.
    assert len(raw.headers.get_list("x-request-id")) == 1
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_openai_chat_streamed_with_usage(oa: openai.OpenAI) -> None:
    chunks = list(
        oa.chat.completions.create(
            model=MODEL,
            messages=MSGS,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_openai_async_streams_concurrently(gateway: Service) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="any", max_retries=0)
    import asyncio

    async def one(i: int) -> str:
        stream = await client.completions.create(
            model=MODEL, prompt=f"Once {i}", max_tokens=4, stream=True
        )
        return "".join([c.choices[0].text async for c in stream if c.choices])

    texts = await asyncio.gather(*(one(i) for i in range(16)))
    assert all(texts)
    await client.close()


def test_openai_embeddings_models_and_responses(oa: openai.OpenAI) -> None:
    embedding = oa.embeddings.create(model=MODEL, input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding
    listed = [m.id for m in oa.models.list()]
    assert listed and oa.models.retrieve(listed[0]).id == listed[0]
    response = oa.responses.create(model=MODEL, input="hi", max_output_tokens=4)
    assert response.output_text
    events = list(oa.responses.create(model=MODEL, input="hi", max_output_tokens=4, stream=True))
    assert events[-1].type == "response.completed"


def test_openai_error_from_gateway_is_parsed_by_sdk(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oa.chat.completions.create(model="", messages=MSGS)
    assert caught.value.code == "missing_model"


def test_ollama_client(gateway: Service) -> None:
    with ollama.Client(host=gateway.url) as client:
        reply = client.chat(model=MODEL, messages=MSGS, options={"num_predict": 4})
        assert reply.message.content and reply.eval_count == 4
        three = {"num_predict": 3}
        parts = list(client.generate(model=MODEL, prompt="hi", stream=True, options=three))
        assert parts[-1].done and "".join(p.response for p in parts)
        assert client.list().models
        assert client.ps() is not None
        assert client.show(client.list().models[0].model or "") is not None
        assert len(client.embed(model=MODEL, input=["x", "y"]).embeddings) == 2
        assert httpx.get(f"{gateway.url}/api/version").json()["version"]
        assert httpx.head(f"{gateway.url}/").status_code == 200


def test_client_disconnect_cancels_simulated_request(output_dir: Path, tmp_path: Path) -> None:
    slow = _simulator(output_dir, "--chunk-interval-ms", "100", "--ttft-ms", "5")
    gateway = _gateway(output_dir, tmp_path, slow, "gateway-cancel")
    try:
        body = json.dumps({"model": MODEL, "messages": MSGS, "max_tokens": 50, "stream": True})
        sock = socket.create_connection(("127.0.0.1", gateway.port))
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: cancel-me\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body.encode())
        assert b"data:" in _recv_until(sock, b"data:")
        sock.close()
        closed_at = time.monotonic()
        cancel = _wait_cancel(slow, "cancel-me", deadline=closed_at + 3)
        assert cancel["at"] - closed_at < 0.2
    finally:
        gateway.stop()
        slow.stop()


def test_upstream_killed_mid_stream(
    output_dir: Path, tmp_path: Path, openai_client: OpenAIClients
) -> None:
    port = free_port()
    doomed = _simulator(output_dir, "--chunk-interval-ms", "100", port=port)
    gateway = _gateway(output_dir, tmp_path, doomed, "gateway-kill")
    oa = openai_client(gateway)
    try:
        stream = oa.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=50, stream=True)
        with stream, pytest.raises(openai.APIError) as caught:
            for n, _ in enumerate(stream):
                if n == 2:
                    doomed.stop(signal.SIGKILL)
        assert "sim" in str(caught.value)  # the final error event names the upstream
        revived = _simulator(output_dir, port=port)
        try:
            reply = oa.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=2)
            assert reply.choices[0].message.content
        finally:
            revived.stop()
    finally:
        gateway.stop()
        doomed.stop()


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    sock.settimeout(5)
    while marker not in data:
        data += sock.recv(4096)
    return data


def _wait_cancel(sim: Service, request_id: str, deadline: float) -> dict[str, float]:
    while time.monotonic() < deadline:
        for cancel in httpx.get(f"{sim.url}/sim/stats").json()["cancels"]:
            if cancel["request_id"] == request_id:
                return dict(cancel)
        time.sleep(0.02)
    raise AssertionError(f"the simulator never saw {request_id} cancelled")
