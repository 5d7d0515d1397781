"""The server's HTTP/1.1 protocol: uvicorn's httptools protocol plus the limits it lacks.

With httptools, uvicorn bounds neither the number nor the size of request headers, nor the time
a client may take to send them (its keep-alive timer starts only after a response, and a fresh
connection has none): one client could hold connections open forever, or make the gateway
buffer megabytes of headers. This subclass counts the bytes of every read that leaves a
request head incomplete, so at most one read (≤ 256 KiB) is kept beyond the limit: too many
headers or too many bytes → 431, a head not complete within `header_timeout` (also a new
connection's first) → 408, both in OpenAI's error shape, then the connection closes. The ASGI
app never sees such a request. A head that arrives whole in one read (nearly all of them)
costs three attribute writes and one length compare: nothing is done per header, and the
header timer runs only while a head is incomplete after a read.

Two more things uvicorn does not do (issue 18). An answer sent before the request body arrived
whole (a 401 to a 1 GB upload, a 413, a 404 of the control plane) goes out with
`Connection: close` and the connection closes after it: uvicorn would keep it, never read the
rest (its reading paused on a full buffer) and never time it out, so a stranger could hold file
descriptors forever. Done by clearing the cycle's keep-alive when a head completes and giving it
back when the body completes before the answer starts: bodiless and small requests complete in
the same read, before the app runs, so they keep their keep-alive at no cost. And an HTTP/1.0
request never gets `Transfer-Encoding: chunked` (RFC 9112 §7.1): without a Content-Length its
answer is delimited by closing the connection (`_Http10Cycle`).

Relies on uvicorn's protocol methods (`data_received`, `on_message_begin`,
`on_headers_complete`, `on_message_complete`, `send_400_response`, `url`, `headers`, the
cycle's `keep_alive`, `response_started`, `chunked_encoding`, `expected_content_length`);
tests/ops/test_security.py and tests/reliability/test_attacks_clients.py fail if that changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from gateway.errors import GatewayError, HeadersTooLarge, RequestTimeout, shape_for_path

log = logging.getLogger("lanegate.http")


@dataclass(frozen=True)
class HeaderLimits:
    max_count: int = 100
    max_bytes: int = 64 * 1024  # request line + header names and values
    timeout_s: float = 10.0


class _Refused(Exception):
    """Raised inside a parser callback: llhttp stops, uvicorn calls send_400_response."""


class _QuietOnRefusal(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's logger for one connection, minus its "Invalid HTTP request received." when
    the "invalid" request is one this protocol refused on purpose (it logs its own line)."""

    def __init__(self, logger: logging.Logger, protocol: LimitedHttpToolsProtocol) -> None:
        super().__init__(logger, {})
        self.protocol = protocol

    @property
    def level(self) -> int:  # uvicorn reads `logger.level` for its trace checks
        return int(self.logger.level)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.protocol._refusal is None:
            super().warning(msg, *args, **kwargs)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits = HeaderLimits()  # set per server by `limited_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _QuietOnRefusal(self.logger, self)  # type: ignore[assignment]
        self._head_bytes = 0  # bytes read while the current head was incomplete (≥ its size)
        self._chunk = 0  # size of the read being parsed
        self._in_head = True  # a fresh connection owes us a request head
        self._refusal: GatewayError | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._keep_alive = False  # what the current request's cycle had before its body came

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered and closing: the rest is not parsed
        self._chunk = len(data)
        super().data_received(data)
        if self._in_head and self._refusal is None:
            # Counted per read, not per header: a head can only grow this way, and a
            # complete one costs nothing here.
            self._head_bytes += self._chunk
            if self._head_bytes > self.limits.max_bytes:
                self._refusal = self._too_large()
                self._answer(self._refusal)
            elif self._deadline is None:
                self._arm()  # a head arrived in part: the client has `timeout_s` for the rest

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._deadline is not None:
            self._disarm()
        self._check_head()
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is previous:
            return  # an upgrade, or nothing started
        if self.scope.get("http_version") == "1.0":
            cycle.__class__ = _Http10Cycle
        # Until the body has arrived whole, an answer closes the connection: the unread rest
        # of a body (a 401 to a 1 GB upload) is never read, and a connection that keeps it
        # would be held open, paused, forever. Bodiless requests end in this same read,
        # before the app runs, and get their keep-alive back at once.
        self._keep_alive = cycle.keep_alive
        cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        cycle = self.cycle
        if cycle is not None and self._keep_alive and not cycle.response_started:
            cycle.keep_alive = True

    def _check_head(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_count:
            self._refuse(
                HeadersTooLarge(
                    f"the request has more than {limits.max_count} headers "
                    "(LANEGATE_MAX_HEADER_COUNT)"
                )
            )
        if (
            self._head_bytes + self._chunk > limits.max_bytes
            and self._head_size() > limits.max_bytes
        ):
            self._refuse(self._too_large())

    # -- refusing --------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._answer(self._refusal)

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) for name, value in self.headers)

    def _too_large(self) -> GatewayError:
        return HeadersTooLarge(
            f"the request line and headers are over {self.limits.max_bytes} bytes "
            "(LANEGATE_MAX_HEADER_BYTES); send large data in the body"
        )

    def _refuse(self, error: GatewayError) -> None:
        """From a parser callback: llhttp stops, uvicorn calls send_400_response."""
        self._refusal = error
        raise _Refused(error.message)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.limits.timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._in_head:
            return
        self._refusal = RequestTimeout(
            f"the request headers did not arrive within {self.limits.timeout_s:g} s "
            "(LANEGATE_HEADER_TIMEOUT)",
            code="header_timeout",
        )
        self._answer(self._refusal)

    def _answer(self, error: GatewayError) -> None:
        if self.transport.is_closing():
            return
        # The API's own error shape when the request line got far enough to tell (/api/...).
        target = bytes(getattr(self, "url", b"") or b"").decode("latin-1")
        body = error.body(shape_for_path(target.split("?", 1)[0]))
        reason = "Request Header Fields Too Large" if error.status == 431 else "Request Timeout"
        head = (
            f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("refused a request from %s: %s %s", client, error.status, error.code)
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


class _Http10Cycle(RequestResponseCycle):
    """An HTTP/1.0 exchange: no chunked encoding there (RFC 9112 §7.1), so a response without
    a Content-Length is delimited by closing the connection (HTTP/1.0 never keeps it open
    here anyway: uvicorn sets keep-alive only for 1.1)."""

    _close_delimited = False

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"content-length" for name, _ in headers):
                self._close_delimited = True
                self.chunked_encoding = False
                self.keep_alive = False
                kept = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
                message = {**message, "headers": kept}
        elif message["type"] == "http.response.body" and self._close_delimited:
            # uvicorn checks bodies against a length; each piece is its own length here.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


def limited_protocol(limits: HeaderLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), with these limits."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
