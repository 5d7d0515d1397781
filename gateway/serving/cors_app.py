"""The CORS layer around the gateway's ASGI app, installed only when an allowlist is set.

Decisions are `gateway.serving.cors` (pure); this wrapper answers preflights and adds the headers to
responses, for the relay paths and the control plane alike. With CORS off, `with_cors`
returns the app itself: no wrapper, no cost on the hot path. A request without an `Origin`
header (every non-browser client) passes straight through.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorShape, Forbidden
from gateway.serving.cors import (
    CorsPolicy,
    is_preflight,
    origin_of,
    parse_origins,
    preflight_headers,
    response_headers,
)


class CorsApp:
    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        origin = origin_of(headers)
        if origin is None:
            await self.app(scope, receive, send)
        elif is_preflight(scope["method"], headers):
            await self._preflight(origin, headers, send)
        else:
            await self.app(scope, receive, _adding(send, response_headers(self.policy, origin)))

    async def _preflight(
        self, origin: bytes, headers: list[tuple[bytes, bytes]], send: Send
    ) -> None:
        answer = preflight_headers(self.policy, origin, headers)
        if answer is not None:
            await send({"type": "http.response.start", "status": 204, "headers": answer})
            await send({"type": "http.response.body", "body": b""})
            return
        error = Forbidden(
            f"origin {origin.decode('latin-1')} may not call this gateway from a browser; "
            "the operator can add it to LANEGATE_CORS_ORIGINS",
            code="cors_origin_not_allowed",
        )
        body = error.body(ErrorShape.OPENAI)
        length = str(len(body)).encode()
        head = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": error.status, "headers": head})
        await send({"type": "http.response.body", "body": body})


def _adding(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_cors


def with_cors(app: ASGIApp, origins: str) -> ASGIApp:
    """`app` behind CORS for `origins` (LANEGATE_CORS_ORIGINS), or `app` itself if empty."""
    policy = parse_origins(origins)
    return app if policy is None else CorsApp(app, policy)
