"""What one streamed event (or a whole body) of each API says: output, token usage, errors. Pure.

`stream_parser` cuts a body into events and folds them into totals; this module reads one
event's bytes. Until the first output every event is parsed in full (`parse_event`); after it
`classify_fast` judges an event by byte markers and parses only one whose bytes may carry an
error, a non-null non-zero usage, a non-null ``finish_reason`` or ``"done": true`` (or, for the
Responses API, any non-delta event). What an Anthropic Messages event means is
`anthropic_events`'.

Split invariance: the verdict depends only on the event's bytes (and its size without the
delimiter), never on how the body was cut into chunks.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.serving.anthropic_events import OUTPUT as MESSAGES_OUTPUT
from gateway.serving.anthropic_events import PARSE as MESSAGES_PARSE
from gateway.serving.anthropic_events import Usage, body_facts, event_facts, fast_kind


class Api(enum.Enum):
    """Which wire format a streamed body is in."""

    CHAT = "chat"  # OpenAI /v1/chat/completions (SSE)
    COMPLETIONS = "completions"  # OpenAI /v1/completions (SSE)
    RESPONSES = "responses"  # OpenAI /v1/responses (SSE with event: lines)
    OLLAMA_CHAT = "ollama_chat"  # Ollama /api/chat (NDJSON)
    OLLAMA_GENERATE = "ollama_generate"  # Ollama /api/generate (NDJSON)
    MESSAGES = "messages"  # Anthropic /v1/messages (SSE with event: lines)


@dataclass(frozen=True, slots=True)
class Event:
    """What one event said; `NOTHING` and `OUTPUT` are the shared instances of the usual two."""

    output: bool
    usage: Usage | None = None
    error: str | None = None


NOTHING = Event(output=False)
OUTPUT = Event(output=True)
NDJSON = frozenset({Api.OLLAMA_CHAT, Api.OLLAMA_GENERATE})
_DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")
_NONZERO = re.compile(rb"[1-9]")
_SMALL_EVENT = 48  # shorter events (``data: [DONE]``, pings) are cheap to parse fully


def classify_fast(api: Api, piece: bytes, size: int) -> Event:
    """After first output: parse only events whose bytes may carry usage/error/finish.

    ``size`` excludes a trailing delimiter, so a whole-chunk event and the same event cut
    out of a larger region are judged alike.
    """
    if size < _SMALL_EVENT or b'"error"' in piece or piece.startswith(b"error:"):
        return parse_event(api, piece)
    if api is Api.MESSAGES:
        kind = fast_kind(piece)
        if kind == MESSAGES_PARSE:
            return parse_event(api, piece)
        return OUTPUT if kind == MESSAGES_OUTPUT else NOTHING
    if api is Api.RESPONSES:  # non-delta events are few and may carry usage or failure
        return OUTPUT if b'.delta"' in piece else parse_event(api, piece)
    if api in NDJSON:
        done = piece.rfind(b'"done"')  # Ollama puts it last
        return parse_event(api, piece) if _value_after(piece, done, 6) == b"t" else OUTPUT
    usage = piece.rfind(b'"usage"')  # OpenAI puts it last; absent in most others
    if usage >= 0 and _usage_marker(piece, usage):
        return parse_event(api, piece)
    finish = piece.find(b'"finish_reason"')
    if finish >= 0 and _value_after(piece, finish, 15) not in (b"n", b""):
        return parse_event(api, piece)
    return OUTPUT if b"data:" in piece else NOTHING


def parse_event(api: Api, piece: bytes) -> Event:
    """Parse one whole event (an SSE event without its blank line, or one NDJSON line)."""
    if api in NDJSON:
        return _interpret(api, loads(piece), "")
    name, data, error_field = sse_fields(piece)
    if data is None and piece[:1] == b"{":
        data = piece  # a plain JSON body (typically an error) where SSE was expected
    if data is None or data.strip() == b"[DONE]":
        return NOTHING
    obj = loads(data)
    if error_field:  # older llama-server: `error: {"code":..,"message":..,"type":..}`
        text = _error_text(obj) if isinstance(obj, dict) else None
        return Event(output=False, error=text or _error_text({"error": obj}) or "error")
    return _interpret(api, obj, name)


def body_facts_of(api: Api, obj: dict[str, Any]) -> tuple[bool, Usage | None, str | None]:
    """(has output, usage, error message) of a whole, non-streamed JSON answer."""
    if api is Api.MESSAGES:
        output, usage = body_facts(obj)
    elif api is Api.RESPONSES:
        answer = obj.get("output")
        output, usage = isinstance(answer, list) and bool(answer), _usage_of(obj)
    else:
        output, usage = _output_of(api, obj, "message"), _usage_of(obj)
    return output, usage, _error_text(obj)


def loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # includes UnicodeDecodeError: a torn or foreign event is no evidence
        return None


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


def sse_fields(piece: bytes) -> tuple[str, bytes | None, bool]:
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


def _interpret(api: Api, obj: Any, event_name: str) -> Event:
    """Read output/usage/error from one parsed event of the given API."""
    if not isinstance(obj, dict):
        return NOTHING
    if api is Api.MESSAGES:
        output, usage, error = event_facts(obj, event_name)
        if usage is None and not output and error is None:
            return NOTHING
        return Event(output=output, usage=usage, error=error)
    if api is Api.RESPONSES:
        kind = obj.get("type")
        kind = kind if isinstance(kind, str) else event_name
        delta = obj.get("delta", True)  # an absent delta is not evidence of an empty one
        output = kind.startswith("response.") and kind.endswith(".delta") and bool(delta)
    else:
        output = _output_of(api, obj, "delta")
    usage, error = _usage_of(obj), _error_text(obj)
    if usage is None and not output and error is None:
        return NOTHING
    return Event(output=output, usage=usage, error=error)


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


def _usage_of(obj: dict[str, Any]) -> Usage | None:
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


def _timings_of(timings: Any) -> Usage | None:
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
