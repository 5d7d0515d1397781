"""A lean HTTP/1.1 keep-alive client on asyncio Protocols: the relay's upstream hot path.

Why: on our 2-core bench machine aiohttp's client costs ~0.2-0.25 ms of gateway CPU per tiny
request and adds ~0.3 ms of latency at low load (the httpx API over it ~0.45 ms), against a
goal of <= 0.5 ms added TTFT for the whole relay. Here a request is an idle-connection pop, a
header join, one `transport.write` and one future; a chunk is llhttp (httptools, in C)
parsing, one callback append and one wake-up. Works on uvloop and on asyncio's own loop.

It must not: buffer a whole body (chunks go out as they arrive; reading pauses above a
high-water mark), re-chunk (at most one chunk per `data_received`), time out reads (the relay
owns first-byte and idle timers; only connecting has a timeout), follow redirects, decompress
(it asks for identity), pipeline, or speak anything but HTTP/1.x.

Errors are `ConnectionError`s, so the relay's `UPSTREAM_ERRORS` catch them; each message names
the upstream and what happened:

    UpstreamConnectionError
     ├── UpstreamConnectFailed    refused, unreachable, connect timeout, client closed
     ├── UpstreamDisconnected     closed or reset before or during the response
     └── UpstreamProtocolError    a response llhttp cannot parse

Resend rule: a request is sent again, once, on a connection not from the idle pool, only if
its first connection came from the idle pool, not one byte of a response came back, and the
peer closed or reset it within `_STALE_WINDOW_S` of sending: the signature of a server closing
an idle keep-alive connection just as we reused it, so the request was never answered (RFC
9112 §9.3.1). Every relayed route is a read or an inference call with no effect on upstream
state, so this holds for its POSTs; the window keeps a request that a server died on minutes
in from being sent twice.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from gateway.errors import (
    GatewayOutOfFiles,
    UpstreamConnectFailed,
    UpstreamConnectionError,
    UpstreamDisconnected,
    UpstreamProtocolError,
)
from gateway.policy.spec import UpstreamSpec
from gateway.upstreams.client import default_headers, pool_size

log = logging.getLogger("lanegate.upstream")

_HIGH_WATER = 256 * 1024  # unread body bytes at which reading from the upstream pauses
_LOW_WATER = 64 * 1024  # ... and resumes
_STALE_WINDOW_S = 1.0
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*").fullmatch
_PATH_SAFE = "/!$&'()*+,;=:@~"


OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


def out_of_files(exc: OSError) -> GatewayOutOfFiles:
    limit = "the process's open-file limit" if exc.errno == errno.EMFILE else "the system's"
    return GatewayOutOfFiles(
        exc.errno,
        f"lanegate is out of file descriptors ({limit}); raise `ulimit -n` (launchd: "
        "SoftResourceLimits NumberOfFiles) or lower the number of open client connections",
    )


def _may_resend(reused: bool, answered: bool, waited_s: float) -> bool:
    """May a request whose connection closed on it be sent again? (The module's rule.)"""
    return reused and not answered and waited_s < _STALE_WINDOW_S


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


def _request_target(prefix: str, path: str) -> str:
    # ASGI paths arrive percent-decoded: encode them again, except the common plain ones.
    if not path.startswith("/"):
        path = "/" + path
    return prefix + (path if _PLAIN_PATH(path) else quote(path, safe=_PATH_SAFE))


class _Connection(asyncio.Protocol):
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

    def __init__(self, owner: LeanUpstream, loop: asyncio.AbstractEventLoop) -> None:
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


class _LeanResponse:
    __slots__ = ("_conn", "content_type", "raw_headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn: _Connection | None = conn
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


class LeanUpstream:
    """A pool of keep-alive connections to one upstream; `open` sends one request."""

    def __init__(self, spec: UpstreamSpec, *, max_connections: int | None = None) -> None:
        self.spec = spec
        total, keep = pool_size(spec)
        self._limit = max_connections or total
        self._keep = min(keep, self._limit)  # idle connections kept for reuse
        parts = urlsplit(spec.base_url)
        secure = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if secure else 80)
        self._ssl = ssl.create_default_context() if secure else None
        shown = f"[{self._host}]" if ":" in self._host else self._host
        host = shown if parts.port in (None, 443 if secure else 80) else f"{shown}:{self._port}"
        # Messages (which may reach clients) name the upstream by its policy name only; its
        # address goes to the gateway's log.
        self.label = f"upstream {spec.name}"
        self.address = f"{shown}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        self._defaults = {"host": host, **default_headers(spec)}
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in self._defaults.items())
        self._idle: list[_Connection] = []  # LIFO: the most recently used is the least stale
        self._conns: set[_Connection] = set()
        self._count = 0  # connections open or opening, <= self._limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> _LeanResponse:
        """Send one request; return at its response headers. Header names come lowercase."""
        request = self._request(method, path, body, headers)
        head = method == "HEAD"
        conn, reused = await self._acquire(fresh=False)
        sent_at = conn.loop.time()
        try:
            return await self._exchange(conn, request, body, head)
        except UpstreamDisconnected:
            if not _may_resend(reused, conn.got_bytes, conn.loop.time() - sent_at):
                raise
        log.debug("%s closed an idle connection as it was reused; resending", self.label)
        conn, _ = await self._acquire(fresh=True)
        return await self._exchange(conn, request, body, head)

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        for conn in list(self._conns):
            conn.discard()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> bytes:
        target = _request_target(self._prefix, path)
        fixed = self._fixed
        if not self._defaults.keys().isdisjoint(headers):  # the caller's value wins
            headers = {**self._defaults, **headers}
            fixed = ""
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
            raise ValueError(f"a header for {self.label} contains a line break")
        if body is not None:
            lines += f"content-length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            lines += "content-length: 0\r\n"
        return f"{method} {target} HTTP/1.1\r\n{fixed}{lines}\r\n".encode("latin-1")

    async def _exchange(
        self, conn: _Connection, request: bytes, body: bytes | None, head: bool
    ) -> _LeanResponse:
        try:
            conn.begin(head)
            if body:  # one write either way (writev on uvloop): no copy of a large body
                conn.transport.writelines((request, body))
            else:
                conn.transport.write(request)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.discard()
            raise
        return _LeanResponse(conn)

    async def _acquire(self, *, fresh: bool) -> tuple[_Connection, bool]:
        """A live idle connection (LIFO), else a new one under the cap, else wait for either."""
        while True:
            if self._closed:
                raise UpstreamConnectFailed(f"{self.label}: the client is closed")
            idle = self._idle
            while idle and not fresh:
                conn = idle.pop()
                if not conn.closed:
                    conn.busy = True
                    return conn, True
                conn.discard()
            if self._count >= self._limit and fresh and idle:
                idle.pop(0).discard()  # make room for the fresh connection a resend needs
            if self._count < self._limit:
                self._count += 1
                return await self._connect(), False
            await self._wait_turn()

    async def _wait_turn(self) -> None:
        # Rare: the lanes keep requests in flight below the upstream's slots, a quarter of this cap.
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # we were woken, but leave: pass the turn on
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> _Connection:
        # The caller has counted this connection in self._count.
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.spec.timeouts.connect_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, loop), self._host, self._port, ssl=self._ssl
                )
        except TimeoutError as exc:
            waited = self.spec.timeouts.connect_s
            raise UpstreamConnectFailed(f"{self.label}: no connection within {waited:g} s") from exc
        except OSError as exc:
            if exc.errno in OUT_OF_FILES:
                raise out_of_files(exc) from exc
            log.info("%s at %s: cannot connect (%s)", self.label, self.address, exc)
            # asyncio's own text names the address: the errno's text does not.
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise UpstreamConnectFailed(f"{self.label}: cannot connect ({reason})") from exc
        finally:
            if conn is None:
                self._count -= 1
                self._wake_one()
        self._conns.add(conn)
        if self._closed:
            conn.discard()
            raise UpstreamConnectFailed(f"{self.label}: the client is closed")
        return conn

    def release(self, conn: _Connection) -> None:
        """Back to the pool if the response was read whole and may be reused; else close."""
        if (
            conn.complete
            and conn.keep_alive
            and conn.error is None
            and not conn.closed
            and not self._closed
            and len(self._idle) < self._keep
        ):
            conn.busy = False
            conn.queue.clear()
            if conn.paused:  # read again, or a server closing it would go unnoticed
                conn.resume()
            self._idle.append(conn)
            self._wake_one()
        else:
            conn.discard()

    def forget_idle(self, conn: _Connection) -> None:
        # The server closed an idle connection (its keep-alive timeout, or it went away).
        if conn in self._idle:
            self._idle.remove(conn)
        conn.discard()

    def slot_freed(self, conn: _Connection) -> None:
        if conn in self._conns:  # once per connection
            self._conns.remove(conn)
            self._count -= 1
            self._wake_one()
