"""Incremental scanner over streamed LLM response bodies (SSE and NDJSON).

Owns: cutting raw socket chunks into events, spotting the first event that carries generated
output (the TTFT moment), and reading token usage and in-stream errors. Must not: do I/O, read
the clock, or keep the body: it holds only the unfinished tail of the last event. What an
Anthropic Messages event means is `anthropic_events`' (usage arrives in two events there, so
a later usage wins field by field).

Cost. Until the first output every event is parsed (``json.loads``); there are only a few.
After it, a chunk holding exactly one event (the usual case) costs a memchr for the first
newline plus a few substring scans for markers; only an event whose bytes may carry an error,
a non-null non-zero usage, a non-null ``finish_reason`` or ``"done": true`` (or, for the
Responses API, any non-delta event) is parsed. A chunk ending on an event boundary is used
in place; one ending mid-event leaves just that unfinished event in a small bytearray.

Approximation: after the first output an unparsed data event counts as one output event
(``[DONE]``, comments and the parsed final/usage/error events excluded). It over-counts only
mid-stream events with empty deltas; it feeds ``completion_tokens`` only when the upstream
reports no usage, and is then flagged ``tokens_estimated``.

Split invariance: how an event is treated depends only on its bytes and on whether an earlier
event carried output, never on chunk boundaries, so every splitting gives the same result.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.serving.anthropic_events import OUTPUT as MESSAGES_OUTPUT
from gateway.serving.anthropic_events import PARSE as MESSAGES_PARSE
from gateway.serving.anthropic_events import body_facts, event_facts, fast_kind


class Api(enum.Enum):
    """Which wire format a streamed body is in."""

    CHAT = "chat"  # OpenAI /v1/chat/completions (SSE)
    COMPLETIONS = "completions"  # OpenAI /v1/completions (SSE)
    RESPONSES = "responses"  # OpenAI /v1/responses (SSE with event: lines)
    OLLAMA_CHAT = "ollama_chat"  # Ollama /api/chat (NDJSON)
    OLLAMA_GENERATE = "ollama_generate"  # Ollama /api/generate (NDJSON)
    MESSAGES = "messages"  # Anthropic /v1/messages (SSE with event: lines)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a stream said about itself: tokens, output event count, first in-stream error."""

    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    output_events: int
    error: str | None


@dataclass(frozen=True, slots=True)
class _Event:
    output: bool
    usage: tuple[int | None, int | None] | None = None
    error: str | None = None


_NOTHING = _Event(output=False)
_OUTPUT = _Event(output=True)
_NDJSON = frozenset({Api.OLLAMA_CHAT, Api.OLLAMA_GENERATE})
_DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")
_NONZERO = re.compile(rb"[1-9]")
_SMALL_EVENT = 48  # shorter events (``data: [DONE]``, pings) are cheap to parse fully
DEFAULT_MAX_EVENT_BYTES = 1 << 20


class StreamScanner:
    """Feed raw chunks as they arrive; ``feed`` is True for the chunk completing first output."""

    def __init__(self, api: Api, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._api = api
        self._max_event = max_event_bytes
        self._delim: bytes | None = None
        self._nl_back = 0  # in a one-line event, the first newline is this far from the end
        if api in _NDJSON:
            self._set_delimiter(b"\n")
        self._buf = bytearray()
        self._skipping = False  # inside an event larger than max_event_bytes
        self._seen = False
        self._output_events = 0
        self._usage: tuple[int | None, int | None] | None = None
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
                self._apply(self._classify_fast(region, size))
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
            return self._apply(self._classify_fast(piece, len(piece)))
        return self._apply(self._parse(piece))

    def _apply(self, event: _Event) -> bool:
        """Fold one event into the totals; True if it is the first output."""
        if event is _OUTPUT:
            self._output_events += 1
        elif event is _NOTHING:
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

    def _classify_fast(self, piece: bytes, size: int) -> _Event:
        """After first output: parse only events whose bytes may carry usage/error/finish.

        ``size`` excludes a trailing delimiter, so a whole-chunk event and the same event cut
        out of a larger region are judged alike.
        """
        if size < _SMALL_EVENT or b'"error"' in piece or piece.startswith(b"error:"):
            return self._parse(piece)
        api = self._api
        if api is Api.MESSAGES:
            kind = fast_kind(piece)
            if kind == MESSAGES_PARSE:
                return self._parse(piece)
            return _OUTPUT if kind == MESSAGES_OUTPUT else _NOTHING
        if api is Api.RESPONSES:  # non-delta events are few and may carry usage or failure
            return _OUTPUT if b'.delta"' in piece else self._parse(piece)
        if api in _NDJSON:
            done = piece.rfind(b'"done"')  # Ollama puts it last
            return self._parse(piece) if _value_after(piece, done, 6) == b"t" else _OUTPUT
        usage = piece.rfind(b'"usage"')  # OpenAI puts it last; absent in most others
        if usage >= 0 and _usage_marker(piece, usage):
            return self._parse(piece)
        finish = piece.find(b'"finish_reason"')
        if finish >= 0 and _value_after(piece, finish, 15) not in (b"n", b""):
            return self._parse(piece)
        return _OUTPUT if b"data:" in piece else _NOTHING

    def _parse(self, piece: bytes) -> _Event:
        if self._api in _NDJSON:
            return _interpret(self._api, _loads(piece), "")
        name, data, error_field = _sse_fields(piece)
        if data is None and piece[:1] == b"{":
            data = piece  # a plain JSON body (typically an error) where SSE was expected
        if data is None or data.strip() == b"[DONE]":
            return _NOTHING
        obj = _loads(data)
        if error_field:  # older llama-server: `error: {"code":..,"message":..,"type":..}`
            text = _error_text(obj) if isinstance(obj, dict) else None
            return _Event(output=False, error=text or _error_text({"error": obj}) or "error")
        return _interpret(self._api, obj, name)


# -- byte markers -----------------------------------------------------------------------------


def _usage_marker(piece: bytes, at: int) -> bool:
    """A non-null usage that is not Ollama's all-zero placeholder (usage keys hold no digits)."""
    if _value_after(piece, at, 7) != b"{":
        return False
    start = piece.index(b"{", at)
    end = piece.find(b"}", start)
    body = piece[start + 1 : end] if end >= 0 else piece[start + 1 :]
    return end < 0 or b"{" in body or _NONZERO.search(body) is not None


def _value_after(piece: bytes, at: int, key_len: int) -> bytes:
    """First byte of the JSON value after the key at ``at`` (b'' if the key is absent)."""
    if at < 0:
        return b""
    start = at + key_len
    return piece[start : start + 8].lstrip(b": \t")[:1]


# -- full parsing -----------------------------------------------------------------------------


def _sse_fields(piece: bytes) -> tuple[str, bytes | None, bool]:
    """Split one SSE event into (event name, joined data or None, came-from-error-field)."""
    name = ""
    data: list[bytes] = []
    error_field = False
    for line in piece.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line or line[:1] == b":":
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"error":
            data.append(value)
            error_field = True
    return name, (b"\n".join(data) if data else None), error_field


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # includes UnicodeDecodeError: a torn or foreign event is no evidence
        return None


def _interpret(api: Api, obj: Any, event_name: str) -> _Event:
    """Read output/usage/error from one parsed event of the given API."""
    if not isinstance(obj, dict):
        return _NOTHING
    if api is Api.MESSAGES:
        output, usage, error = event_facts(obj, event_name)
        if usage is None and not output and error is None:
            return _NOTHING
        return _Event(output=output, usage=usage, error=error)
    if api is Api.RESPONSES:
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) else event_name
        delta = obj.get("delta", True)  # an absent delta is not evidence of an empty one
        output = kind.startswith("response.") and kind.endswith(".delta") and bool(delta)
    else:
        output = _output_of(api, obj, "delta")
    usage, error = _usage_of(obj), _error_text(obj)
    if usage is None and not output and error is None:
        return _NOTHING
    return _Event(output=output, usage=usage, error=error)


def _output_of(api: Api, obj: dict[str, Any], key: str) -> bool:
    """Generated output in an OpenAI ``choices[].{text,<key>}`` or an Ollama object."""
    if api is Api.OLLAMA_CHAT:
        return _has_output(obj.get("message"), ("content", "thinking"))
    if api is Api.OLLAMA_GENERATE:
        return _has_output(obj, ("response", "thinking"))
    choices = obj.get("choices")
    return isinstance(choices, list) and any(
        isinstance(choice, dict)
        and (_has_output(choice, ("text",)) or _has_output(choice.get(key), _DELTA_TEXT_KEYS))
        for choice in choices
    )


def _has_output(message: Any, text_keys: tuple[str, ...]) -> bool:
    """A non-empty text field, ``tool_calls`` entry or legacy ``function_call``."""
    if not isinstance(message, dict):
        return False
    if any(isinstance(v := message.get(key), str) and v for key in text_keys):
        return True
    calls, call = message.get("tool_calls"), message.get("function_call")
    return (isinstance(calls, list) and bool(calls)) or (isinstance(call, dict) and bool(call))


def _usage_of(obj: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """(prompt, completion) tokens from OpenAI/Responses ``usage`` or an Ollama done object.

    An all-zero usage is Ollama's /v1/completions placeholder and counts as no usage.
    """
    if obj.get("done") is True and ("eval_count" in obj or "prompt_eval_count" in obj):
        pair = (_int(obj.get("prompt_eval_count")), _int(obj.get("eval_count")))
        return None if pair == (None, None) else pair
    usage = obj.get("usage")
    response = obj.get("response")
    if not isinstance(usage, dict) and isinstance(response, dict):
        usage = response.get("usage")
    if not isinstance(usage, dict):
        return _timings_of(obj.get("timings"))
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    if not prompt and not completion and not _int(usage.get("total_tokens")):
        return None
    return prompt, completion


def _timings_of(timings: Any) -> tuple[int | None, int | None] | None:
    """llama.cpp's exact counts when the client did not ask for usage: the finish chunk's
    `timings` (prompt_n counts only tokens not served from the prompt cache: add cache_n)."""
    if not isinstance(timings, dict) or _int(timings.get("predicted_n")) is None:
        return None
    prompt = _int(timings.get("prompt_n"))
    cached = _int(timings.get("cache_n")) or 0
    return (None if prompt is None else prompt + cached), _int(timings.get("predicted_n"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_text(obj: dict[str, Any]) -> str | None:
    """Message of an in-stream error: OpenAI/llama.cpp ``error``, Ollama string, Responses."""
    error = obj.get("error")
    if obj.get("type") == "error" and error is None:
        error = obj  # OpenAI docs shape: {"type":"error","code":..,"message":..}
    response = obj.get("response")
    if error is None and obj.get("type") == "response.failed" and isinstance(response, dict):
        error = response.get("error") or "response.failed"
    if isinstance(error, str):
        return error or None
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) and message else json.dumps(error)
    return None


# -- non-streamed bodies ----------------------------------------------------------------------


def scan_body(api: Api, body: bytes) -> ScanResult:
    """Read usage/output/error from a whole response body; streamed bodies are scanned."""
    obj = _loads(body) if body.lstrip()[:1] == b"{" else None
    if not isinstance(obj, dict):
        scanner = StreamScanner(api)
        scanner.feed(body)
        scanner.close()
        return scanner.result()
    if api is Api.MESSAGES:
        output, usage = body_facts(obj)
    else:
        output, usage = _body_has_output(api, obj), _usage_of(obj)
    prompt, completion = usage if usage is not None else (None, None)
    return ScanResult(
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens_estimated=False,
        output_events=1 if output else 0,
        error=_error_text(obj),
    )


def _merged(
    old: tuple[int | None, int | None] | None, new: tuple[int | None, int | None]
) -> tuple[int | None, int | None]:
    """A later usage wins field by field: Anthropic says input tokens in `message_start`
    and output tokens in `message_delta`."""
    if old is None:
        return new
    return (old[0] if new[0] is None else new[0], old[1] if new[1] is None else new[1])


def _body_has_output(api: Api, obj: dict[str, Any]) -> bool:
    if api is Api.RESPONSES:
        output = obj.get("output")
        return isinstance(output, list) and bool(output)
    return _output_of(api, obj, "message")
