"""The gateway's own errors, and how each is shown to a client.

One tree: everything lanegate raises on purpose is a `LanegateError`. Its branches::

    LanegateError
    ├── GatewayError            answered to a client, in its API's shape (below)
    ├── UpstreamFault           an upstream failed us (not a bug of ours, not the client's)
    │   ├── UpstreamConnectionError  (also a ConnectionError: `except OSError` catches it)
    │   │   ├── UpstreamConnectFailed     connect refused / unreachable / timed out
    │   │   ├── UpstreamDisconnected      closed before or while answering
    │   │   └── UpstreamProtocolError     not HTTP/1.1 we can parse
    │   └── RetryElsewhere       failed before any byte reached the client: try another
    ├── Preempted               its slot went to a chat before any byte reached the client:
    │                           the flow runs it again (not the upstream's fault)
    ├── GatewayOutOfFiles       EMFILE/ENFILE opening an upstream socket: ours, not the upstream's
    └── ConfigError             a file or an answer lanegate reads is wrong (the ones that
        │                       were ValueErrors still are)
        ├── PolicyError              policy/loader.py: every problem, with file, line, field
        ├── ServiceFileError         ops/launchd.py: a launchd template or plist
        ├── AnswerError              upstreams/discovery.py: a model list we cannot read
        ├── SignalReadError          offload/signals.py: host signals we cannot read
        └── ProfileError             tools/simulator/profiles.py: a simulator profile

Private control-flow exceptions (`_Refused`, `_QueueTimeout`, `_Unanswered`) never leave their
module; the tools' own (`LadderUsageError`, `Unreachable`, `SigningError`, `PlotUnavailable`,
the simulator's `ApiError`) are `LanegateError`s too.

GatewayError, by status::

    GatewayError                      status  type / code
    ├── BadRequest                      400   invalid_request_error / invalid_json, missing_model
    ├── Unauthorized                    401   authentication_error / invalid_api_key
    ├── Forbidden                       403   permission_error / lane_not_allowed, admin_only
    ├── NotFound                        404   invalid_request_error / unknown_path, model_not_found
    ├── MethodNotAllowed                405   invalid_request_error / method_not_allowed
    ├── RequestTimeout                  408   invalid_request_error / body_timeout, header_timeout
    ├── PayloadTooLarge                 413   invalid_request_error / body_too_large
    ├── UnsupportedMediaType            415   invalid_request_error / unsupported_media_type
    ├── HeadersTooLarge                 431   invalid_request_error / headers_too_large
    ├── RateLimited                     429   rate_limit_error / lane_queue_full, token_budget, ...
    ├── UpstreamUnavailable             502   upstream_error / upstream_unreachable,
    │                                         upstream_body_too_large
    ├── ServiceUnavailable              503   service_unavailable / gateway_draining, no_upstream,
    │                                                             gateway_out_of_files,
    │                                                             lane_removed
    └── UpstreamTimeout                 504   upstream_error / upstream_timeout

On `/v1/*` (and the gateway's own paths) the body is OpenAI's shape
`{"error": {"message", "type", "code", "param"}}`; on Ollama's native `/api/*` it is Ollama's
`{"error": "message"}`; on Anthropic's `/v1/messages*` it is Anthropic's
`{"type": "error", "error": {"type", "message"}}` with Anthropic's type for the status
(`ANTHROPIC_TYPES`), the same status code everywhere. Messages say what to do, not only what
broke.
"""

from __future__ import annotations

import json
from enum import Enum


class ErrorShape(Enum):
    OPENAI = "openai"
    OLLAMA = "ollama"
    ANTHROPIC = "anthropic"


# Anthropic's error types by HTTP status (docs.anthropic.com/en/api/errors); Anthropic uses
# invalid_request_error for 4xx codes it does not list, and overloaded_error (its 529) is what
# its SDKs expect when a server cannot take the request now.
ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
ANTHROPIC_PREFIX = "/v1/messages"


class LanegateError(Exception):
    """The root of every error lanegate raises on purpose."""


class UpstreamFault(LanegateError):
    """An upstream failed us."""


class UpstreamConnectionError(UpstreamFault, ConnectionError):
    """The connection to an upstream failed (an OSError, so one `except` catches all)."""


class UpstreamConnectFailed(UpstreamConnectionError):
    pass


class UpstreamDisconnected(UpstreamConnectionError):
    pass


class UpstreamProtocolError(UpstreamConnectionError):
    pass


class GatewayOutOfFiles(LanegateError, OSError):
    """This process (not the upstream) could not open a socket: EMFILE or ENFILE. Not an
    `UpstreamFault`: the breaker must not blame the upstream for it (the relay answers 503
    `gateway_out_of_files`)."""


class RetryElsewhere(UpstreamFault):
    """The upstream failed before anything reached the client: another upstream may serve it.

    Raised only when the caller said a retry is possible; `busy` marks a 503 (a full queue),
    which the circuit breaker counts apart from failures.
    """

    def __init__(self, detail: str, *, busy: bool = False, answered: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.busy = busy
        self.answered = answered  # an HTTP answer (alive, 502/503), not a connection failure


class Preempted(LanegateError):
    """The relay's answer to a preemption (`Exchange.preempt`): the upstream request was cut
    (its connection closed, so the engine stops generating) before anything reached the
    client. Not an `UpstreamFault`: the router counts the attempt abandoned, not failed.
    `counted`: the tokens the cut run had sent (a stream assembled for its client), else None."""

    def __init__(self, message: str, *, counted: int | None = None) -> None:
        super().__init__(message)
        self.counted = counted


class ConfigError(LanegateError):
    """A file or an answer that lanegate reads is wrong."""


class GatewayError(LanegateError):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, shape: ErrorShape) -> bytes:
        return error_body(shape, self.message, self.type, self.code, self.param, self.status)


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "body_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"


class UpstreamUnavailable(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamBodyTooLarge(UpstreamUnavailable):
    code = "upstream_body_too_large"


# Codes of relay outcomes that say nothing about an upstream's health (its breaker skips them).
OUT_OF_FILES = "gateway_out_of_files"
NOT_THE_UPSTREAMS = frozenset({OUT_OF_FILES, UpstreamBodyTooLarge.code})


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


def shape_for_path(path: str) -> ErrorShape:
    if path.startswith("/api/"):
        return ErrorShape.OLLAMA
    if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
        return ErrorShape.ANTHROPIC
    return ErrorShape.OPENAI


def anthropic_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status."""
    known = ANTHROPIC_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(
    shape: ErrorShape,
    message: str,
    type_: str,
    code: str,
    param: str | None = None,
    status: int = 400,
) -> bytes:
    if shape is ErrorShape.OLLAMA:
        return json.dumps({"error": message}).encode()
    if shape is ErrorShape.ANTHROPIC:
        detail = {"type": anthropic_type(status), "message": message}
        return json.dumps({"type": "error", "error": detail}).encode()
    error = {"message": message, "type": type_, "code": code, "param": param}
    return json.dumps({"error": error}).encode()


def stream_error_event(shape: ErrorShape, error: GatewayError) -> bytes:
    """The last event of a stream that failed after it started (SSE, or NDJSON for Ollama;
    Anthropic's streams name it `event: error`)."""
    if shape is ErrorShape.OLLAMA:
        return error.body(shape) + b"\n"
    if shape is ErrorShape.ANTHROPIC:
        return b"event: error\ndata: " + error.body(shape) + b"\n\n"
    return b"data: " + error.body(shape) + b"\n\n"
