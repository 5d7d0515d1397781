"""The server's HTTP/1.1 protocol: uvicorn's httptools protocol plus the limits it lacks.

With httptools, uvicorn bounds neither the number nor the size of request headers, nor the time
a client may take to send them (its keep-alive timer starts only after a response, and a fresh
connection has none): one client could hold connections open forever, or make the gateway
buffer megabytes of headers. This subclass counts while llhttp parses, so nothing is kept
beyond the limit: too many or too large → 431, request headers not complete within
`header_timeout` → 408, both in OpenAI's error shape, then the connection closes. The ASGI
app never sees such a request. Per request this costs one add and one compare per header;
the header timer runs only while a request's headers are incomplete after a read.

Relies on uvicorn's protocol callbacks (`on_message_begin`, `on_url`, `on_header`,
`on_headers_complete`, `send_400_response`), stable since uvicorn 0.12; the tests in
tests/test_security.py fail if that changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import ErrorShape, GatewayError, HeadersTooLarge, RequestTimeout

log = logging.getLogger("lanegate.http")


@dataclass(frozen=True)
class HeaderLimits:
    max_count: int = 100
    max_bytes: int = 64 * 1024  # request line + header names and values
    timeout_s: float = 10.0


class _Refused(Exception):
    """Raised inside a parser callback: llhttp stops, uvicorn calls send_400_response."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits = HeaderLimits()  # set per server by `limited_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._count = 0
        self._bytes = 0
        self._in_head = True  # a fresh connection owes us a request head
        self._refusal: GatewayError | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered and closing: the rest is not parsed
        super().data_received(data)
        if self._in_head and self._deadline is None and self._refusal is None:
            self._arm()  # a head arrived in part: the client has `timeout_s` for the rest

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._count = self._bytes = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._add(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > self.limits.max_count:
            self._refuse(
                HeadersTooLarge(
                    f"the request has more than {self.limits.max_count} headers "
                    "(LANEGATE_MAX_HEADER_COUNT)"
                )
            )
        self._add(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    # -- refusing --------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._answer(self._refusal)

    def _add(self, size: int) -> None:
        self._bytes += size
        if self._bytes > self.limits.max_bytes:
            self._refuse(
                HeadersTooLarge(
                    f"the request line and headers are over {self.limits.max_bytes} bytes "
                    "(LANEGATE_MAX_HEADER_BYTES); send large data in the body"
                )
            )

    def _refuse(self, error: GatewayError) -> None:
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
        body = error.body(ErrorShape.OPENAI)
        reason = "Request Header Fields Too Large" if error.status == 431 else "Request Timeout"
        head = (
            f"HTTP/1.1 {error.status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("refused a request from %s: %s %s", client, error.status, error.code)
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def limited_protocol(limits: HeaderLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), with these limits."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
