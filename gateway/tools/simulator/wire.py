"""Wire formats of the simulated host: the bytes Ollama and OpenAI-compatible servers send.

Owns one format object per API (OpenAI chat and text completions, the Responses API, Ollama
chat and generate), the JSON bodies of the non-generation endpoints, and reading the request
fields the simulator needs (prompt text, limits, model names). Per-token chunks are
byte templates built once per request, so a chunk costs two concatenations rather than a
`json.dumps`. Must not touch sockets or the engine; `server` does the sending.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.tools.simulator.engine import TOKENS, ModelSpec, Profile
from gateway.tools.simulator.runner import Generation

OLLAMA_VERSION = "0.12.6"
_MODEL_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z, a stable `created` for /v1/models

_dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_TOKEN_JSON = {t: _dumps(t).encode() for t in (*TOKENS, *(t.lstrip().capitalize() for t in TOKENS))}


def token_json(text: str) -> bytes:
    """A token as a JSON string literal; the simulator's own words are pre-encoded."""
    cached = _TOKEN_JSON.get(text)
    return cached if cached is not None else _dumps(text).encode()


def dumps(obj: Any) -> bytes:
    return _dumps(obj).encode()


def prompt_text(value: Any) -> str:
    """Flatten message content (a string, or parts carrying `text`) for token estimates."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(prompt_text(part) for part in value)
    if isinstance(value, dict):
        return prompt_text(value.get("text", "")) + prompt_text(value.get("content", ""))
    return ""


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def embedding_inputs(value: Any) -> list[str]:
    """Embedding input: a string, a list of strings, or pre-tokenized integer lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise ValueError("invalid input type")


def find_model(profile: Profile, name: str) -> ModelSpec | None:
    """A served model by name, with Ollama's implicit `:latest` tag; any name if allowed."""
    for model in profile.models:
        if model.name in (name, name + ":latest"):
            return model
    return ModelSpec(name=name) if profile.accept_any_model else None


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(start: float | None, end: float | None) -> int:
    if start is None or end is None:
        return 0
    return max(0, int((end - start) * 1e9))


class StreamFormat(Protocol):
    """How one API frames a generation: streamed pieces, or one body when not streaming."""

    media_type: str

    def head(self) -> bytes: ...
    def token(self, text: str) -> bytes: ...
    def tail(self, gen: Generation) -> bytes: ...
    def body(self, gen: Generation, text: str) -> bytes: ...


def openai_usage(gen: Generation) -> dict[str, int]:
    total = gen.prompt_tokens + gen.completion_tokens
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": total,
    }


class _OpenAIStream:
    """The framing chat and text completions share: one prebuilt prefix per token, a finish
    chunk, the `include_usage` chunk, then `[DONE]`."""

    media_type = "text/event-stream"
    object_name = ""
    token_key = b""  # what precedes a token's JSON inside `choices[0]`
    token_end = b""  # what closes it

    def __init__(self, gen_id: str, model: str, created: int, include_usage: bool) -> None:
        self._base = {
            "id": gen_id,
            "object": self.object_name,
            "created": created,
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        self._include_usage = include_usage
        prefix = dumps(self._base)[:-1]
        self._pre = b"data: " + prefix + b',"choices":[{"index":0,' + self.token_key
        self._post = self.token_end + b',"logprobs":null,"finish_reason":null}]}\n\n'

    def token(self, text: str) -> bytes:
        return self._pre + token_json(text) + self._post

    def _tail(self, gen: Generation, choice: dict[str, Any]) -> bytes:
        choice = {"index": 0, **choice, "logprobs": None, "finish_reason": gen.finish_reason}
        out = b"data: " + dumps({**self._base, "choices": [choice]}) + b"\n\n"
        if self._include_usage:
            usage = {**self._base, "choices": [], "usage": openai_usage(gen)}
            out += b"data: " + dumps(usage) + b"\n\n"
        return out + b"data: [DONE]\n\n"


class ChatCompletions(_OpenAIStream):
    """`chat.completion.chunk` SSE as llama.cpp and Ollama send it; `[DONE]` ends the stream."""

    object_name = "chat.completion.chunk"
    token_key = b'"delta":{"content":'
    token_end = b"}"

    def head(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return b"data: " + dumps({**self._base, "choices": [choice]}) + b"\n\n"

    def tail(self, gen: Generation) -> bytes:
        return self._tail(gen, {"delta": {}})

    def body(self, gen: Generation, text: str) -> bytes:
        message = {"role": "assistant", "content": text}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": gen.finish_reason,
        }
        base = {**self._base, "object": "chat.completion"}
        return dumps({**base, "choices": [choice], "usage": openai_usage(gen)})


class TextCompletions(_OpenAIStream):
    """`text_completion` SSE for /v1/completions; same framing as chat, text in `choices[].text`."""

    object_name = "text_completion"
    token_key = b'"text":'

    def head(self) -> bytes:
        return b""

    def tail(self, gen: Generation) -> bytes:
        return self._tail(gen, {"text": ""})

    def body(self, gen: Generation, text: str) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": gen.finish_reason}
        return dumps({**self._base, "choices": [choice], "usage": openai_usage(gen)})


class Responses:
    """OpenAI Responses API: typed SSE events (`event:` + `data:`), no `[DONE]` at the end."""

    media_type = "text/event-stream"

    def __init__(self, resp_id: str, model: str, created: int, max_output: int | None) -> None:
        self._id, self._model, self._created, self._max = resp_id, model, created, max_output
        self._item_id = "msg_" + resp_id.removeprefix("resp_")
        self._seq = 0
        self._parts: list[str] = []
        self._pre = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"item_id":"' + self._item_id.encode() + b'","output_index":0,"content_index":0,'
            b'"logprobs":[],"delta":'
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"

    def _message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [_output_text(text)]
        return {
            "id": self._item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def response(self, gen: Generation | None, text: str | None) -> dict[str, Any]:
        status, incomplete, usage = "in_progress", None, None
        if gen is not None:
            status = "incomplete" if gen.finish_reason == "length" else "completed"
            if status == "incomplete":
                incomplete = {"reason": "max_output_tokens"}
            usage = responses_usage(gen)
        output = [] if text is None else [self._message("completed", text)]
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self._model,
            "output": output,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": None,
            "max_output_tokens": self._max,
            "parallel_tool_calls": True,
            "temperature": None,
            "top_p": None,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "usage": usage,
        }

    def head(self) -> bytes:
        started = self.response(None, None)
        return (
            self._event("response.created", response=started)
            + self._event("response.in_progress", response=started)
            + self._event(
                "response.output_item.added",
                output_index=0,
                item=self._message("in_progress", None),
            )
            + self._event(
                "response.content_part.added",
                item_id=self._item_id,
                output_index=0,
                content_index=0,
                part=_output_text(""),
            )
        )

    def token(self, text: str) -> bytes:
        self._parts.append(text)
        seq = str(self._seq).encode()
        self._seq += 1
        return self._pre + token_json(text) + b',"sequence_number":' + seq + b"}\n\n"

    def tail(self, gen: Generation) -> bytes:
        text = "".join(self._parts)
        where = {"item_id": self._item_id, "output_index": 0, "content_index": 0}
        return (
            self._event("response.output_text.done", **where, text=text, logprobs=[])
            + self._event("response.content_part.done", **where, part=_output_text(text))
            + self._event(
                "response.output_item.done", output_index=0, item=self._message("completed", text)
            )
            + self._event("response.completed", response=self.response(gen, text))
        )

    def body(self, gen: Generation, text: str) -> bytes:
        return dumps(self.response(gen, text))


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses_usage(gen: Generation) -> dict[str, Any]:
    return {
        "input_tokens": gen.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": gen.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }


def ollama_timings(gen: Generation) -> dict[str, Any]:
    """The final object's counters, in nanoseconds as Ollama reports them."""
    return {
        "done_reason": gen.finish_reason,
        "total_duration": _ns(gen.received_at, gen.finished_at),
        "load_duration": 0,
        "prompt_eval_count": gen.prompt_tokens,
        "prompt_eval_duration": _ns(gen.admitted_at, gen.first_token_at),
        "eval_count": gen.completion_tokens,
        "eval_duration": _ns(gen.first_token_at, gen.finished_at),
    }


class OllamaStream:
    """Ollama /api/chat (`message.content`) or /api/generate (`response`) NDJSON objects."""

    media_type = "application/x-ndjson"

    def __init__(self, model: str, chat: bool) -> None:
        self._model, self._chat = model, chat
        self._created = rfc3339_now()
        head = dumps({"model": model, "created_at": self._created})[:-1]
        if chat:
            self._pre = head + b',"message":{"role":"assistant","content":'
            self._post = b'},"done":false}\n'
        else:
            self._pre, self._post = head + b',"response":', b',"done":false}\n'

    def head(self) -> bytes:
        return b""

    def token(self, text: str) -> bytes:
        return self._pre + token_json(text) + self._post

    def _final(self, gen: Generation, text: str) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self._model, "created_at": rfc3339_now()}
        if self._chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        return {**out, "done": True, **ollama_timings(gen)}

    def tail(self, gen: Generation) -> bytes:
        return dumps(self._final(gen, "")) + b"\n"

    def body(self, gen: Generation, text: str) -> bytes:
        return dumps(self._final(gen, text))


# ------------------------------------------------------------------------- model listings


def digest(model: ModelSpec) -> str:
    """Hex sha256 without a prefix, as /api/tags reports it; stable per model name."""
    return hashlib.sha256(model.name.encode()).hexdigest()


def model_details(model: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


def ollama_tag(model: ModelSpec) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": model.size_bytes,
        "digest": digest(model),
        "details": model_details(model),
    }


def ollama_ps_entry(model: ModelSpec, expires_at: str) -> dict[str, Any]:
    return {
        **ollama_tag(model),
        "expires_at": expires_at,
        "size_vram": model.size_bytes,
        "context_length": model.context_length,
    }


def ollama_show(model: ModelSpec) -> dict[str, Any]:
    arch = model.family.replace("-", "_")
    return {
        "modelfile": f"# Modelfile generated by lanegate simulate\nFROM {model.name}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": model_details(model),
        "model_info": {
            "general.architecture": arch,
            f"{arch}.context_length": model.context_length,
        },
        "capabilities": list(model.capabilities),
        "modified_at": "2025-01-01T00:00:00Z",
    }


def openai_model(model: ModelSpec) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": _MODEL_CREATED, "owned_by": "library"}
