"""What Anthropic Messages events and bodies say: generated output, token usage, errors. Pure.

A streamed answer is SSE with an `event:` line naming each event (docs.anthropic.com, streaming
messages): `message_start` (the message, its `usage.input_tokens`), per content block
`content_block_start`, `content_block_delta`, `content_block_stop`, any number of `ping`, then
`message_delta` (`usage.output_tokens`, cumulative) and `message_stop`. Generated output is a
`content_block_delta` with non-empty `text` (text_delta), `partial_json` (input_json_delta, a
tool call's input; the first one is often empty) or `thinking` (thinking_delta). An `error`
event ends a failed stream: Anthropic sends `{"type":"error","error":{...}}`, llama-server its
own error object, so the event's name decides, not its data's shape.

Input tokens: Anthropic counts prompt-cache reads and writes apart from `input_tokens`
(llama-server does the same with `cache_read_input_tokens`); the prompt is their sum.
"""

from __future__ import annotations

from typing import Any

Usage = tuple[int | None, int | None]  # (prompt, completion) tokens; None: not said here

OUTPUT, PARSE, NOTHING = 1, 2, 0
_DELTA_TEXT_KEYS = ("text", "partial_json", "thinking")
_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")


def event_facts(obj: dict[str, Any], event_name: str) -> tuple[bool, Usage | None, str | None]:
    """(carries output, usage, error message) of one parsed event."""
    kind = obj.get("type")
    name = event_name or (kind if isinstance(kind, str) else "")
    if name == "error" or kind == "error":
        return False, None, _error_message(obj)
    if name == "content_block_delta":
        return _delta_has_output(obj.get("delta")), None, None
    if name == "message_start":
        message = obj.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
        return False, _usage(usage, completion=False), None
    if name == "message_delta":
        return False, _usage(obj.get("usage"), completion=True), None
    return False, None, None


def body_facts(obj: dict[str, Any]) -> tuple[bool, Usage | None]:
    """(has output, usage) of a whole, non-streamed Messages answer."""
    content = obj.get("content")
    output = isinstance(content, list) and any(_block_has_output(b) for b in content)
    return output, _usage(obj.get("usage"), completion=True)


def fast_kind(piece: bytes) -> int:
    """After the first output, which events need parsing (split invariant: bytes only).

    Deltas are output; `message_delta` (usage) and `error` events are parsed; pings, block
    starts and stops and `message_stop` say nothing the totals need.
    """
    if b"content_block_delta" in piece:
        return OUTPUT
    if b"message_delta" in piece or b"error" in piece[:16]:  # `event: error`
        return PARSE
    return NOTHING


def _delta_has_output(delta: Any) -> bool:
    return isinstance(delta, dict) and any(
        isinstance(value := delta.get(key), str) and value for key in _DELTA_TEXT_KEYS
    )


def _block_has_output(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("type") == "tool_use":
        return True
    return any(isinstance(v := block.get(k), str) and v for k in ("text", "thinking"))


def _usage(usage: Any, *, completion: bool) -> Usage | None:
    """Input tokens (with cache reads/writes) and, if asked, output tokens. `message_start`'s
    output count is a placeholder (0 or 1) the final `message_delta` replaces: not read."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("input_tokens"))
    if prompt is not None:
        prompt += sum(_int(usage.get(key)) or 0 for key in _CACHE_KEYS)
    output = _int(usage.get("output_tokens")) if completion else None
    return None if prompt is None and output is None else (prompt, output)


def _error_message(obj: dict[str, Any]) -> str:
    error = obj.get("error")
    source = error if isinstance(error, dict) else obj
    message = source.get("message")
    if isinstance(message, str) and message:
        return message
    return error if isinstance(error, str) and error else "error"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
