"""The relay against a scripted real upstream: byte fidelity, headers, faults, bad input."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA
from tests.support.policies import policy_text, upstream_entry, write_policy
from tests.support.processes import Service, free_port, start_gateway
from tests.support.scripted_upstream import Scenario, Script, ScriptedUpstream

RECORDED = (DATA / "streams" / "llama-server__chat_stream_usage.sse").read_bytes()
CHAT = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def _split(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


# What the module's `upstream` answers until a test sets `scenario.script`.
SCRIPT = Script(chunks=_split(RECORDED, 97))


TIMEOUTS = {"connect": 1, "first_byte": 1.5, "idle": 1.0}
GATEWAY_UPSTREAM = "upstream"
GATEWAY_POLICY = policy_text([upstream_entry("scripted", "{url}", "llamacpp", timeouts=TIMEOUTS)])
GATEWAY_ENV = {"LANEGATE_MAX_BODY_BYTES": "65536"}


@pytest.fixture
def client(gateway: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def test_stream_is_relayed_byte_for_byte(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(chunks=_split(RECORDED, 97), delay_s=0.001)
    with client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert received == RECORDED


def test_relay_headers_and_forwarded_request(
    client: httpx.Client, scenario: Scenario, upstream: ScriptedUpstream
) -> None:
    scenario.script = Script(chunks=[RECORDED])
    response = client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"x-request-id": "req-123", "authorization": "Bearer client-secret"},
    )
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["x-lanegate-upstream"] == "scripted"
    seen = upstream.requests[-1]
    assert seen.path == "/v1/chat/completions"
    assert "authorization" not in seen.headers  # the client's key never goes upstream
    assert seen.headers["x-request-id"] == "req-123"
    assert json.loads(seen.body) == CHAT


def test_generated_request_id(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(chunks=[RECORDED])
    first = client.post("/v1/chat/completions", json=CHAT).headers["x-request-id"]
    second = client.post("/v1/chat/completions", json=CHAT).headers["x-request-id"]
    assert len(first) == 32 and first != second


def test_non_streamed_body_passes_unchanged(client: httpx.Client, scenario: Scenario) -> None:
    body = (DATA / "streams" / "llama-server__chat_nonstream.json").read_bytes()
    scenario.script = Script(chunks=_split(body, 50), content_type="application/json")
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": False})
    assert response.status_code == 200
    assert response.content == body


def test_upstream_error_status_passes_through(client: httpx.Client, scenario: Scenario) -> None:
    body = (DATA / "responses" / "llama-server__emb_noflag.txt").read_bytes().split(b"\n\n", 1)[-1]
    body = body.split(b"\r\n\r\n", 1)[-1]
    scenario.script = Script(chunks=[body], status=501, content_type="application/json")
    response = client.post("/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert response.status_code == 501
    assert response.content == body


def test_upstream_dies_mid_stream_ends_with_error_event(
    client: httpx.Client, scenario: Scenario
) -> None:
    scenario.script = Script(chunks=_split(RECORDED, 300)[:3], after_chunks="abort")
    with client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200
    last = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"data: ")
    error = json.loads(last[len(b"data: ") :])["error"]
    assert error["type"] == "upstream_error" and "scripted" in error["message"]
    # ... and the gateway keeps serving.
    scenario.script = Script(chunks=[RECORDED])
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_ollama_stream_failure_is_ndjson_error(client: httpx.Client, scenario: Scenario) -> None:
    line = b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
    scenario.script = Script(
        chunks=[line], content_type="application/x-ndjson", after_chunks="abort"
    )
    with client.stream("POST", "/api/chat", json={"model": "m", "messages": []}) as response:
        lines = b"".join(response.iter_raw()).splitlines()
    assert lines[0] == line.rstrip(b"\n")
    assert isinstance(json.loads(lines[-1])["error"], str)


def test_first_byte_timeout_is_504(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(before_headers="hang")
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


def test_idle_gap_timeout_ends_stream_with_error(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(chunks=_split(RECORDED, 300)[:2], after_chunks="hang")
    with client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
        received = b"".join(response.iter_raw())
    assert b'"upstream_timeout"' in received.rsplit(b"\n\n", 2)[-2]


def test_upstream_closes_before_headers_is_502(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(before_headers="close")
    response = client.post("/api/generate", json={"model": "m", "prompt": "x"})
    assert response.status_code == 502
    assert isinstance(response.json()["error"], str)  # Ollama's shape on /api


def test_connection_refused_is_502(tmp_path: Path, output_dir: Path) -> None:
    dead = free_port()
    policy = write_policy(
        tmp_path / "p.yaml", [{"name": "dead", "base_url": f"http://127.0.0.1:{dead}"}]
    )
    service = start_gateway("gateway-dead", policy, output_dir)
    try:
        response = httpx.post(f"{service.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert response.status_code == 502
        body = response.json()["error"]
        assert body["code"] == "upstream_unreachable" and "dead" in body["message"]
        assert httpx.get(f"{service.url}/readyz").status_code == 503
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("/v1/chat/completions", b"[1, 2]", 400, "invalid_json"),
        ("/v1/chat/completions", b"", 400, "invalid_json"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "missing_model"),
        ("/v1/chat/completions", b'{"model": "", "messages": []}', 400, "missing_model"),
        ("/v1/chat/completions", b'{"model": "m", "stream": "yes"}', 400, "invalid_stream"),
        (
            "/v1/embeddings",
            b'{"model": "m", "input": "' + b"x" * 70000 + b'"}',
            413,
            "body_too_large",
        ),
        ("/v1/chat/completions", b"\xff\xfe", 400, "invalid_json"),
    ],
)
def test_bad_input_never_reaches_upstream(
    client: httpx.Client, upstream: ScriptedUpstream, path: str, body: bytes, status: int, code: str
) -> None:
    before = len(upstream.requests)
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error["type"] == "invalid_request_error"
    assert len(upstream.requests) == before


def test_bad_input_on_ollama_path_has_ollama_shape(client: httpx.Client) -> None:
    response = client.post("/api/chat", content=b'{"messages": []}')
    assert response.status_code == 400
    assert "model" in response.json()["error"]


def test_unknown_path_and_method(client: httpx.Client) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_path"
    nope = client.get("/api/nope").json()["error"]
    assert nope.startswith("lanegate does not relay GET /api/nope") and "/openapi.json" in nope
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_client_disconnect_cancels_upstream(
    scenario: Scenario, upstream: ScriptedUpstream, gateway: Service
) -> None:
    scenario.script = Script(chunks=_split(RECORDED, 64), delay_s=0.2)
    before = len(upstream.disconnects)
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    body = json.dumps(CHAT).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    sock.sendall(head + b"content-length: %d\r\n\r\n%s" % (len(body), body))
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()
    closed_at = time.monotonic()
    # The gateway must drop its upstream request at once, not read a stream nobody wants.
    deadline = closed_at + 3
    while len(upstream.disconnects) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(upstream.disconnects) == before + 1
    assert upstream.disconnects[-1] - closed_at < 0.2
