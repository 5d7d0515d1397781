"""Hostile input: schema fuzzing of every route, hypothesis-made bodies and headers on the raw
socket and through the pure classifier, traversal in model paths, an endless header. (API
keys: test_auth_hostile.py.)

"From the gateway itself" means a response without `x-lanegate-upstream`: the relay sets that
header on everything an upstream answered (whatever its status), and never on an answer the
gateway made. With a healthy upstream the gateway itself must never answer 5xx (a 500
"internal gateway error" is always a bug; a 502/503/504 would blame a healthy upstream), and
every 4xx it makes is in the API's error shape: OpenAI's `{"error": {...}}` on /v1 and the
control plane, Ollama's `{"error": "..."}` on /api.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import httpx
import psutil
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from gateway.errors import GatewayError
from gateway.lanes.classify import LaneRefusal, classify, model_allowed, request_view, rewrite_model
from gateway.ops.openapi import openapi_document
from gateway.policy.loader import load_policy
from gateway.serving.request_body import parse_request
from gateway.serving.routes import RELAY_PATHS, RELAY_ROUTES, Route
from tests.reliability.conftest import KEY, LANES
from tests.reliability.raw_http import (
    assert_error_shape,
    assert_gateway_answer_ok,
    parse,
    raw_exchange,
)
from tests.support.policies import policy_text, upstream_entry
from tests.support.processes import REPO, Service
from tests.support.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.fuzz

EXAMPLES = 50  # per operation and generation mode: the whole document in ~15 s

# The default lane carries a budget, so the fuzzer's max_tokens reach the budget ledger.
FUZZ_LANES = LANES.replace("default_lane: interactive", "default_lane: work")


GATEWAY_UPSTREAM = "instant_upstream"
GATEWAY_POLICY = policy_text(
    [upstream_entry("scripted", "{url}", "llamacpp", max_concurrency=8)], FUZZ_LANES
)
GATEWAY_ENV = {"LANEGATE_MAX_BODY_BYTES": "65536"}


# -- schemathesis over the gateway's own OpenAPI document ------------------------------------


def test_openapi_document_describes_every_relay_route() -> None:
    document = openapi_document("test")
    paths = {p.removesuffix("{model}") for p in document["paths"]}
    assert paths >= RELAY_PATHS
    for path, item in document["paths"].items():
        if "post" in item:
            schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[-1]
            if "rerank" in path:  # llama-server reranks with the one model it has loaded
                continue
            assert "model" in document["components"]["schemas"][name]["required"], path


def test_schemathesis_every_operation(gateway: Service) -> None:
    served = httpx.get(f"{gateway.url}/openapi.json").json()
    assert served == openapi_document(served["info"]["version"])
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {f"{m.upper()} {p}" for p, item in served["paths"].items() for m in item}
    # schemathesis leaves out the document it was loaded from
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}
    tried: dict[str, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=gateway.url, timeout=10)
                path = case.operation.path
                tried[path] = tried.get(path, 0) + 1
                assert_gateway_answer_ok(
                    response.status_code, response.headers, path, response.content
                )

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): positive mode covered it.
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert gateway.process.poll() is None
    assert "unexpected error" not in gateway.log()
    assert len(tried) == len({op.path for op in operations})


# -- hypothesis bodies and headers on the raw socket ---------------------------------------

DEPTH = st.integers(min_value=1, max_value=200_000)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: hypothesis reads a lambda's source to check that it
    # uses its argument, and misreads this one (a HypothesisDeprecationWarning).
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    _nested,
    max_leaves=20,
)


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "utf8", "number", "nested", "fields", "model"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "utf8":  # valid JSON around invalid UTF-8
        return b'{"model": "m\xff\xfe", "messages": []}'
    if kind == "number":
        digits = draw(st.integers(min_value=300, max_value=20_000))
        sign = draw(st.sampled_from(["", "-"]))
        field = draw(st.sampled_from(["max_tokens", "temperature", "num_predict"]))
        return f'{{"model": "m", "{field}": {sign}1{"0" * digits}}}'.encode()
    if kind == "nested":
        depth = draw(DEPTH)
        return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "model":
        model = draw(
            st.sampled_from(
                ["../../etc/passwd", "..\\..\\x", "m\r\nx-injected: 1", "\x00", "a/../../api/pull"]
            )
        )
        return json.dumps({"model": model, "messages": []}).encode()
    body = {"model": draw(st.text(max_size=10)), "stream": draw(JSONISH)}
    body.update(draw(st.dictionaries(st.sampled_from(["max_tokens", "options", "input"]), JSONISH)))
    return json.dumps(body).encode()


@st.composite
def hostile_headers(draw: st.DrawFn) -> list[bytes]:
    choices = [
        b"authorization: Bearer a",
        b"authorization: Bearer b",  # duplicates
        b"x-lane: work",
        b"x-lane: ../../interactive",
        b"content-type: text/plain",
        b"content-type: application/json",
        b"x-request-id: " + b"r" * 200,
        b"x-big: " + b"v" * draw(st.integers(min_value=1, max_value=200_000)),
        b"x-split: a\rx-injected: 1",  # bare CR: must be refused by the parser
        b"user-agent: agent\x00",
        b"accept: */*",
    ]
    return draw(st.lists(st.sampled_from(choices), max_size=5))


SHIPPED_POLICY = load_policy(REPO / "policies" / "default.yaml")
HEADER_TEXT = st.text(alphabet=st.characters(codec="latin-1"), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from([r for r in RELAY_ROUTES if r.method == "POST"]),
    body=st.dictionaries(
        st.sampled_from(
            [
                "model",
                "stream",
                "messages",
                "max_tokens",
                "options",
                "input",
                "prompt",
                "max_output_tokens",
            ]
        ),
        JSONISH,
    ),
    headers=st.dictionaries(
        st.sampled_from(["user-agent", "x-lane", "x-client", "accept", "x-whatever"]), HEADER_TEXT
    ),
    client=st.sampled_from([None, "nobody", *(c.name for c in SHIPPED_POLICY.clients)]),
)
def test_classifier_on_any_body_and_headers(
    route: Route, body: dict[str, Any], headers: dict[str, str], client: str | None
) -> None:
    """The pure path a request takes before the slot: parse, classify, rewrite, allow. Any
    input ends in a lane or a GatewayError (which the flow answers in the API's shape)."""
    try:
        facts = parse_request(route, json.dumps(body).encode())
        view = request_view(route.path, facts, client, headers)
        decision = classify(SHIPPED_POLICY, view, headers.get("x-lane"))
        if isinstance(decision, LaneRefusal):
            assert isinstance(decision.error(), GatewayError)
            return
        lane = SHIPPED_POLICY.lane(decision.lane)
        model_allowed(lane, rewrite_model(lane, facts.model))
        assert view.prompt_chars >= 0 and (facts.max_tokens is None or facts.max_tokens >= 0)
    except GatewayError as error:
        assert 400 <= error.status < 500 and error.message


ROUTES = ["/v1/chat/completions", "/v1/embeddings", "/api/chat", "/api/generate", "/api/show"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(ROUTES), body=hostile_bodies(), headers=hostile_headers())
def test_hostile_bodies_and_headers(
    gateway: Service,
    instant_upstream: ScriptedUpstream,
    path: str,
    body: bytes,
    headers: list[bytes],
) -> None:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"host: x", b"connection: close"]
    head += [*headers, b"content-length: %d" % len(body)]
    raw = raw_exchange(gateway.port, b"\r\n".join(head) + b"\r\n\r\n" + body)
    if not raw:
        return  # the HTTP parser dropped the connection (e.g. a bare CR): nothing to check
    status, response_headers, content = parse(raw)
    if status == 400 and b"Invalid HTTP request" in content:
        return  # refused by the HTTP parser before the gateway saw it
    assert_gateway_answer_ok(status, response_headers, path, content)
    for seen in instant_upstream.requests[-3:]:  # discovery's GETs come and go meanwhile
        assert "x-injected" not in seen.headers and "authorization" not in seen.headers
        assert seen.method == "GET" or seen.path in RELAY_PATHS, seen.path


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/../../api/pull",
        "/v1/models/..%2F..%2Fapi%2Fpull",
        "/v1/models/a%0d%0ax-injected:%201",
        "/v1/models/./x",
        "/v1/models/a%20b",
    ],
)
def test_model_path_traversal_and_injection(
    gateway: Service, instant_upstream: ScriptedUpstream, path: str
) -> None:
    before = len(instant_upstream.requests)
    raw = raw_exchange(
        gateway.port, f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
    )
    status, headers, content = parse(raw)
    assert_gateway_answer_ok(status, headers, path, content)
    for seen in instant_upstream.requests[before:]:
        assert "x-injected" not in seen.headers
        segments = seen.path.split("?")[0].split("/")
        assert ".." not in segments and "." not in segments, seen.path
        assert "\r" not in seen.path and " " not in seen.path


def test_endless_header_is_431_and_memory_stays_bounded(
    gateway: Service, keyed_gateway: Service
) -> None:
    """httptools buffers a header of any length: without the bound, 200 MB sent here grew the
    gateway by ~300 MB. Now the head is refused past LANEGATE_MAX_HEADER_BYTES (64 KiB)."""
    process = psutil.Process(gateway.process.pid)
    before = process.memory_info().rss
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: ")
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(50):  # 50 MiB, if it were all taken
                sock.sendall(b"a" * 1024 * 1024)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert process.memory_info().rss - before < 20 * 1024 * 1024
    if received:  # the 431 may be lost to the reset of a client still sending
        status, _, content = parse(received)
        assert status == 431
        assert_error_shape(json.loads(content), ollama=False)
    # A large body read together with its head is not mistaken for a large head (this
    # gateway takes bodies up to the default 32 MiB).
    body = b'{"model": "m", "input": "' + b"x" * 3_000_000 + b'"}'
    head = b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    head += b"authorization: Bearer %s\r\n" % KEY.encode()
    head += b"content-length: %d\r\n\r\n" % len(body)
    status, headers, _ = parse(raw_exchange(keyed_gateway.port, head + body))
    assert status == 200 and headers["x-lanegate-upstream"] == "scripted"
