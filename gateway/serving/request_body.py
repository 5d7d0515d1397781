"""Read what the gateway needs from a client's JSON body, and nothing more. Pure.

The body itself is forwarded unchanged (except where a lane rewrites the model); this module
only validates it enough to refuse garbage before it reaches an upstream, and pulls out the
facts that classification and budgets use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, UnsupportedMediaType
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
    _check_model(model)
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


# Fields that bound a completion, by the API that obeys them: OpenAI's (and the servers that
# copy it: llama.cpp, LM Studio, mlx_lm, Ollama's /v1) top-level fields, llama.cpp's own
# n_predict, and Ollama's options.num_predict on /api/*. A request is reserved the largest one
# present, so a client cannot declare 1 in a field its upstream ignores and get 5,000 from the
# one it obeys. -1 (and -2) mean "until done" where the upstream allows it: no declaration.
_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_OPEN_ENDED_FIELDS = ("n_predict",)
MAX_TOKENS_VALUE = 10_000_000  # more than any local model's context; a larger one is an error
MAX_MODEL_CHARS = 256  # longer model names are refused before anything logs or stores them


def _max_tokens(body: dict[str, Any]) -> int | None:
    options = body.get("options")
    found: list[tuple[str, Any, int]] = [(name, body.get(name), 0) for name in _LIMIT_FIELDS]
    found += [(name, body.get(name), -2) for name in _OPEN_ENDED_FIELDS]
    if isinstance(options, dict):
        found.append(("options.num_predict", options.get("num_predict"), -2))
    declared = [_token_count(name, value, lowest) for name, value, lowest in found]
    sizes = [value for value in declared if value is not None and value >= 0]
    return max(sizes) if sizes else None


def _token_count(name: str, value: Any, lowest: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(
            f"`{name}` must be a whole number of tokens, e.g. 512",
            code="invalid_max_tokens",
            param=name,
        )
    if not lowest <= value <= MAX_TOKENS_VALUE:
        raise BadRequest(
            f"`{name}` must be between {max(lowest, 0)} and {MAX_TOKENS_VALUE}",
            code="invalid_max_tokens",
            param=name,
        )
    return value


def _check_model(model: Any) -> None:
    if isinstance(model, str) and len(model) > MAX_MODEL_CHARS:
        raise BadRequest(
            f"the model name is {len(model)} characters; at most {MAX_MODEL_CHARS} are allowed",
            code="model_too_long",
            param="model",
        )


# What a page on another site may POST without a CORS preflight (the Fetch standard's
# "CORS-safelisted" request content types).
_SIMPLE_TYPES = (b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data")


def check_body_type(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse (415) a browser's cross-site "simple" POST: a text/plain or form body with an
    `Origin`. Browsers send those without asking the gateway first, so a page on any site
    could otherwise make a visitor's local gateway run inference. Clients that are not
    browsers send no Origin (`curl -d` with its form content type still works)."""
    content_type = origin = None
    for name, value in headers:
        if name == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif name == b"origin":
            origin = value
    if origin is not None and content_type is not None and content_type.startswith(_SIMPLE_TYPES):
        raise UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json` (a browser page on "
            "another origin may not post text or forms here)",
            code="unsupported_media_type",
        )
