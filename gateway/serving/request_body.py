"""Read what the gateway needs from a client's JSON body, and nothing more. Pure.

The body itself is forwarded unchanged (except where a lane rewrites the model); this module
only validates it enough to refuse garbage before it reaches an upstream, and pulls out the
facts that classification and budgets use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest
from gateway.serving.routes import Route
from gateway.serving.stream_parser import Api


@dataclass(frozen=True, slots=True)
class RequestFacts:
    model: str | None
    stream: bool
    max_tokens: int | None
    body: dict[str, Any] | None  # None for bodiless requests (GET, HEAD)


def parse_request(route: Route, raw: bytes) -> RequestFacts:
    if route.method in ("GET", "HEAD"):
        return RequestFacts(model=None, stream=False, max_tokens=None, body=None)
    body = _json_object(raw)
    model = body.get("model")
    if route.needs_model and (not isinstance(model, str) or not model.strip()):
        raise BadRequest(
            'the request body needs a `model` string, e.g. {"model": "llama3.1:8b", ...}',
            code="missing_model",
            param="model",
        )
    stream = body.get("stream", route.stream_default)
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be true or false", code="invalid_stream", param="stream")
    max_tokens = _max_tokens(body)
    if route.api is Api.MESSAGES and not max_tokens:
        # Anthropic's API requires it; without it llama-server generates until the context
        # is full, which no budget reservation could bound.
        raise BadRequest(
            "the Messages API needs `max_tokens`, a positive integer (e.g. 1024)",
            code="missing_max_tokens",
            param="max_tokens",
        )
    return RequestFacts(
        model=model if isinstance(model, str) else None,
        stream=stream,
        max_tokens=max_tokens,
        body=body,
    )


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BadRequest("the request body is not UTF-8 text", code="invalid_json") from exc
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise BadRequest("the request body nests too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return body


def _max_tokens(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    candidates = (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        body.get("max_output_tokens"),
        options.get("num_predict") if isinstance(options, dict) else None,
    )
    for value in candidates:
        # Negative values (Ollama's num_predict -1 = "until done") say nothing about size:
        # the lane's default applies, and a budget is never reserved a negative amount.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
