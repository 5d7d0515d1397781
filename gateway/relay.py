"""The relay: one client request → one upstream request, streamed back chunk by chunk.

This is the hot path, written as plain ASGI (no framework machinery per request or per
chunk). Per chunk it does: one measurement call (a cheap byte scan), one `send`. Streamed
bodies are never buffered, re-chunked or re-serialised; non-streamed bodies are read whole
(they are small, and a failure half-way can then still be a clean 502) and sent unchanged.

Cancellation has one mechanism: `Exchange.interrupt(reason)` cancels the handler task while
the exchange is active; the handler turns the reason into the right answer (nothing for a
client that left, 504 or a final stream error event for a timeout). A disconnect watcher task
and one timer per request (first byte, then idle gap) are its only sources.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Sequence

from starlette.types import Receive, Scope, Send

from gateway.drain import DRAINING_CODE, cut_error
from gateway.errors import (
    ErrorShape,
    GatewayError,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
    stream_error_event,
)
from gateway.event_framing import EventFramer
from gateway.measurement import RequestMeasurement, RequestRecord
from gateway.request_body import RequestFacts, parse_request
from gateway.routes import Route
from gateway.upstream_client import UPSTREAM_ERRORS, UpstreamClient, UpstreamResponse

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
CLIENT_LEFT = "client_disconnected"
# A client that takes no bytes for the idle timeout: treated as gone, so it cannot hold a
# slot (and an upstream) forever, and the upstream is not blamed for the silence.
CLIENT_STALLED = "client_stalled"
FIRST_BYTE = "first_byte_timeout"
IDLE = "idle_timeout"
DRAINING = DRAINING_CODE  # the drain timeout passed: end with the stream error event
BODY = "body_timeout"


class RetryElsewhere(Exception):
    """The upstream failed before anything reached the client: another upstream may serve it.

    Raised only when the caller said a retry is possible; `busy` marks a 503 (a full queue),
    which the circuit breaker counts apart from failures.
    """

    def __init__(self, detail: str, *, busy: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.busy = busy


class Exchange:
    """The state of one relayed request; the only mutable thing the relay shares per request.

    Lives from the moment the body is read (so a client leaving while queued is noticed) to
    the end of the response. Times come from the gateway's clock; the loop only schedules.
    """

    __slots__ = (
        "active",
        "clock",
        "first_byte_at",
        "first_byte_s",
        "headers_sent",
        "idle_s",
        "last_activity",
        "loop",
        "reason",
        "received_at",
        "request_id",
        "sending_since",
        "task",
        "timer",
        "watcher",
    )

    def __init__(self, request_id: str, received_at: float, clock: Callable[[], float]) -> None:
        self.request_id = request_id
        self.received_at = received_at
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.active = True
        self.reason: str | None = None
        self.headers_sent = False
        self.first_byte_at: float | None = None
        self.last_activity = received_at
        self.sending_since: float | None = None  # set while a send waits on the client
        self.first_byte_s = self.idle_s = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Future[None] | None = None

    def watch(self, receive: Receive) -> None:
        """Notice the client leaving from the handler's first wait on (queued, or relaying).

        The watcher task is made when the handler first yields to the loop: on the fast path
        that is after the request went upstream, so making it is off the TTFT path.
        """
        self.loop.call_soon(self._start_watcher, receive)

    def _start_watcher(self, receive: Receive) -> None:
        if self.active:
            self.watcher = asyncio.ensure_future(_watch_disconnect(receive, self))

    def arm(self, first_byte_s: float, idle_s: float) -> None:
        """Start the upstream timer: first byte within `first_byte_s`, then gaps < `idle_s`."""
        self.first_byte_s, self.idle_s = first_byte_s, idle_s
        self.disarm()  # a retry on another upstream re-arms the same exchange
        self.timer = self.loop.call_later(first_byte_s, self._check_deadline)

    def arm_body(self, body_s: float) -> None:
        """The client must finish sending its body within `body_s` (a slow upload → 408)."""
        self.timer = self.loop.call_later(body_s, self.interrupt, BODY)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def interrupt(self, reason: str) -> None:
        if self.active and self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def close(self) -> None:
        self.active = False
        self.disarm()
        if self.watcher is not None:
            self.watcher.cancel()

    def _check_deadline(self) -> None:
        # One timer per request, re-armed lazily: chunks only write `last_activity`.
        if self.sending_since is not None:  # waiting on the client, not on the upstream
            stalled = self.clock() - self.sending_since
            if stalled >= self.idle_s:
                self.interrupt(CLIENT_STALLED)
            else:  # the upstream gets a whole idle window once the client takes the bytes
                self.last_activity = self.clock()
                self.timer = self.loop.call_later(self.idle_s - stalled, self._check_deadline)
            return
        if self.first_byte_at is None:
            self.interrupt(FIRST_BYTE)
            return
        left = self.last_activity + self.idle_s - self.clock()
        if left <= 0:
            self.interrupt(IDLE)
        else:
            self.timer = self.loop.call_later(left, self._check_deadline)

    def mark_first_byte(self, now: float) -> None:
        self.first_byte_at = now
        self.last_activity = now
        self.disarm()
        self.timer = self.loop.call_later(self.idle_s, self._check_deadline)


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


class RequestIds:
    """Request ids: the client's `X-Request-Id` when it sent a sane one, else a fresh id.

    A fresh id is a random per-process prefix and a counter, 32 hex digits like a uuid4's,
    unique across restarts and processes; ~1 µs, where `uuid4` costs a `getrandom` syscall
    per request on the TTFT path (see docs/performance.md).
    """

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count(1).__next__

    def of(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                return str(value.decode("ascii"))
        return f"{self._prefix}{self._next():016x}"


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
                return status
            await send_error(send, failure, shape, exchange.request_id)
        except OSError:
            log.debug("request %s: client gone while sending the error", exchange.request_id)
        return failure.status


async def _watch_disconnect(receive: Receive, exchange: Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.interrupt(CLIENT_LEFT)
            return
