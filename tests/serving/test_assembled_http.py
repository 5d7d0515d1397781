"""A preemptible non-streamed request to llama.cpp, streamed upstream and answered whole.

The openai SDK and httpx → a real `lanegate serve` → a scripted `llamacpp` upstream with one
slot that answers streams with the recorded llama-server stream (or a hostile one), over
loopback. The client asked for no stream and gets the non-streamed JSON; the upstream saw a
stream with `include_usage`; errors, floods, garbage and cut streams end as the non-streamed
path would end them; a preemption cuts the stream and counts the tokens it threw away.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.serving.assemble import Assembler
from gateway.serving.stream_events import Api
from tests.conftest import DATA
from tests.lanes.test_preempt_http import InThread, ledger_row, sdk, wait_for
from tests.support.policies import PREEMPTIBLE_LANES, upstream_entry, write_policy
from tests.support.processes import Service, running, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

pytestmark = pytest.mark.timeout(120)

LIMIT = 64 * 1024  # LANEGATE_MAX_UPSTREAM_BODY_BYTES (its minimum)
RECORDED = (DATA / "streams" / "llama-server__chat_stream_usage.sse").read_bytes()
DIRECT = (DATA / "streams" / "llama-server__chat_nonstream.json").read_bytes()
EVENTS = [e + b"\n\n" for e in RECORDED.split(b"\n\n") if e]
ERROR = b'data: {"error":{"code":400,"message":"context exceeded","type":"invalid_request_error"}}'
SLOW_PIECES = 20
LANES = PREEMPTIBLE_LANES
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def delta(content: str) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
    return b"data: " + json.dumps({"id": "s", "choices": [choice]}).encode() + b"\n\n"


def slow_stream() -> list[bytes]:
    """20 tokens, then a finish whose usage claims 1000 (an estimate would scale that)."""
    usage = {"prompt_tokens": 5, "completion_tokens": 1000, "total_tokens": 1005}
    finish = {"id": "s", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    end = b"data: " + json.dumps({**finish, "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n"
    return [delta("w") for _ in range(SLOW_PIECES)] + [end]


def streamed(model: str) -> Script:
    if model == "error":
        return Script([*EVENTS[:3], ERROR + b"\n\n", b"data: [DONE]\n\n"])
    if model == "garbage":
        noise = b": ping\n\ndata: {not json\n\nevent: x\ndata: [3]\n\n"
        return Script([e for event in EVENTS for e in (noise, event)])
    if model == "flood":  # text without end: over the bound long before it ends
        return Script([delta("x" * 100)] * 2000)
    if model == "empty":  # empty events without end: the stream's own bound
        return Script([b'data: {"choices":[{"index":0,"delta":{}}]}\n\n' * 100] * 1000)
    if model == "cut":  # the connection drops before the finish
        return Script(EVENTS[:4], after_chunks="abort")
    if model == "slow":
        return Script(slow_stream(), delay_s=0.1)
    return Script(list(EVENTS))


def script_for(request: SeenRequest) -> Script:
    if request.method != "POST":
        return Script([b'{"models": [], "data": []}'], content_type="application/json")
    body = json.loads(request.body)
    if body.get("stream"):
        return streamed(body["model"])
    return Script([DIRECT], content_type="application/json; charset=utf-8")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(script_for) as server:
        yield server


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("assembled-state")


@pytest.fixture(scope="module")
def gateway(
    upstream: ScriptedUpstream,
    state: Path,
    output_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    policy = tmp_path_factory.mktemp("assembled") / "policy.yaml"
    entry = upstream_entry("llama", upstream.url, "llamacpp", max_concurrency=1)
    write_policy(policy, [entry], LANES)
    env = {"LANEGATE_MAX_UPSTREAM_BODY_BYTES": str(LIMIT)}
    with running(start_gateway("gw-assembled", policy, output_dir, env=env, state=state)) as gw:
        yield gw


def post(gateway: Service, lane: str, model: str, rid: str | None = None) -> httpx.Response:
    headers = {"x-lane": lane, "x-request-id": rid or uuid.uuid4().hex}
    body = {"model": model, "messages": MESSAGES, "max_tokens": 8}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def seen(upstream: ScriptedUpstream, rid: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in upstream.requests if r.headers.get("x-request-id") == rid]


def test_the_client_gets_the_assembled_non_streamed_answer(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid = f"a-{uuid.uuid4().hex[:8]}"
    with sdk(gateway, "batch") as client:
        answer = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=8, extra_headers={"x-request-id": rid}
        )
    [sent] = seen(upstream, rid)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    expected = Assembler(Api.CHAT, LIMIT)
    expected.push(RECORDED)
    assert answer.model_dump(exclude_none=True) == json.loads(expected.body())
    raw = post(gateway, "batch", "tiny")
    assert raw.headers["content-type"] == "application/json; charset=utf-8"
    assert int(raw.headers["content-length"]) == len(raw.content)
    assert raw.content == expected.body()
    row = ledger_row(state, rid)
    assert row["completion_tokens"] == json.loads(EVENTS[-2][6:])["usage"]["completion_tokens"]
    assert row["ttft_ms"] is not None  # measured on the stream, as for a streamed request


def test_a_request_that_cannot_be_cut_goes_as_sent(
    gateway: Service, upstream: ScriptedUpstream
) -> None:
    rid = f"i-{uuid.uuid4().hex[:8]}"
    response = post(gateway, "interactive", "tiny", rid)
    assert response.content == DIRECT  # relayed unchanged
    [sent] = seen(upstream, rid)
    assert "stream" not in sent


def test_an_error_event_is_the_non_streamed_error(gateway: Service) -> None:
    client = sdk(gateway, "batch")
    with client, pytest.raises(openai.BadRequestError, match="context exceeded") as raised:
        client.chat.completions.create(model="error", messages=MESSAGES)
    assert raised.value.status_code == 400
    assert raised.value.response.json() == json.loads(ERROR[6:])


def test_garbage_between_events_is_ignored(gateway: Service) -> None:
    assert post(gateway, "batch", "garbage").content == post(gateway, "batch", "tiny").content


@pytest.mark.parametrize("model", ["flood", "empty"])
def test_an_endless_stream_is_bounded(gateway: Service, model: str) -> None:
    response = post(gateway, "batch", model)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_body_too_large"
    assert "LANEGATE_MAX_UPSTREAM_BODY_BYTES" in error["message"]
    assert post(gateway, "batch", "tiny").status_code == 200  # the next one is fine


def test_a_stream_cut_before_its_end_is_a_502(gateway: Service) -> None:
    response = post(gateway, "batch", "cut")
    assert response.status_code == 502
    assert "llama" in response.json()["error"]["message"]


def test_a_preempted_stream_is_cut_and_its_tokens_counted(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid = f"p-{uuid.uuid4().hex[:8]}"
    disconnects = len(upstream.disconnects)
    client = sdk(gateway, "batch")
    batch = InThread(
        client,
        lambda: client.chat.completions.create(
            model="slow", messages=MESSAGES, max_tokens=400, extra_headers={"x-request-id": rid}
        ),
    )
    before = upstream.chunks_sent
    wait_for(lambda: upstream.chunks_sent >= before + 3, "three tokens of the batch", batch)
    with sdk(gateway, "interactive") as chat:
        chat.chat.completions.create(model="tiny", messages=MESSAGES)
    answer = batch.result()
    assert answer.choices[0].message.content == "w" * SLOW_PIECES
    assert len(seen(upstream, rid)) == 2 and len(upstream.disconnects) == disconnects + 1
    row = ledger_row(state, rid)
    assert row["preemptions"] == 1 and row["completion_tokens"] == 1000
    # Counted (tokens arrived before the cut, at most the run's 20), not estimated from 1000.
    assert 1 <= row["preempted_tokens"] <= SLOW_PIECES
