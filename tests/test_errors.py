"""Error bodies: OpenAI's shape on /v1 and the gateway's own paths, Ollama's on /api."""

from __future__ import annotations

import json

from gateway.errors import (
    ErrorShape,
    RateLimited,
    UpstreamTimeout,
    shape_for_path,
    stream_error_event,
)


def test_openai_shape() -> None:
    error = RateLimited("lane full; retry in 3 s", code="lane_queue_full")
    assert json.loads(error.body(ErrorShape.OPENAI)) == {
        "error": {
            "message": "lane full; retry in 3 s",
            "type": "rate_limit_error",
            "code": "lane_queue_full",
            "param": None,
        }
    }
    assert error.status == 429


def test_ollama_shape() -> None:
    error = UpstreamTimeout("slow")
    assert json.loads(error.body(ErrorShape.OLLAMA)) == {"error": "slow"}


def test_shape_by_path() -> None:
    assert shape_for_path("/api/chat") is ErrorShape.OLLAMA
    assert shape_for_path("/v1/chat/completions") is ErrorShape.OPENAI
    assert shape_for_path("/admin/status") is ErrorShape.OPENAI


def test_stream_error_events() -> None:
    error = UpstreamTimeout("slow")
    sse = stream_error_event(ErrorShape.OPENAI, error)
    assert sse.startswith(b"data: {") and sse.endswith(b"\n\n")
    assert json.loads(sse[6:])["error"]["code"] == "upstream_timeout"
    ndjson = stream_error_event(ErrorShape.OLLAMA, error)
    assert ndjson.endswith(b"\n") and json.loads(ndjson) == {"error": "slow"}
