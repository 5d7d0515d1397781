"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools buffers a header however long it is, and uvicorn sets no limit: one connection
sending an endless header grew the gateway by 300 MB (tests/reliability). h11 has a 16 KiB
default but costs the hot path. Here the bytes received while no request body is being read
are counted before they reach the parser; over the limit the connection gets a 431 in the
OpenAI error shape and is closed. The limit is well above any real request head, and above
one socket read (so the start of a body read together with its head never trips it).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import ErrorShape, error_body

MAX_HEAD_BYTES = 1024 * 1024

_MESSAGE = (
    f"the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB; "
    "send the data in the body instead"
)
_BODY = error_body(ErrorShape.OPENAI, _MESSAGE, "invalid_request_error", "headers_too_large")
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class BoundedHeadProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _in_body = False
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refused = True
                self.logger.warning("request head over %d bytes: refused (431)", MAX_HEAD_BYTES)
                self.transport.write(_RESPONSE)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()
