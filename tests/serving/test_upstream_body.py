"""Which body goes upstream: streamed-and-assembled only for what llama.cpp would not stop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.policy.spec import UpstreamKind
from gateway.serving.rerun import Reruns
from gateway.serving.stream_events import Api
from gateway.serving.upstream_body import UpstreamBody, body_for

LLAMA = UpstreamKind.LLAMACPP


def sent(
    body: dict[str, Any],
    *,
    api: Api | None = Api.CHAT,
    kind: UpstreamKind = LLAMA,
    preemptible: bool = True,
    upstream_model: str | None = "m",
) -> UpstreamBody:
    raw = json.dumps(body).encode()
    stream = body.get("stream") is True
    return body_for(
        raw,
        body,
        body.get("model"),
        upstream_model,
        api=api,
        stream=stream,
        kind=kind,
        preemptible=preemptible,
    )


@pytest.mark.parametrize("api", [Api.CHAT, Api.COMPLETIONS])
@pytest.mark.parametrize("stream_field", [{}, {"stream": False}])
def test_a_preemptible_non_streamed_request_to_llamacpp_goes_as_a_stream(
    api: Api, stream_field: dict[str, Any]
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hé"}], **stream_field}
    out = sent(body, api=api)
    assert out.assemble and not out.strip_usage
    assert json.loads(out.raw) == {
        **body,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_the_upstream_model_id_and_the_clients_stream_options_are_kept() -> None:
    body = {"model": "alias", "prompt": "x", "stream_options": {"other": 1}}
    out = sent(body, api=Api.COMPLETIONS, upstream_model="real.gguf")
    assert json.loads(out.raw)["model"] == "real.gguf"
    assert json.loads(out.raw)["stream_options"] == {"other": 1, "include_usage": True}
    no_model = sent({"prompt": "x"}, api=Api.COMPLETIONS, upstream_model=None)
    assert no_model.assemble and "model" not in json.loads(no_model.raw)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"preemptible": False}, "cannot be cut"),
        ({"kind": UpstreamKind.OLLAMA}, "Ollama stops a closed request itself"),
        ({"kind": UpstreamKind.LMSTUDIO}, "unmeasured"),
        ({"api": Api.MESSAGES}, "not an OpenAI inference route"),
        ({"api": Api.RESPONSES}, "not one of the two routes"),
        ({"api": None}, "embeddings"),
    ],
)
def test_everything_else_goes_as_sent(changes: dict[str, Any], why: str) -> None:
    body = {"model": "m", "messages": []}
    out = sent(body, **changes)
    assert out == UpstreamBody(json.dumps(body).encode()), why


def test_a_streamed_request_is_never_assembled() -> None:
    body = {"model": "m", "messages": [], "stream": True}
    out = sent(body)
    assert not out.assemble and out.raw == json.dumps(body).encode()


def test_usage_is_still_asked_of_ollama_streams() -> None:
    out = sent({"model": "m", "messages": [], "stream": True}, kind=UpstreamKind.OLLAMA)
    assert out.strip_usage and not out.assemble
    assert json.loads(out.raw)["stream_options"] == {"include_usage": True}


def test_counted_cut_runs_replace_the_estimate() -> None:
    reruns = Reruns(max_tokens=100)
    reruns.cut(2.0, counted=37)
    reruns.final_s = 1.0
    assert reruns.tokens(completion_tokens=50) == 37  # counted, not 50 x 2 s / 1 s
    reruns.cut(1.0, counted=None)  # a run that was not streamed upstream: estimated
    assert reruns.tokens(completion_tokens=50) == 37 + 50
    assert reruns.preemptions == 2 and reruns.thrown_s == 3.0
