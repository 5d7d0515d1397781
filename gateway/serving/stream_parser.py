"""Incremental scanner over streamed LLM response bodies (SSE and NDJSON): the framing.

Owns: cutting raw socket chunks into events, spotting the first event that carries generated
output (the TTFT moment), and folding each event's token usage and in-stream error into the
totals. Must not: do I/O, read the clock, or keep the body: it holds only the unfinished tail
of the last event. What one event of each API says is `stream_events`' (usage arrives in two
events for Anthropic Messages, so a later usage wins field by field).

Cost. Until the first output every event is parsed (``json.loads``); there are only a few.
After it, a chunk holding exactly one event (the usual case) costs a memchr for the first
newline plus the few substring scans of `stream_events.classify_fast`; only an event whose
bytes may carry usage, an error or the end is parsed. A chunk ending on an event boundary is
used in place; one ending mid-event leaves just that unfinished event in a small bytearray.

Approximation: after the first output an unparsed data event counts as one output event
(``[DONE]``, comments and the parsed final/usage/error events excluded). It over-counts only
mid-stream events with empty deltas; it feeds ``completion_tokens`` only when the upstream
reports no usage, and is then flagged ``tokens_estimated``.

Split invariance: how an event is treated depends only on its bytes and on whether an earlier
event carried output, never on chunk boundaries, so every splitting gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.serving.anthropic_events import Usage
from gateway.serving.stream_events import (
    NDJSON,
    NOTHING,
    OUTPUT,
    Api,
    Event,
    body_facts_of,
    classify_fast,
    loads,
    parse_event,
)

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Api", "ScanResult", "StreamScanner", "scan_body"]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a stream said about itself: tokens, output event count, first in-stream error."""

    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    output_events: int
    error: str | None


DEFAULT_MAX_EVENT_BYTES = 1 << 20


class StreamScanner:
    """Feed raw chunks as they arrive; ``feed`` is True for the chunk completing first output."""

    def __init__(self, api: Api, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._api = api
        self._max_event = max_event_bytes
        self._delim: bytes | None = None
        self._nl_back = 0  # in a one-line event, the first newline is this far from the end
        if api in NDJSON:
            self._set_delimiter(b"\n")
        self._buf = bytearray()
        self._skipping = False  # inside an event larger than max_event_bytes
        self._seen = False
        self._output_events = 0
        self._usage: Usage | None = None
        self._error: str | None = None

    @property
    def first_output_seen(self) -> bool:
        """Whether an event carrying generated output has been completed."""
        return self._seen

    def feed(self, chunk: bytes) -> bool:
        """Scan one chunk; True exactly once, for the chunk that completes the first output."""
        delim = self._delim
        if delim is not None and not self._buf and not self._skipping and chunk.endswith(delim):
            return self._process(chunk, delim)  # whole events only: no copy
        region = self._take_complete(chunk)
        return region is not None and self._process(region, self._delim or b"\n\n")

    def close(self) -> bool:
        """Treat an unterminated tail as the last event; True if it was the first output."""
        tail = b"" if self._skipping else bytes(self._buf)
        self._buf.clear()
        self._skipping = False
        return self._process_piece(tail) if tail else False

    def result(self) -> ScanResult:
        """Summarise completed events; completion tokens fall back to counted output events."""
        prompt, completion = self._usage if self._usage is not None else (None, None)
        estimated = completion is None
        return ScanResult(
            prompt_tokens=prompt,
            completion_tokens=self._output_events if estimated else completion,
            tokens_estimated=estimated,
            output_events=self._output_events,
            error=self._error,
        )

    # -- framing -----------------------------------------------------------------------------

    def _take_complete(self, chunk: bytes) -> bytes | None:
        """Return the bytes of all events completed by this chunk; keep the rest pending."""
        buf, delim = self._buf, self._delim
        start = max(0, len(buf) - 3)  # a delimiter may straddle the previous chunk
        buf += chunk
        if delim is None:
            delim = self._detect_delimiter()
            start = 0
        if delim is not None and self._skipping:
            start = 0
            if not self._skip_oversized(delim):
                return None
        end = -1 if delim is None else buf.rfind(delim, start)
        if delim is None or end < 0:
            self._check_overflow()
            return None
        end += len(delim)
        region = bytes(buf[:end])
        del buf[:end]
        self._check_overflow()
        return region

    def _detect_delimiter(self) -> bytes | None:
        """SSE events end with a blank line; the first line ending tells CRLF from LF."""
        newline = self._buf.find(b"\n")
        if newline < 0:
            return None
        crlf = newline > 0 and self._buf[newline - 1] == 0x0D
        return self._set_delimiter(b"\r\n\r\n" if crlf else b"\n\n")

    def _set_delimiter(self, delim: bytes) -> bytes:
        self._delim = delim
        self._nl_back = len(delim) - delim.index(b"\n")
        return delim

    def _check_overflow(self) -> None:
        """An event longer than max_event_bytes is dropped whatever the splitting."""
        if len(self._buf) > self._max_event:
            # No line ending in max_event_bytes means no SSE we can follow: assume LF.
            delim = self._delim or self._set_delimiter(b"\n\n")
            keep = len(delim) - 1  # a delimiter may straddle the next chunk
            del self._buf[: len(self._buf) - keep]
            self._skipping = True

    def _skip_oversized(self, delim: bytes) -> bool:
        """Drop bytes up to the end of the oversized event; False while it has not ended."""
        end = self._buf.find(delim)
        if end < 0:
            self._check_overflow()
            return False
        del self._buf[: end + len(delim)]
        self._skipping = False
        return True

    # -- events ------------------------------------------------------------------------------

    def _process(self, region: bytes, delim: bytes) -> bool:
        """Handle complete events; a lone event after first output skips split and copies."""
        size = len(region) - len(delim)  # the event without its delimiter
        if self._seen and 0 < size <= self._max_event and region[0] not in (10, 13):
            newline = region.find(b"\n")  # memchr: in a one-line event, its end
            if newline == len(region) - self._nl_back or (
                region.find(delim, max(newline - 1, 0)) == size  # CRLF: "\r" precedes
            ):
                self._apply(classify_fast(self._api, region, size))
                return False
        flipped = False
        for piece in region.split(delim):
            if piece and self._process_piece(piece):
                flipped = True
        return flipped

    def _process_piece(self, piece: bytes) -> bool:
        if piece[:1] in (b"\n", b"\r"):
            piece = piece.lstrip(b"\r\n")
        if not piece or len(piece) > self._max_event:
            return False
        if self._seen:
            return self._apply(classify_fast(self._api, piece, len(piece)))
        return self._apply(parse_event(self._api, piece))

    def _apply(self, event: Event) -> bool:
        """Fold one event into the totals; True if it is the first output."""
        if event is OUTPUT:
            self._output_events += 1
        elif event is NOTHING:
            return False
        else:
            if event.usage is not None:
                self._usage = _merged(self._usage, event.usage)
            if event.error is not None and self._error is None:
                self._error = event.error
            if not event.output:
                return False
            self._output_events += 1
        if self._seen:
            return False
        self._seen = True
        return True


# -- non-streamed bodies ----------------------------------------------------------------------


def scan_body(api: Api, body: bytes) -> ScanResult:
    """Read usage/output/error from a whole response body; streamed bodies are scanned."""
    obj = loads(body) if body.lstrip()[:1] == b"{" else None
    if not isinstance(obj, dict):
        scanner = StreamScanner(api)
        scanner.feed(body)
        scanner.close()
        return scanner.result()
    output, usage, error = body_facts_of(api, obj)
    prompt, completion = usage if usage is not None else (None, None)
    return ScanResult(
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens_estimated=False,
        output_events=1 if output else 0,
        error=error,
    )


def _merged(old: Usage | None, new: Usage) -> Usage:
    """A later usage wins field by field: Anthropic says input tokens in `message_start`
    and output tokens in `message_delta`."""
    if old is None:
        return new
    return (old[0] if new[0] is None else new[0], old[1] if new[1] is None else new[1])
