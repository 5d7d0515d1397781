"""Anthropic Messages and trace context against a scripted real upstream: what goes upstream
(trace context, anthropic-version, never the client's key), byte fidelity, a failure after the
stream started as Anthropic's `event: error`, and the trace id in the access log and ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.observe.ledger import LEDGER_FILE, read_rows
from gateway.observe.ledger_report import COLUMNS
from tests.support.paths import DATA
from tests.support.policies import policy_text, upstream_entry
from tests.support.processes import Service
from tests.support.scripted_upstream import Scenario, Script, ScriptedUpstream
from tests.support.streams import split_into

RECORDED = (DATA / "streams" / "llama-server__messages_stream.sse").read_bytes()
MESSAGES = {
    "model": "tiny",
    "max_tokens": 8,
    "stream": True,
    "messages": [{"role": "user", "content": "Hello there"}],
}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


# What the module's `upstream` answers until a test sets `scenario.script`.
SCRIPT = Script(chunks=[RECORDED])


GATEWAY_UPSTREAM = "upstream"
GATEWAY_POLICY = policy_text(
    [
        upstream_entry(
            "scripted", "{url}", "llamacpp", timeouts={"connect": 1, "first_byte": 2, "idle": 1.0}
        )
    ]
)


@pytest.fixture
def client(gateway: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def test_stream_relayed_byte_for_byte_with_context_headers(
    client: httpx.Client, scenario: Scenario, upstream: ScriptedUpstream
) -> None:
    scenario.script = Script(chunks=split_into(RECORDED, 7))
    headers = {
        "x-api-key": "client-secret",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-04-04",
        "traceparent": TRACEPARENT,
        "tracestate": "congo=t61rcWkgMzE",
        "x-request-id": "traced-1",
    }
    with client.stream("POST", "/v1/messages", json=MESSAGES, headers=headers) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200 and received == RECORDED
    seen = upstream.requests[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["traceparent"] == TRACEPARENT
    assert seen.headers["tracestate"] == "congo=t61rcWkgMzE"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "tools-2024-04-04"
    assert "x-api-key" not in seen.headers  # the client's key never goes upstream


def test_invalid_traceparent_is_not_forwarded(
    client: httpx.Client, scenario: Scenario, upstream: ScriptedUpstream
) -> None:
    scenario.script = Script(chunks=[RECORDED])
    bad = {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01", "tracestate": "a=1"}
    assert client.post("/v1/messages", json=MESSAGES, headers=bad).status_code == 200
    assert "traceparent" not in upstream.requests[-1].headers
    assert "tracestate" not in upstream.requests[-1].headers


def test_trace_id_in_access_log_and_ledger(client: httpx.Client, gateway: Service) -> None:
    headers = {"traceparent": TRACEPARENT, "x-request-id": "traced-2"}
    assert client.post("/v1/messages", json=MESSAGES, headers=headers).status_code == 200
    ledger = gateway.log_path.parent / f"state-{gateway.name}-{gateway.port}" / LEDGER_FILE
    deadline = time.monotonic() + 15
    rows: list[tuple[object, ...]] = []
    while not rows and time.monotonic() < deadline:
        rows = [r for r in read_rows(ledger, 0) if r[1] == "traced-2"] if ledger.exists() else []
        time.sleep(0.1)
    assert rows and rows[0][COLUMNS.index("trace_id")] == TRACE
    log = gateway.log().splitlines()
    lines = [json.loads(line[line.index("{") :]) for line in log if '"traced-2"' in line]
    assert lines and lines[0]["trace_id"] == TRACE and lines[0]["path"] == "/v1/messages"


def test_upstream_dying_mid_stream_ends_with_anthropic_error_event(
    client: httpx.Client, scenario: Scenario
) -> None:
    scenario.script = Script(chunks=split_into(RECORDED, 6)[:3], after_chunks="abort")
    with client.stream("POST", "/v1/messages", json=MESSAGES) as response:
        received = b"".join(response.iter_raw())
    last = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    name, data = last.split(b"\n", 1)
    assert name == b"event: error"
    error = json.loads(data.removeprefix(b"data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "scripted" in error["error"]["message"]


def test_first_byte_timeout_is_an_anthropic_error(client: httpx.Client, scenario: Scenario) -> None:
    scenario.script = Script(before_headers="hang")
    response = client.post("/v1/messages", json=MESSAGES)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "api_error"


def test_rerank_refusal_of_a_server_without_reranking_is_relayed(
    client: httpx.Client, scenario: Scenario
) -> None:
    refusal = (
        b'{"error":{"code":501,"message":"This server does not support reranking. Start it '
        b'with `--reranking`","type":"not_supported_error"}}'
    )
    scenario.script = Script(chunks=[refusal], status=501, content_type="application/json")
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
    assert response.status_code == 501 and response.content == refusal
    assert response.headers["x-lanegate-upstream"] == "scripted"


def test_a_bare_404_page_means_the_upstream_lacks_the_api(
    client: httpx.Client, scenario: Scenario
) -> None:
    # What an Ollama older than 0.14 answers on /v1/messages (Go's default 404 page).
    page = Script(chunks=[b"404 page not found"], status=404, content_type="text/plain")
    scenario.script = page
    response = client.post("/v1/messages", json=MESSAGES)
    assert response.status_code == 404
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "not_found_error"
    assert "scripted (kind llamacpp)" in error["error"]["message"]
    assert "apis" in error["error"]["message"]
    # An API's own 404 (an unknown model, as JSON) is the upstream's answer: relayed as is.
    unknown = b'{"type":"error","error":{"type":"not_found_error","message":"model: nope"}}'
    scenario.script = Script(chunks=[unknown], status=404, content_type="application/json")
    response = client.post("/v1/messages", json=MESSAGES)
    assert response.status_code == 404 and response.content == unknown
