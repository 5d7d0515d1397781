"""The relay's path for a request streamed upstream but answered whole (`serving.assemble`).

The upstream's chunks go through the same framing (`EventFramer`) and measurement (the stream
scanner: TTFT at the first token, gaps, usage or counted tokens) as a relayed stream, but are
folded into the non-streamed JSON answer instead of being forwarded. Nothing reaches the
client before the upstream's stream ended, so the request stays preemptible until then; its
headers are then the non-streamed ones (`application/json`, the answer's length).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import Send

from gateway.errors import UpstreamBodyTooLarge, UpstreamConnectionError
from gateway.observe.measurement import RequestMeasurement
from gateway.serving.assemble import Assembler, Incomplete, TooLarge
from gateway.serving.event_framing import EventFramer
from gateway.serving.exchange import Exchange
from gateway.upstreams.client import UpstreamResponse

Headers = list[tuple[bytes, bytes]]
_REPLACED = (b"content-type", b"content-length")
_JSON = (b"content-type", b"application/json; charset=utf-8")


def too_large(upstream: str, limit: int) -> UpstreamBodyTooLarge:
    """The error of an upstream answer over LANEGATE_MAX_UPSTREAM_BODY_BYTES, however sent."""
    return UpstreamBodyTooLarge(
        f"upstream {upstream} sent a non-streamed body over {limit} bytes "
        "(LANEGATE_MAX_UPSTREAM_BODY_BYTES); ask for a stream, or send fewer inputs per request"
    )


async def read_assembled(
    response: UpstreamResponse,
    exchange: Exchange,
    measurement: RequestMeasurement,
    clock: Callable[[], float],
    assembler: Assembler,
    upstream: str,
) -> None:
    """Read the whole stream into `assembler` (or up to its error event)."""
    framer = EventFramer(ndjson=False)
    try:
        async for chunk in response.chunks():
            if not chunk:
                continue
            now = clock()
            assembler.push(framer.push(chunk))
            measurement.on_chunk(chunk, now)
            if exchange.first_byte_at is None:
                exchange.mark_first_byte(now)
            else:
                exchange.last_activity = now
            if assembler.error is not None:
                return
        assembler.push(framer.flush())  # an unterminated last event
    except TooLarge:
        raise too_large(upstream, assembler.limit) from None


async def send_assembled(
    send: Send,
    headers: Headers,
    assembler: Assembler,
    start: Callable[[int, Headers], Awaitable[None]],
    upstream: str,
) -> tuple[int, str | None]:
    """Send the assembled answer (or the error event's answer): (status, error message)."""
    error = assembler.error
    if error is not None:
        status, body, message = error.status, error.body, error.message
    else:
        try:
            status, body, message = 200, assembler.body(), None
        except Incomplete as exc:
            raise UpstreamConnectionError(f"upstream {upstream}: {exc}") from None
    kept = [(k, v) for k, v in headers if k.lower() not in _REPLACED]
    await start(status, [*kept, _JSON, (b"content-length", str(len(body)).encode())])
    await send({"type": "http.response.body", "body": body})
    return status, message
