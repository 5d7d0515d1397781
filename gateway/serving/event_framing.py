"""Forward streamed bytes only up to the last complete event. Pure.

Chunks pass through as they arrive; only an event cut in half by the upstream's write or the
network is held back until its end arrives (real servers write whole events, so in practice
nothing waits). This keeps every event the client receives well-formed, so that if the
upstream dies mid-event the gateway's final error event is still parseable, instead of being
glued onto half a JSON object.
"""

from __future__ import annotations

from gateway.serving.usage import strip_usage_event

# A stream that never sends a delimiter is not held back past this.
MAX_PENDING = 1 << 20


class EventFramer:
    __slots__ = ("_ndjson", "_pending", "_strip_usage")

    def __init__(self, *, ndjson: bool, strip_usage: bool = False) -> None:
        self._ndjson = ndjson
        self._pending = b""
        # The gateway asked for usage the client did not (serving.usage): drop that event.
        self._strip_usage = strip_usage and not ndjson

    def push(self, chunk: bytes) -> bytes:
        """The bytes that may go to the client now (possibly empty)."""
        data = self._pending + chunk if self._pending else chunk
        if data.endswith(b"\n" if self._ndjson else b"\n\n"):
            self._pending = b""
            return strip_usage_event(data) if self._strip_usage else data
        cut = self._complete_length(data)
        if len(data) - cut > MAX_PENDING:
            cut = len(data)
        self._pending = data[cut:]
        return strip_usage_event(data[:cut]) if self._strip_usage else data[:cut]

    def flush(self) -> bytes:
        """What is held back, for a stream that ended cleanly (sent unchanged)."""
        pending, self._pending = self._pending, b""
        return strip_usage_event(pending) if self._strip_usage else pending

    def discard(self) -> bool:
        """Drop a half event (the stream failed); True if there was one."""
        had = bool(self._pending)
        self._pending = b""
        return had

    def _complete_length(self, data: bytes) -> int:
        if self._ndjson:
            return data.rfind(b"\n") + 1
        lf = data.rfind(b"\n\n")
        crlf = data.rfind(b"\r\n\r\n")
        return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
