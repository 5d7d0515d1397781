"""The relay: one client request → one upstream request, streamed back chunk by chunk.

This is the hot path, written as plain ASGI (no framework machinery per request or per
chunk). Per chunk it does: one measurement call (a cheap byte scan), one `send`. Streamed
bodies are never buffered, re-chunked or re-serialised; non-streamed bodies are read whole
(they are small, and a failure half-way can then still be a clean 502) and sent unchanged.

A request's id, timers and interruption live in its `Exchange` (gateway/exchange.py); the
relay turns an interruption's reason into the right answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.types import Receive, Scope, Send

from gateway.errors import (
    ErrorShape,
    GatewayError,
    PayloadTooLarge,
    RequestTimeout,
    RetryElsewhere,
    UpstreamTimeout,
    UpstreamUnavailable,
    stream_error_event,
)
from gateway.observe.measurement import RequestMeasurement, RequestRecord
from gateway.ops.drain import cut_error
from gateway.serving.event_framing import EventFramer
from gateway.serving.exchange import (
    BODY,
    CLIENT_LEFT,
    CLIENT_STALLED,
    DRAINING,
    FIRST_BYTE,
    Exchange,
    RequestIds,
)
from gateway.serving.request_body import RequestFacts, parse_request
from gateway.serving.routes import Route
from gateway.upstreams.client import UPSTREAM_ERRORS, UpstreamClient, UpstreamResponse

log = logging.getLogger("lanegate.relay")


# Response headers that belong to one hop, or to the gateway (CORS, server identity).
_DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"server",
        b"date",
        b"x-request-id",  # the gateway sets its own (the same id when the upstream echoed it)
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-headers",
        b"access-control-allow-methods",
        b"access-control-expose-headers",
    }
)
_STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson")


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError  # nobody to answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the request body is over the {limit // (1024 * 1024)} MiB limit "
                "(LANEGATE_MAX_BODY_BYTES); send smaller images or split the batch"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_error(send: Send, error: GatewayError, shape: ErrorShape, request_id: str) -> None:
    body = error.body(shape)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def upstream_headers(scope: Scope, request_id: str) -> dict[str, str]:
    """What the upstream sees of the client's headers: content negotiation only, no auth."""
    headers = {"x-request-id": request_id, "content-type": "application/json"}
    for name, value in scope["headers"]:
        if name in (b"accept", b"user-agent"):
            headers[name.decode()] = value.decode("latin-1")
    return headers


def response_headers(
    upstream: UpstreamResponse, request_id: str, upstream_name: str
) -> list[tuple[bytes, bytes]]:
    headers = [(k, v) for k, v in upstream.raw_headers if k.lower() not in _DROP_RESPONSE]
    headers.append((b"x-request-id", request_id.encode()))
    headers.append((b"x-lanegate-upstream", upstream_name.encode()))
    return headers


class Relay:
    """Forwards one request to the upstream client it is given, and measures it."""

    def __init__(
        self, *, max_body_bytes: int, clock: Callable[[], float], body_timeout_s: float = 60.0
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.body_timeout_s = body_timeout_s
        self.request_ids = RequestIds()

    async def read(
        self, route: Route, receive: Receive, exchange: Exchange
    ) -> tuple[bytes, RequestFacts]:
        # The exchange's one timer guards the upload first (re-armed for the upstream later).
        exchange.arm_body(self.body_timeout_s)
        try:
            raw = await read_body(receive, self.max_body_bytes)
        except asyncio.CancelledError:
            if exchange.reason != BODY or exchange.task is None:
                raise
            exchange.task.uncancel()
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s "
                "(LANEGATE_BODY_TIMEOUT)",
                code="body_timeout",
            ) from None
        finally:
            exchange.disarm()
        return raw, parse_request(route, raw)

    async def forward(
        self,
        route: Route,
        scope: Scope,
        send: Send,
        *,
        raw: bytes,
        client: UpstreamClient,
        exchange: Exchange,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
        retryable: bool = False,
    ) -> RequestRecord:
        """Relay one request; with `retryable`, a failure before any byte reached the client
        (connection refused or closed, a 502/503 answer) raises RetryElsewhere instead."""
        measurement = RequestMeasurement(route.api, exchange.received_at)
        framer: EventFramer | None = None
        timeouts = client.spec.timeouts
        exchange.arm(timeouts.first_byte_s, timeouts.idle_s)
        response: UpstreamResponse | None = None
        status = 502
        error: str | None = None
        failed = False
        try:
            body = raw if route.method not in ("GET", "HEAD") else None
            path = scope["path"]
            forwarded = upstream_headers(scope, exchange.request_id)
            response = await client.open(route.method, path, body, forwarded)
            status = response.status
            if retryable and status in (502, 503):
                raise RetryElsewhere(f"answered {status}", busy=status == 503)
            headers = response_headers(response, exchange.request_id, client.spec.name)
            headers.extend(extra_headers)
            content_type = response.content_type
            if status < 400 and content_type.startswith(_STREAM_TYPES):
                framer = EventFramer(ndjson=content_type.startswith(b"application/x-ndjson"))
                await self._stream(response, send, headers, exchange, measurement, framer)
            else:
                await self._whole(response, send, headers, exchange, measurement, route.method)
        except asyncio.CancelledError:
            if exchange.reason is None:
                raise
            if exchange.task is not None:
                exchange.task.uncancel()
            error = exchange.reason
            failed = error not in (CLIENT_LEFT, CLIENT_STALLED)
            if framer is not None:
                framer.discard()
            status = await self._interrupted(send, exchange, route.shape, client.spec.name, status)
        except UPSTREAM_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            failed = True
            if retryable and response is None:
                raise RetryElsewhere(error) from exc
            if framer is not None:
                framer.discard()
            failure = UpstreamUnavailable(
                f"upstream {client.spec.name} failed ({error or 'connection closed'}); "
                "check that it is running, or retry"
            )
            status = await self._fail(send, exchange, route.shape, failure, status)
        finally:
            exchange.disarm()
            if response is not None:
                await response.aclose()
        return measurement.finish(self.clock(), status=status, error=error, upstream_failed=failed)

    async def _stream(
        self,
        response: UpstreamResponse,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        measurement: RequestMeasurement,
        framer: EventFramer,
    ) -> None:
        # Headers go out as soon as the upstream's arrive, as the upstream itself would send
        # them: writing them at first-token time would put a second write on the TTFT path.
        await self._start(send, response.status, headers, exchange)
        clock = self.clock
        on_chunk = measurement.on_chunk
        push = framer.push
        async for chunk in response.chunks():
            if not chunk:
                continue
            now = clock()
            ready = push(chunk)
            if ready:
                exchange.sending_since = now
                await send({"type": "http.response.body", "body": ready, "more_body": True})
                exchange.sending_since = None
            # Measured after forwarding (with the arrival time): the scan is off the TTFT path.
            on_chunk(chunk, now)
            if exchange.first_byte_at is None:
                exchange.mark_first_byte(now)
            else:
                exchange.last_activity = now
        await send({"type": "http.response.body", "body": framer.flush()})
        exchange.done()

    @staticmethod
    async def _start(
        send: Send, status: int, headers: list[tuple[bytes, bytes]], exchange: Exchange
    ) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        exchange.headers_sent = True

    async def _whole(
        self,
        response: UpstreamResponse,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        exchange: Exchange,
        measurement: RequestMeasurement,
        method: str,
    ) -> None:
        chunks: list[bytes] = []
        async for chunk in response.chunks():
            now = self.clock()
            if exchange.first_byte_at is None:
                exchange.mark_first_byte(now)
            else:
                exchange.last_activity = now
            chunks.append(chunk)
        body = b"".join(chunks)
        measurement.on_body(body, self.clock())
        await self._start(send, response.status, headers, exchange)
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        exchange.done()

    async def _interrupted(
        self, send: Send, exchange: Exchange, shape: ErrorShape, upstream: str, status: int
    ) -> int:
        if exchange.reason in (CLIENT_LEFT, CLIENT_STALLED):
            return 499  # nginx's code for "client closed request"
        if exchange.reason == DRAINING:
            return await self._fail(send, exchange, shape, cut_error(), status)
        waited = exchange.first_byte_s if exchange.reason == FIRST_BYTE else exchange.idle_s
        what = "first byte" if exchange.reason == FIRST_BYTE else "next chunk"
        failure = UpstreamTimeout(
            f"upstream {upstream} sent no {what} within {waited:g} s; it may be overloaded or "
            "loading a model (raise timeouts.first_byte/idle in the policy if this is expected)"
        )
        return await self._fail(send, exchange, shape, failure, status)

    async def _fail(
        self, send: Send, exchange: Exchange, shape: ErrorShape, failure: GatewayError, status: int
    ) -> int:
        try:
            if exchange.headers_sent:
                event = stream_error_event(shape, failure)
                await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                exchange.done()
                return status
            await send_error(send, failure, shape, exchange.request_id)
            exchange.done()
        except OSError:
            log.debug("request %s: client gone while sending the error", exchange.request_id)
        return failure.status
