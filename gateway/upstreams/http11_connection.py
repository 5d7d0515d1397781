"""One keep-alive HTTP/1.1 connection to an upstream, and the response read from it.

The `http11` client's wire half: `Connection` is an asyncio Protocol feeding llhttp (httptools)
and queueing each `data_received`'s body bytes as one chunk; `LeanResponse` hands those chunks
out and gives the connection back to its owner (the pool, `http11.LeanUpstream`) when closed.
Reading pauses while more than `_HIGH_WATER` unread bytes wait and resumes at `_LOW_WATER`.
The owner is seen through the `ConnectionOwner` Protocol, so this module never imports the
pool. Errors and the rules the pool applies (resending, limits) are in `http11`'s docstring.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway.errors import UpstreamConnectionError, UpstreamDisconnected, UpstreamProtocolError

_HIGH_WATER = 256 * 1024  # unread body bytes at which reading from the upstream pauses
_LOW_WATER = 64 * 1024  # ... and resumes


class ConnectionOwner(Protocol):
    """What a connection and its response need of the pool that opened them."""

    label: str  # names the upstream in error messages

    def release(self, conn: Connection) -> None: ...

    def forget_idle(self, conn: Connection) -> None: ...

    def slot_freed(self, conn: Connection) -> None: ...


def _needs_eof(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Is the body delimited by the connection closing (no length, not chunked)?"""
    if status in (204, 304):
        return False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return False
        if lowered == b"transfer-encoding" and b"chunked" in value.lower():
            return False
    return True


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    __slots__ = (
        "buffered",
        "busy",
        "closed",
        "complete",
        "content_type",
        "error",
        "got_bytes",
        "head",
        "headers",
        "headers_done",
        "keep_alive",
        "loop",
        "needs_eof",
        "owner",
        "parser",
        "paused",
        "pieces",
        "queue",
        "reparse",
        "status",
        "transport",
        "waiter",
    )
    transport: asyncio.Transport  # set by connection_made, before anything else runs

    def __init__(self, owner: ConnectionOwner, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.parser = HttpResponseParser(self)
        self.reparse = False
        self.busy = True  # owned by a request (or about to be); False while idle in the pool
        self.closed = False
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.queue: deque[bytes] = deque()
        self.pieces: list[bytes] = []
        self.begin(head=False)

    def begin(self, head: bool) -> None:
        """Reset the per-response state for a new request."""
        if self.reparse:  # after a HEAD, llhttp still expects the body the headers announced
            self.parser = HttpResponseParser(self)
            self.reparse = False
        self.head = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_type = b""
        self.headers_done = self.complete = self.keep_alive = self.needs_eof = False
        self.got_bytes = False
        self.error: UpstreamConnectionError | None = None
        self.buffered = 0
        self.queue.clear()
        if self.paused:
            self.resume()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            # Bytes nobody asked for: this connection's framing can no longer be trusted.
            self.keep_alive = False
            if not self.busy:
                self.discard()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            what = f"{self.owner.label} sent a malformed response ({type(exc).__name__}: {exc})"
            if not self.complete:
                self.error = UpstreamProtocolError(what)
            self.keep_alive = False
            self.discard()  # the slot is free at once; the response's release finds it gone
        pieces = self.pieces
        if pieces:
            chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            pieces.clear()
            self.queue.append(chunk)
            self.buffered += len(chunk)
            if self.buffered > _HIGH_WATER and not self.paused and not self.closed:
                self.paused = True
                self.transport.pause_reading()
        self.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self.owner.forget_idle(self)
            return
        if not self.complete and self.error is None:
            if self.headers_done and self.needs_eof and exc is None:
                self.complete = True  # a close-delimited body ends here
            else:
                self.error = UpstreamDisconnected(self._lost_message(exc))
        self.wake()

    def _lost_message(self, exc: Exception | None) -> str:
        how = f"reset the connection ({exc})" if exc else "closed the connection"
        if self.headers_done:
            return f"{self.owner.label} {how} in the middle of the response body"
        if self.got_bytes:
            return f"{self.owner.label} {how} in the middle of the response headers"
        return f"{self.owner.label} {how} before sending a response"

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers = []
        self.content_type = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) == 12 and name.lower() == b"content-type":
            self.content_type = value.lower()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim 1xx answer; llhttp goes on to parse the real one
        self.status = status
        self.headers_done = True
        if self.head:  # httptools cannot be told a HEAD answer has no body
            self.complete = self.reparse = True
            self.keep_alive = self.parser.should_keep_alive()
        elif not self.parser.should_keep_alive():
            self.needs_eof = _needs_eof(status, self.headers)

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    # -- used by the pool and the response ---------------------------------------------------
    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():  # done: woken already, or cancelled
            waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = self.loop.create_future()
        await self.waiter

    def resume(self) -> None:
        self.paused = False
        if not self.closed:
            self.transport.resume_reading()

    def discard(self) -> None:
        """Close at once (the upstream sees the disconnect) and give up the pool slot."""
        if not self.closed:
            self.closed = True
            self.transport.abort()
        self.owner.slot_freed(self)


class LeanResponse:
    __slots__ = ("_conn", "content_type", "raw_headers", "status")

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn
        self.status = conn.status
        self.raw_headers = conn.headers
        self.content_type = conn.content_type

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        queue = conn.queue
        while True:
            if queue:  # the common case under load: no future, no suspension
                chunk = queue.popleft()
                conn.buffered -= len(chunk)
                if conn.paused and conn.buffered <= _LOW_WATER:
                    conn.resume()
                yield chunk
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.owner.release(conn)
