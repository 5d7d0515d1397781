"""The relay: one client request → one upstream request, streamed back chunk by chunk.

This is the hot path, written as plain ASGI (no framework machinery per request or per
chunk). Per chunk it does: one measurement call (a cheap byte scan), one `send`. Streamed
bodies are never buffered, re-chunked or re-serialised; non-streamed bodies are read whole
(so a failure half-way can still be a clean 502) up to `LANEGATE_MAX_UPSTREAM_BODY_BYTES`
(beyond it: 502 `upstream_body_too_large`), and sent unchanged; a request the flow streams
upstream only so that a preemption stops it is answered whole (`serving.assembled`). Of the
upstream's headers
only an allow-list reaches the client (`upstream_headers`); messages name an upstream by its
policy name, never its address.

A request's id, timers and interruption live in its `Exchange` (gateway/exchange.py); the
relay turns an interruption's reason into the right answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial

from starlette.types import Receive, Scope, Send

from gateway.errors import (
    OUT_OF_FILES,
    ErrorShape,
    GatewayError,
    GatewayOutOfFiles,
    PayloadTooLarge,
    Preempted,
    RequestTimeout,
    RetryElsewhere,
    ServiceUnavailable,
    UpstreamBodyTooLarge,
    UpstreamConnectionError,
    UpstreamTimeout,
    UpstreamUnavailable,
    stream_error_event,
)
from gateway.observe.measurement import RequestMeasurement, RequestRecord
from gateway.ops.drain import cut_error
from gateway.serving.assemble import Assembler
from gateway.serving.assembled import read_assembled, send_assembled, too_large
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
from gateway.serving.routes import NEWER_APIS, Route, not_served
from gateway.serving.trace import TraceContext, trace_context
from gateway.serving.upstream_headers import relayed_headers
from gateway.upstreams.client import UPSTREAM_ERRORS, UpstreamClient, UpstreamResponse

log = logging.getLogger("lanegate.relay")


_STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson")


_RETRY_SOON = {"retry-after": "1"}


def describe(exc: BaseException, upstream: str) -> str:
    """What a client, the breaker's reason and the ledger may see of an upstream failure: our
    own client's messages (they name the upstream by its policy name), else the exception's
    type. The full text (addresses included) goes to the gateway's log."""
    if isinstance(exc, UpstreamConnectionError):
        return f"{type(exc).__name__}: {exc}"
    log.info("upstream %s: %s: %s", upstream, type(exc).__name__, exc)
    return type(exc).__name__


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
    context = False
    for name, value in scope["headers"]:
        if name in (b"accept", b"user-agent"):
            headers[name.decode()] = value.decode("latin-1")
        elif name in _CONTEXT:
            context = True
    if context:  # rare: parsed only when a client sent any of them
        headers.update(context_headers(scope))
    return headers


# Anthropic clients say which API version (and beta features) they speak; servers that
# implement the Messages API read them, so they go upstream as sent (bounded in size).
_ANTHROPIC_HEADERS = frozenset({b"anthropic-version", b"anthropic-beta"})
_CONTEXT = _ANTHROPIC_HEADERS | {b"traceparent", b"tracestate"}
_MAX_ANTHROPIC_HEADER = 256
_TRACE = "lanegate.trace"  # where the scope keeps the request's parsed trace context


def context_headers(scope: Scope) -> dict[str, str]:
    """The client's W3C trace context (if valid) and Anthropic version headers."""
    trace = trace_of(scope)
    out = trace.headers() if trace is not None else {}
    for name, value in scope["headers"]:
        if name in _ANTHROPIC_HEADERS and 0 < len(value) <= _MAX_ANTHROPIC_HEADER:
            out[name.decode()] = value.decode("latin-1")
    return out


def trace_of(scope: Scope) -> TraceContext | None:
    """The request's trace context, parsed once (the relay forwards it, the record logs it)."""
    if _TRACE not in scope:
        scope[_TRACE] = trace_context(scope["headers"])
    found: TraceContext | None = scope[_TRACE]
    return found


def response_headers(
    upstream: UpstreamResponse, request_id: str, upstream_name: str
) -> list[tuple[bytes, bytes]]:
    headers = relayed_headers(upstream.raw_headers)
    headers.append((b"x-request-id", request_id.encode()))
    headers.append((b"x-lanegate-upstream", upstream_name.encode()))
    return headers


class Relay:
    """Forwards one request to the upstream client it is given, and measures it."""

    def __init__(
        self,
        *,
        max_body_bytes: int,
        clock: Callable[[], float],
        body_timeout_s: float = 60.0,
        max_upstream_body_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_upstream_body_bytes = max_upstream_body_bytes
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
        strip_usage: bool = False,
        assemble: bool = False,
    ) -> RequestRecord:
        """Relay one request; with `retryable`, a failure before any byte reached the client
        (connection refused or closed, a 502/503 answer) raises RetryElsewhere instead. With
        `strip_usage` the usage event the gateway asked for is measured, not forwarded; with
        `assemble` a stream is answered whole (serving.assembled)."""
        measurement = RequestMeasurement(route.api, exchange.received_at)
        framer: EventFramer | None = None
        timeouts = client.spec.timeouts
        exchange.arm(timeouts.first_byte_s, timeouts.idle_s)
        response: UpstreamResponse | None = None
        status = 502
        error: str | None = None
        failed = False
        name = client.spec.name
        assembler = (
            Assembler(route.api, self.max_upstream_body_bytes) if assemble and route.api else None
        )
        try:
            body = raw if route.method not in ("GET", "HEAD") else None
            path = scope["path"]
            forwarded = upstream_headers(scope, exchange.request_id)
            response = await client.open(route.method, path, body, forwarded)
            status = response.status
            if retryable and status in (502, 503):
                raise RetryElsewhere(f"answered {status}", busy=status == 503, answered=True)
            headers = response_headers(response, exchange.request_id, client.spec.name)
            headers.extend(extra_headers)
            content_type = response.content_type
            if status == 404 and route.family in NEWER_APIS and b"json" not in content_type:
                # a bare 404 page: the server has no such route (an Ollama before 0.14)
                refusal = not_served(route, client.spec, response.status)
                status = await self._fail(send, exchange, route.shape, refusal, status)
                error = refusal.code
            elif status < 400 and content_type.startswith(_STREAM_TYPES) and assembler:
                await read_assembled(response, exchange, measurement, self.clock, assembler, name)
                start = partial(self._start, send, exchange=exchange)
                status, error = await send_assembled(send, headers, assembler, start, name)
                exchange.done()
            elif status < 400 and content_type.startswith(_STREAM_TYPES):
                ndjson = content_type.startswith(b"application/x-ndjson")
                framer = EventFramer(ndjson=ndjson, strip_usage=strip_usage)
                await self._stream(response, send, headers, exchange, measurement, framer)
            else:
                await self._whole(
                    response, send, headers, exchange, measurement, route.method, client.spec.name
                )
        except asyncio.CancelledError:
            if exchange.reason is None:
                raise
            if exchange.task is not None:
                exchange.task.uncancel()
            if exchange.take_preemption():  # the flow sends it again
                counted = measurement.output_events() if assembler else None
                raise Preempted(f"preempted on {name}", counted=counted) from None
            error = exchange.reason
            failed = error not in (CLIENT_LEFT, CLIENT_STALLED)
            if framer is not None:
                framer.discard()
            status = await self._interrupted(send, exchange, route.shape, client.spec.name, status)
        except GatewayOutOfFiles as exc:  # ours, not the upstream's: never a RetryElsewhere
            log.error("request %s: %s", exchange.request_id, exc.strerror)
            error = OUT_OF_FILES
            ours = ServiceUnavailable(str(exc.strerror), code=error, headers=_RETRY_SOON)
            status = await self._fail(send, exchange, route.shape, ours, status)
        except UpstreamBodyTooLarge as too_large:
            error = too_large.code
            status = await self._fail(send, exchange, route.shape, too_large, status)
        except UPSTREAM_ERRORS as exc:
            error = describe(exc, client.spec.name)
            failed = True
            if retryable and response is None:
                raise RetryElsewhere(error) from exc
            if framer is not None:
                framer.discard()
            failure = UpstreamUnavailable(
                f"upstream {client.spec.name} failed ({error}); check that it is running, or retry"
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
        await self._start(send, response.status, headers, exchange=exchange)
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
        send: Send, status: int, headers: list[tuple[bytes, bytes]], *, exchange: Exchange
    ) -> None:
        exchange.preemptible = False  # before the first await: no preemption from here on
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
        upstream: str,
    ) -> None:
        chunks: list[bytes] = []
        size, limit = 0, self.max_upstream_body_bytes
        async for chunk in response.chunks():
            size += len(chunk)
            if size > limit:
                raise too_large(upstream, limit)
            now = self.clock()
            if exchange.first_byte_at is None:
                exchange.mark_first_byte(now)
            else:
                exchange.last_activity = now
            chunks.append(chunk)
        body = b"".join(chunks)
        measurement.on_body(body, self.clock())
        await self._start(send, response.status, headers, exchange=exchange)
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
        exchange.preemptible = False  # an answer goes out now
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
