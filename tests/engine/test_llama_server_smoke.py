"""Smoke test: the cached llama-server and the tiny model really serve chat completions.

The first run builds llama-server from the llama-cpp-python sdist (~4-6 minutes
on 2 cores), so the test carries its own generous timeout.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from .llama_server import LlamaServer, ensure_llama_server, ensure_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def small_server() -> Iterator[LlamaServer]:
    binary = ensure_llama_server()
    model = ensure_model("small")
    with LlamaServer(binary, model, parallel=2, ctx=2048) as server:
        yield server


def _post(server: LlamaServer, path: str, body: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(
        server.url(path),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )


def test_chat_completion_non_streamed(small_server: LlamaServer) -> None:
    req = _post(
        small_server,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        data = json.load(resp)
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    # The tiny model can never emit EOS, so it always runs to max_tokens.
    assert choice["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 8
    assert data["usage"]["prompt_tokens"] > 0


def test_chat_completion_streamed(small_server: LlamaServer) -> None:
    req = _post(
        small_server,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Count to three"}],
            "max_tokens": 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    data_lines: list[str] = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/event-stream"
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("data: "):
                data_lines.append(line)
    assert data_lines, "no SSE data lines"
    assert data_lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in data_lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 8


def test_health_and_slots(small_server: LlamaServer) -> None:
    with urllib.request.urlopen(small_server.url("/health"), timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(small_server.url("/slots"), timeout=5) as resp:
        slots = json.load(resp)
    assert len(slots) == 2
