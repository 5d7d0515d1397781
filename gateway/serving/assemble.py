"""A streamed OpenAI answer assembled into the non-streamed one its client asked for. Pure.

Why: llama.cpp's server stops a generation whose *stream* closed within a few milliseconds,
but may decode a closed non-streamed request to its last token (docs/policy.md, Preemption).
So a preemptible request a client sent non-streamed to `/v1/chat/completions` or
`/v1/completions` of a `llamacpp` upstream goes upstream as a stream (`serving.upstream_body`)
and the relay feeds the stream's whole events here; the client gets the JSON body a
non-streamed request would have had.

Owns: folding `chat.completion.chunk` / `text_completion` events into one `chat.completion` /
`text_completion` body: id, object, created, model, system_fingerprint (if sent); choices by
index with the message (role, content, reasoning_content if any, tool_calls merged by index
with their arguments concatenated) or text, logprobs (lists concatenated) and finish_reason;
usage from the last event that has one; llama.cpp's `timings` from the last that has them.
An in-stream error (`data: {"error":..}` or llama.cpp's older `error:` field) becomes the
answer the non-streamed path gives: the error object as `{"error": ...}`, its `code` as the
status. Lines that are not JSON, comments and unknown events are ignored.

Bounded: the assembled text and logprobs at most `limit` bytes (the non-streamed path's
`LANEGATE_MAX_UPSTREAM_BODY_BYTES`), and the stream itself at most `STREAM_FACTOR` times `limit`
bytes (a stream carries ~100-300 bytes of framing per token; this stops an endless stream of
empty events); past either, `TooLarge`. Must not: do I/O, or keep more than the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.serving.stream_events import Api, loads, sse_fields

STREAM_FACTOR = 16
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n")
_OBJECT = {Api.CHAT: "chat.completion", Api.COMPLETIONS: "text_completion"}
_TOP_KEYS = ("id", "created", "model", "system_fingerprint")
_TEXT_KEYS = ("content", "reasoning_content")


class TooLarge(ValueError):
    """The assembled answer (or the stream) passed its bound."""


class Incomplete(ValueError):
    """The stream ended before its answer did (no `[DONE]`, a choice without finish_reason)."""


@dataclass(frozen=True, slots=True)
class StreamError:
    """An in-stream error as the non-streamed path answers it."""

    status: int
    body: bytes
    message: str


@dataclass(slots=True)
class _Call:
    fields: dict[str, Any] = field(default_factory=dict)  # id, type
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    role: str = "assistant"
    texts: dict[str, list[str]] = field(default_factory=dict)  # content, reasoning, text
    calls: dict[int, _Call] = field(default_factory=dict)
    logprobs: Any = None
    has_logprobs: bool = False  # the stream's choices carry the key (null or not)
    finish_reason: Any = None


class Assembler:
    """Push whole SSE events (the relay's framed bytes) or feed parsed ones; `body()` at the
    end. `error` is set by an error event (nothing more is assembled after it)."""

    def __init__(self, api: Api, limit: int) -> None:
        if api not in _OBJECT:
            raise ValueError(f"no non-streamed shape for {api.value}")
        self.api = api
        self.limit = limit
        self.done = False
        self.error: StreamError | None = None
        self._top: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._timings: Any = None
        self._size = 0  # bytes of text and logprobs assembled
        self._streamed = 0  # bytes of the stream pushed

    def push(self, events: bytes) -> None:
        """Whole events (ending on an event boundary, as `EventFramer.push` returns them)."""
        self._streamed += len(events)
        if self._streamed > STREAM_FACTOR * self.limit:
            raise TooLarge(f"a stream of over {STREAM_FACTOR} x {self.limit} bytes")
        for piece in split_events(events):
            if self.error is None:
                self._piece(piece)

    def feed(self, obj: Any) -> None:
        """One parsed `data:` payload."""
        if not isinstance(obj, dict) or self.error is not None:
            return
        if obj.get("error") is not None and not isinstance(obj.get("choices"), list):
            self.error = stream_error(obj["error"])
            return
        for key in _TOP_KEYS:
            if key in obj and key not in self._top:
                self._top[key] = obj[key]
        if isinstance(obj.get("usage"), dict):
            self._usage = obj["usage"]
        if isinstance(obj.get("timings"), dict):
            self._timings = obj["timings"]
        choices = obj.get("choices")
        for delta in choices if isinstance(choices, list) else ():
            if isinstance(delta, dict) and _int(delta.get("index", 0)) is not None:
                self._choice(delta)

    def body(self) -> bytes:
        """The non-streamed JSON answer; `Incomplete` if the stream did not finish it."""
        finished = all(c.finish_reason is not None for c in self._choices.values())
        if not self._choices or not (self.done or finished):
            raise Incomplete("the stream ended before its answer was complete")
        answer: dict[str, Any] = {"id": self._top.get("id"), "object": _OBJECT[self.api]}
        for key in _TOP_KEYS[1:]:
            if key in self._top:
                answer[key] = self._top[key]
        answer["choices"] = [self._final(i, self._choices[i]) for i in sorted(self._choices)]
        if self._usage is not None:
            answer["usage"] = self._usage
        if self._timings is not None:
            answer["timings"] = self._timings
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()

    # -- events --------------------------------------------------------------------------------

    def _piece(self, piece: bytes) -> None:
        _, data, error_field = sse_fields(piece)
        if data is None:
            return
        if data.strip() == b"[DONE]":
            self.done = True
            return
        obj = loads(data)
        if error_field:  # llama.cpp's older `error: {...}` field
            self.error = stream_error(obj)
            return
        self.feed(obj)

    def _choice(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", 0)
        choice = self._choices.setdefault(index, _Choice())
        if delta.get("finish_reason") is not None:
            choice.finish_reason = delta["finish_reason"]
        choice.has_logprobs = choice.has_logprobs or "logprobs" in delta
        if delta.get("logprobs") is not None:
            choice.logprobs = self._merged_logprobs(choice.logprobs, delta["logprobs"])
        if self.api is Api.COMPLETIONS:
            self._text(choice, "text", delta.get("text"))
            return
        message = delta.get("delta")
        if not isinstance(message, dict):
            return
        if isinstance(message.get("role"), str):
            choice.role = message["role"]
        for key in _TEXT_KEYS:
            self._text(choice, key, message.get(key))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._call(choice, call)

    def _text(self, choice: _Choice, key: str, text: Any) -> None:
        if isinstance(text, str):
            self._grow(len(text.encode()))
            choice.texts.setdefault(key, []).append(text)

    def _call(self, choice: _Choice, call: dict[str, Any]) -> None:
        index = _int(call.get("index", len(choice.calls)))
        merged = choice.calls.setdefault(index if index is not None else 0, _Call())
        for key in ("id", "type"):
            if isinstance(call.get(key), str) and call[key]:
                merged.fields.setdefault(key, call[key])
        function = call.get("function")
        if isinstance(function, dict):
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str) and not merged.name:
                self._grow(len(name.encode()))
                merged.name = name
            if isinstance(arguments, str):
                self._grow(len(arguments.encode()))
                merged.arguments.append(arguments)

    def _merged_logprobs(self, old: Any, new: Any) -> Any:
        """Lists (chat's `content`, completions' `tokens`, `token_logprobs`, ...) concatenate."""
        self._grow(len(json.dumps(new)))
        if not isinstance(old, dict) or not isinstance(new, dict):
            return new
        merged = dict(old)
        for key, value in new.items():
            before = merged.get(key)
            both = isinstance(before, list) and isinstance(value, list)
            merged[key] = before + value if both else value
        return merged

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self.limit:
            raise TooLarge(f"an answer of over {self.limit} bytes")

    def _final(self, index: int, choice: _Choice) -> dict[str, Any]:
        out: dict[str, Any] = {"index": index}
        if self.api is Api.COMPLETIONS:
            out["text"] = "".join(choice.texts.get("text", ()))
        else:
            out["message"] = _message(choice)
        if choice.has_logprobs:
            out["logprobs"] = choice.logprobs
        out["finish_reason"] = choice.finish_reason
        return out


def _message(choice: _Choice) -> dict[str, Any]:
    calls = [_tool_call(choice.calls[i]) for i in sorted(choice.calls)]
    content = choice.texts.get("content", [])
    message: dict[str, Any] = {
        "role": choice.role,
        "content": "".join(content) if content or not calls else None,
    }
    if "reasoning_content" in choice.texts:
        message["reasoning_content"] = "".join(choice.texts["reasoning_content"])
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(call: _Call) -> dict[str, Any]:
    function = {"name": call.name, "arguments": "".join(call.arguments)}
    return {**call.fields, "type": call.fields.get("type", "function"), "function": function}


def stream_error(error: Any) -> StreamError:
    """`{"error": error}` with the error's own code as the status (else 500)."""
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    message = error.get("message") if isinstance(error, dict) else error
    text = message if isinstance(message, str) and message else "the upstream's stream failed"
    if not isinstance(error, dict):
        error = {"code": status, "message": text, "type": "server_error"}
    body = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":")).encode()
    return StreamError(status, body, text)


def split_events(events: bytes) -> Iterator[bytes]:
    """The non-empty events of whole SSE bytes."""
    for piece in _EVENT_END.split(events):
        piece = piece.strip(b"\r\n")
        if piece:
            yield piece


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
