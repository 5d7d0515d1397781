"""Issue 18, the client side: hostile clients against a running gateway (one test per attack).

Each test is the attack as it was found from outside; docs/reliability.md has the table
"attack -> what the gateway does now". The upstream is a scripted one that answers at once and
obeys the token field of its own API, so a budget bypass shows up as tokens really spent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.serving.keys import hash_key
from tests.reliability.raw_http import parse, raw_exchange
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

pytestmark = pytest.mark.faults

ALICE = "lg-attack-alice-key-0123456789abcdef"
BUDGET = 3000  # tokens per hour of the `batch` lanes: far below what the attacks ask for
LANES = f"""
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 4, max_queue: 20, queue_timeout: 20}}
  - {{name: work, priority: 10, max_concurrency: 4, max_queue: 20, queue_timeout: 20,
     tokens_per_day: 10000000, allowed_models: ["allowed-*"]}}
  - {{name: batch, priority: 5, max_concurrency: 16, max_queue: 50, queue_timeout: 20,
     tokens_per_hour: {BUDGET}}}
  - {{name: batch2, priority: 5, max_concurrency: 16, max_queue: 50, queue_timeout: 20,
     tokens_per_hour: {BUDGET}}}
classify:
  default_lane: interactive
clients:
  - {{name: alice, key: "{hash_key(ALICE)}", lanes: [interactive, work, batch, batch2]}}
"""


def _obedient(request: SeenRequest) -> Script:
    """Generates exactly as many tokens as the field of its own API says (Ollama's
    options.num_predict on /api/*, max_tokens on /v1/*), and reports them as usage."""
    body = json.loads(request.body or b"{}")
    if request.path.startswith("/api/"):
        wanted = (body.get("options") or {}).get("num_predict", 10)
        answer = {"message": {"role": "assistant", "content": "x"}, "done": True}
        answer |= {"prompt_eval_count": 1, "eval_count": wanted}
    else:
        wanted = body.get("max_tokens", 10)
        answer = {"choices": [{"text": "x", "index": 0, "finish_reason": "length"}]}
        answer["usage"] = {"prompt_tokens": 1, "completion_tokens": wanted}
    return Script(
        content_type="application/json", chunks=[json.dumps(answer).encode()], delay_s=0.2
    )


@pytest.fixture(scope="module")
def gateway(output_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("attacks-clients")
    with ScriptedUpstream(_obedient) as upstream:
        line = upstream_entry("scripted", upstream.url, "llamacpp", max_concurrency=32)
        policy = write_policy(tmp / "policy.yaml", [line], LANES)
        service = start_gateway("gw-attacks-clients", policy, output_dir, state=tmp / "state")
        yield service
        service.stop()


def _post(service: Service, path: str, body: object, lane: str = "batch") -> httpx.Response:
    headers = {"authorization": f"Bearer {ALICE}", "x-lane": lane}
    return httpx.post(service.url + path, json=body, headers=headers, timeout=30)


# -- 1. unauthenticated sockets held forever -------------------------------------------------


def test_an_early_answer_closes_the_connection(gateway: Service) -> None:
    """CL 1e9 and 200 KiB of body, no key: 401 with `connection: close`, then EOF, for each of
    many sockets at once (before: answered, then neither read nor closed, forever)."""
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000000000\r\n\r\n"
    )
    sockets = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(30)]
    try:
        for sock in sockets:
            sock.settimeout(15)
            sock.sendall(head + b"x" * (200 * 1024))
        for sock in sockets:
            raw = _read_until_eof(sock)  # raises TimeoutError if the gateway keeps it open
            status, headers, _ = parse(raw)
            assert status == 401 and headers.get("connection") == "close", raw[:300]
    finally:
        for sock in sockets:
            sock.close()


def test_an_answer_after_the_whole_body_keeps_the_connection(gateway: Service) -> None:
    """The close above is only for bodies not read whole: a 401 to a complete request keeps
    its keep-alive connection (clients reuse it for the next request)."""
    body = b'{"model": "m", "prompt": "hi"}'
    first = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(first)
        status, headers = _read_one(sock)
        assert status == 401 and headers.get("connection") != "close", headers
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_one(sock)[0] == 200


def _read_one(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """One response with a content-length, read off a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    status, headers, _ = parse(head + b"\r\n\r\n")
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    return status, headers


def _read_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass  # closed with unread request bytes: a reset is a close too
    return b"".join(chunks)


# -- 2. token budget bypass ------------------------------------------------------------------


def test_ollama_reserves_what_ollama_obeys(gateway: Service) -> None:
    body = {"model": "m", "stream": False, "max_tokens": 1, "options": {"num_predict": 5000}}
    response = _post(gateway, "/api/chat", body)
    assert response.status_code == 400, response.text  # 5001 tokens never fit 3000 an hour
    assert "max_tokens" in response.json()["error"] or "token" in response.json()["error"]


def test_concurrent_lies_cannot_spend_past_the_budget(gateway: Service) -> None:
    body = {"model": "m", "prompt": "hi", "max_completion_tokens": 1, "max_tokens": 2000}
    with ThreadPoolExecutor(10) as pool:
        calls = [pool.submit(_post, gateway, "/v1/completions", body, "batch2") for _ in range(10)]
        answers = [call.result() for call in calls]
    spent = sum(
        r.json()["usage"]["prompt_tokens"] + r.json()["usage"]["completion_tokens"]
        for r in answers
        if r.status_code == 200
    )
    assert spent <= BUDGET, [r.status_code for r in answers]
    assert {r.status_code for r in answers} <= {200, 429}


@pytest.mark.parametrize(
    "field", [{"max_tokens": 1e6}, {"max_tokens": 2000.0}, {"max_tokens": True}, {"max_tokens": -1}]
)
def test_token_limits_are_strict_integers(gateway: Service, field: dict[str, object]) -> None:
    response = _post(gateway, "/v1/completions", {"model": "m", "prompt": "hi", **field})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "max_tokens"


# -- 6. strings that reach logs and the ledger ------------------------------------------------


def test_a_huge_model_name_is_refused_before_anything_logs_it(gateway: Service) -> None:
    model = "m" * (1024 * 1024)
    response = _post(gateway, "/v1/completions", {"model": model, "prompt": "hi"}, "work")
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["code"] == "model_too_long"
    longest = max(len(line) for line in gateway.log().splitlines())
    assert longest < 8192, f"a log line of {longest} characters"


# -- 9. HTTP/1.0 -------------------------------------------------------------------------------


def test_http10_never_gets_chunked(gateway: Service) -> None:
    body = json.dumps({"model": "m", "prompt": "hi", "max_tokens": 3}).encode()
    request = (
        b"POST /v1/completions HTTP/1.0\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + ALICE.encode() + b"\r\nx-lane: interactive\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    raw = raw_exchange(gateway.port, request)
    status, headers, content = parse(raw)
    assert status == 200, raw[:300]
    assert "transfer-encoding" not in headers, headers
    assert json.loads(content)["usage"]["completion_tokens"] == 3


# -- 10. redirects that trust Host ----------------------------------------------------------


def test_trailing_slash_redirect_ignores_host(gateway: Service) -> None:
    raw = raw_exchange(
        gateway.port,
        b"GET /admin/status/ HTTP/1.1\r\nhost: evil.example.com\r\nconnection: close\r\n\r\n",
    )
    status, headers, _ = parse(raw)
    assert status == 307, raw[:300]
    assert headers["location"] == "/admin/status", headers  # path only: no host at all


# -- also seen: text/plain bodies from a browser page ---------------------------------------


def test_a_cross_site_text_plain_post_is_refused(gateway: Service) -> None:
    """A page on another site can POST text/plain without a preflight; it must not run."""
    response = httpx.post(
        gateway.url + "/v1/completions",
        content=json.dumps({"model": "m", "prompt": "hi"}),
        headers={
            "content-type": "text/plain",
            "origin": "https://evil.example.com",
            "authorization": f"Bearer {ALICE}",
        },
        timeout=30,
    )
    assert response.status_code == 415, response.text
