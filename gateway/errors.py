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
    └── ConfigError             a file or an answer lanegate reads is wrong (the ones that
        │                       were ValueErrors still are)
        ├── PolicyError              policy/loader.py: every problem, with file, line, field
        ├── ServiceFileError         ops/launchd.py: a launchd template or plist
        ├── AnswerError              upstreams/discovery.py: a model list we cannot read
        ├── SignalReadError          offload/signals.py: host signals we cannot read
        └── ProfileError             tools/simulator/profiles.py: a simulator profile

Private control-flow exceptions (`_Refused`, `_QueueTimeout`, `_Unanswered`) never leave their
module; the tools' own (`LadderUsageError`, `Unreachable`, the simulator's `ApiError`) are
`LanegateError`s too.

GatewayError, by status::

    GatewayError                      status  type / code
    ├── BadRequest                      400   invalid_request_error / invalid_json, missing_model
    ├── Unauthorized                    401   authentication_error / invalid_api_key
    ├── Forbidden                       403   permission_error / lane_not_allowed, admin_only
    ├── NotFound                        404   invalid_request_error / unknown_path, model_not_found
    ├── MethodNotAllowed                405   invalid_request_error / method_not_allowed
    ├── RequestTimeout                  408   invalid_request_error / body_timeout, header_timeout
    ├── PayloadTooLarge                 413   invalid_request_error / body_too_large
    ├── HeadersTooLarge                 431   invalid_request_error / headers_too_large
    ├── RateLimited                     429   rate_limit_error / lane_queue_full, token_budget, ...
    ├── UpstreamUnavailable             502   upstream_error / upstream_unreachable
    ├── ServiceUnavailable              503   service_unavailable / gateway_draining, no_upstream,
    │                                                             lane_removed
    └── UpstreamTimeout                 504   upstream_error / upstream_timeout

On `/v1/*` (and the gateway's own paths) the body is OpenAI's shape
`{"error": {"message", "type", "code", "param"}}`; on Ollama's native `/api/*` it is Ollama's
`{"error": "message"}`, with the same status code. Messages say what to do, not only what broke.
"""

from __future__ import annotations

import json
from enum import Enum


class ErrorShape(Enum):
    OPENAI = "openai"
    OLLAMA = "ollama"


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


class RetryElsewhere(UpstreamFault):
    """The upstream failed before anything reached the client: another upstream may serve it.

    Raised only when the caller said a retry is possible; `busy` marks a 503 (a full queue),
    which the circuit breaker counts apart from failures.
    """

    def __init__(self, detail: str, *, busy: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.busy = busy


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
        return error_body(shape, self.message, self.type, self.code, self.param)


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


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


def shape_for_path(path: str) -> ErrorShape:
    return ErrorShape.OLLAMA if path.startswith("/api/") else ErrorShape.OPENAI


def error_body(
    shape: ErrorShape, message: str, type_: str, code: str, param: str | None = None
) -> bytes:
    if shape is ErrorShape.OLLAMA:
        return json.dumps({"error": message}).encode()
    error = {"message": message, "type": type_, "code": code, "param": param}
    return json.dumps({"error": error}).encode()


def stream_error_event(shape: ErrorShape, error: GatewayError) -> bytes:
    """The last event of a stream that failed after it started (SSE, or NDJSON for Ollama)."""
    if shape is ErrorShape.OLLAMA:
        return error.body(shape) + b"\n"
    return b"data: " + error.body(shape) + b"\n\n"
