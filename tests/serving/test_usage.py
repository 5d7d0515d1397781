"""Streams record usage the client did not ask for, and the client's stream stays its own.

Pure: which requests are asked, the body the upstream gets, and the usage event removed (from
real recorded streams, whatever the splitting). Through a real `lanegate serve` and a scripted
Ollama that, like the real one, adds the usage event only when asked: the client receives the
exact bytes Ollama sends a client that did not ask, and the ledger has the real token counts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.spec import UpstreamKind
from gateway.serving.event_framing import EventFramer
from gateway.serving.stream_parser import Api
from gateway.serving.usage import asking_body, should_ask, strip_usage_event
from tests.conftest import DATA
from tests.support.clients import OpenAIClients
from tests.support.policies import policy_text, upstream_entry
from tests.support.processes import Service
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest
from tests.support.streams import split_into

ASKED = (DATA / "streams" / "ollama__v1_completions_include_usage.sse").read_bytes()
OPENAI_ASKED = (DATA / "streams" / "openai__chat_include_usage_excerpt.sse").read_bytes()


def without_usage_event(stream: bytes) -> bytes:
    """What the upstream sends a client that did not ask: the same events minus the one."""
    events = stream.split(b"\n\n")
    return b"\n\n".join(e for e in events if b'"choices":[]' not in e)


PLAIN = without_usage_event(ASKED)
BODY = {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": True, "max_tokens": 5}


@pytest.mark.parametrize(
    ("api", "stream", "body", "kind", "asked"),
    [
        (Api.CHAT, True, {"model": "m"}, UpstreamKind.OLLAMA, True),
        (Api.COMPLETIONS, True, {"stream_options": {}}, UpstreamKind.OLLAMA, True),
        (Api.CHAT, True, {"stream_options": {"include_usage": False}}, UpstreamKind.OLLAMA, True),
        (Api.CHAT, True, {"stream_options": {"include_usage": True}}, UpstreamKind.OLLAMA, False),
        (Api.CHAT, True, {"stream_options": "yes"}, UpstreamKind.OLLAMA, False),  # not ours
        (Api.CHAT, False, {"model": "m"}, UpstreamKind.OLLAMA, False),  # not a stream
        (Api.OLLAMA_CHAT, True, {"model": "m"}, UpstreamKind.OLLAMA, False),  # native: counts
        (Api.RESPONSES, True, {"model": "m"}, UpstreamKind.OLLAMA, False),
        (Api.CHAT, True, {"model": "m"}, UpstreamKind.LLAMACPP, False),  # timings: counts
        (Api.CHAT, True, {"model": "m"}, UpstreamKind.MLX, True),  # one extra event, as Ollama
        (Api.CHAT, True, {"model": "m"}, UpstreamKind.OPENAI, False),  # "usage": null everywhere
        (Api.CHAT, True, {"model": "m"}, UpstreamKind.LMSTUDIO, False),  # not known to be clean
    ],
)
def test_who_is_asked(
    api: Api, stream: bool, body: dict[str, object], kind: UpstreamKind, asked: bool
) -> None:
    assert should_ask(api, stream, body, kind) is asked


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(BODY).encode(),
        b'  {"model":"m","stream":true}',
        json.dumps({**BODY, "stream_options": {"include_usage": False, "x": 1}}).encode(),
    ],
)
def test_the_body_asks_and_keeps_everything_else(raw: bytes) -> None:
    body = json.loads(raw)
    sent = json.loads(asking_body(raw, body))
    assert sent == {
        **body,
        "stream_options": {**body.get("stream_options", {}), "include_usage": True},
    }
    if "stream_options" not in body:  # inserted: the client's bytes follow unchanged
        assert asking_body(raw, body).endswith(raw.lstrip()[1:])


@pytest.mark.parametrize("asked", [ASKED, OPENAI_ASKED])
def test_the_usage_event_alone_is_removed(asked: bytes) -> None:
    stripped = strip_usage_event(asked)
    assert stripped == without_usage_event(asked)
    assert stripped.endswith(b"data: [DONE]\n\n") and b'"choices":[]' not in stripped
    # Ollama's zeroed per-chunk usage rides on events with choices: those stay.
    assert stripped.count(b'"usage"') == asked.count(b'"usage"') - 1


def test_events_that_merely_mention_usage_stay() -> None:
    text = b'data: {"choices":[{"delta":{"content":"\\"usage\\""}}],"usage":null}\n\n'
    broken = b'data: {"choices":[], "usage": {oops\n\n'
    assert strip_usage_event(text + broken) == text + broken


@given(st.integers(1, 40), st.booleans())
def test_any_splitting_gives_the_same_stream(parts: int, strip: bool) -> None:
    framer = EventFramer(ndjson=False, strip_usage=strip)
    out = b"".join(framer.push(chunk) for chunk in split_into(ASKED, parts)) + framer.flush()
    assert out == (PLAIN if strip else ASKED)


# -- through a real gateway --------------------------------------------------------------------


NATIVE = (DATA / "streams" / "ollama__api_chat.ndjson").read_bytes()


def ollama_like(request: SeenRequest) -> Script:
    """Adds the usage event only when asked, as Ollama does; its native chat always counts."""
    if request.method != "POST":
        return Script(chunks=[b'{"models": []}'], content_type="application/json")
    if request.path == "/api/chat":
        return Script(chunks=split_into(NATIVE, 5), content_type="application/x-ndjson")
    options = json.loads(request.body).get("stream_options") or {}
    stream = ASKED if options.get("include_usage") else PLAIN
    return Script(chunks=split_into(stream, 7))


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(ollama_like) as server:
        yield server


GATEWAY_UPSTREAM = "upstream"
GATEWAY_POLICY = policy_text([upstream_entry("ollama", "{url}", "ollama")])


def ledger_tokens(service: Service, request_id: str) -> tuple[int | None, int | None]:
    state = service.log_path.parent / f"state-{service.name}-{service.port}"  # start_lanegate's
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        row = db.execute(
            "SELECT prompt_tokens, completion_tokens FROM requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
    finally:
        db.close()
    return (None, None) if row is None else (row[0], row[1])


def test_the_client_gets_the_stream_it_asked_for_and_the_ledger_the_usage(
    gateway: Service, upstream: ScriptedUpstream, openai_client: OpenAIClients
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        plain = http.post("/v1/completions", json=BODY, headers={"x-request-id": "plain"})
        asked = http.post(
            "/v1/completions",
            json={**BODY, "stream_options": {"include_usage": True}},
            headers={"x-request-id": "asked"},
        )
    assert plain.content == PLAIN  # byte for byte what Ollama sends a client that did not ask
    assert asked.content == ASKED  # a client that asked keeps its usage event
    sent = [json.loads(r.body) for r in upstream.requests if r.method == "POST"]
    assert [body["stream_options"] for body in sent[-2:]] == [{"include_usage": True}] * 2
    # The openai SDK reads it as a normal stream (no empty-choices chunk it did not ask for).
    oa = openai_client(gateway, "x")
    chunks = list(oa.completions.create(model="llama3.2", prompt="Why?", stream=True))
    assert chunks and all(chunk.choices for chunk in chunks)
    deadline = time.monotonic() + 10
    while ledger_tokens(gateway, "plain") == (None, None) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ledger_tokens(gateway, "plain") == (30, 5)  # the real counts, not an estimate
    assert ledger_tokens(gateway, "asked") == (30, 5)


def test_ollama_native_streams_keep_their_bytes_and_give_their_counts(
    gateway: Service, upstream: ScriptedUpstream
) -> None:
    body = {"model": "gemma2:2b", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(
        f"{gateway.url}/api/chat", json=body, headers={"x-request-id": "native"}, timeout=10
    )
    assert answer.content == NATIVE  # nothing asked, nothing removed
    assert "stream_options" not in json.loads(upstream.requests[-1].body)
    deadline = time.monotonic() + 10
    while ledger_tokens(gateway, "native") == (None, None) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ledger_tokens(gateway, "native") == (10, 17)  # the done object's counts
