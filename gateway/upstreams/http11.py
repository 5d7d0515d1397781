"""A lean HTTP/1.1 keep-alive client on asyncio Protocols: the relay's upstream hot path.

This module is the pool and the request side (`LeanUpstream`: connect, reuse, resend, request
bytes); one connection's protocol and the response read from it are `http11_connection`'s.

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
from urllib.parse import quote, urlsplit

from gateway.errors import (
    GatewayOutOfFiles,
    UpstreamConnectFailed,
    UpstreamConnectionError,
    UpstreamDisconnected,
    UpstreamProtocolError,
)
from gateway.policy.spec import UpstreamSpec
from gateway.upstreams.client import default_headers, pool_size
from gateway.upstreams.http11_connection import Connection, LeanResponse

__all__ = [  # the error tree drawn above is importable from here, as before the split
    "OUT_OF_FILES",
    "LeanResponse",
    "LeanUpstream",
    "UpstreamConnectFailed",
    "UpstreamConnectionError",
    "UpstreamDisconnected",
    "UpstreamProtocolError",
    "out_of_files",
]

log = logging.getLogger("lanegate.upstream")

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


def _request_target(prefix: str, path: str) -> str:
    # ASGI paths arrive percent-decoded: encode them again, except the common plain ones.
    if not path.startswith("/"):
        path = "/" + path
    return prefix + (path if _PLAIN_PATH(path) else quote(path, safe=_PATH_SAFE))


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
        self._idle: list[Connection] = []  # LIFO: the most recently used is the least stale
        self._conns: set[Connection] = set()
        self._count = 0  # connections open or opening, <= self._limit
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> LeanResponse:
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
        self, conn: Connection, request: bytes, body: bytes | None, head: bool
    ) -> LeanResponse:
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
        return LeanResponse(conn)

    async def _acquire(self, *, fresh: bool) -> tuple[Connection, bool]:
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

    async def _connect(self) -> Connection:
        # The caller has counted this connection in self._count.
        loop = asyncio.get_running_loop()
        conn: Connection | None = None
        try:
            async with asyncio.timeout(self.spec.timeouts.connect_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(self, loop), self._host, self._port, ssl=self._ssl
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

    def release(self, conn: Connection) -> None:
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

    def forget_idle(self, conn: Connection) -> None:
        # The server closed an idle connection (its keep-alive timeout, or it went away).
        if conn in self._idle:
            self._idle.remove(conn)
        conn.discard()

    def slot_freed(self, conn: Connection) -> None:
        if conn in self._conns:  # once per connection
            self._conns.remove(conn)
            self._count -= 1
            self._wake_one()
