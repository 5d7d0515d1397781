"""Anthropic Messages as the simulated host sends them (the bytes llama-server and Ollama send).

Streamed: `message_start` (usage: input tokens), `content_block_start`, a `ping`, one
`content_block_delta` per token, `content_block_stop`, `message_delta` (stop reason, output
tokens) and `message_stop`, each as `event: <type>` + `data: <json>`. A request that offers
`tools` (and is not answering a tool result) gets one `tool_use` block instead of text: its
input, `{"query": "<generated text>"}`, streams as `input_json_delta` fragments after an empty
first one, as Anthropic's own streams do. Also: the rerank scores and body. No sockets here.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from gateway.tools.simulator.runner import Generation
from gateway.tools.simulator.wire import dumps, token_json

_TOOL_INPUT_KEY = "query"
_WORDS = re.compile(r"\w+")


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **data}) + b"\n\n"


def wants_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call: the first offered, unless the last turn carries a tool's result or
    the client said `tool_choice: none`."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return None
    return tools[0]


class AnthropicMessages:
    """One Messages answer: text, or a tool call when `tool` is given."""

    media_type = "text/event-stream"

    def __init__(
        self, msg_id: str, model: str, prompt_tokens: int, tool: dict[str, Any] | None
    ) -> None:
        self._id, self._model, self._prompt = msg_id, model, prompt_tokens
        self._tool = tool
        kind = "input_json_delta" if tool else "text_delta"
        key = "partial_json" if tool else "text"
        self._pre = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"' + kind.encode() + b'","' + key.encode() + b'":'
        )

    def _message(self, content: list[dict[str, Any]], stop: str | None, out: int) -> dict[str, Any]:
        return {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": self._prompt, "output_tokens": out},
        }

    def _block(self, text: str) -> dict[str, Any]:
        if self._tool is None:
            return {"type": "text", "text": text}
        name = self._tool.get("name")
        tool_id = "toolu_sim" + hashlib.blake2b(self._id.encode(), digest_size=8).hexdigest()
        return {"type": "tool_use", "id": tool_id, "name": name, "input": {_TOOL_INPUT_KEY: text}}

    def _stop_reason(self, gen: Generation) -> str:
        if self._tool is not None:  # the call's JSON is always closed: it is complete
            return "tool_use"
        return "max_tokens" if gen.finish_reason == "length" else "end_turn"

    def head(self) -> bytes:
        start = _event("message_start", {"message": self._message([], None, 1)})
        block = self._block("")
        if self._tool is not None:
            block["input"] = {}
        out = start + _event("content_block_start", {"index": 0, "content_block": block})
        out += _event("ping", {})
        if self._tool is not None:  # an empty fragment first, then the object's opening
            out += self._delta("") + self._delta('{"' + _TOOL_INPUT_KEY + '": "')
        return out

    def _delta(self, fragment: str) -> bytes:
        return self._pre + token_json(fragment) + b"}}\n\n"

    def token(self, text: str) -> bytes:
        if self._tool is None:
            return self._pre + token_json(text) + b"}}\n\n"
        return self._delta(token_json(text)[1:-1].decode())  # the text as JSON string content

    def tail(self, gen: Generation) -> bytes:
        out = self._delta('"}') if self._tool is not None else b""
        out += _event("content_block_stop", {"index": 0})
        delta = {"stop_reason": self._stop_reason(gen), "stop_sequence": None}
        usage = {"output_tokens": gen.completion_tokens}
        out += _event("message_delta", {"delta": delta, "usage": usage})
        return out + _event("message_stop", {})

    def body(self, gen: Generation, text: str) -> bytes:
        content = [self._block(text)]
        return dumps(self._message(content, self._stop_reason(gen), gen.completion_tokens))


def rerank_scores(query: str, documents: list[str], seed: int) -> list[float]:
    """Relevance in [0, 1): the share of the query's words a document has, plus a little
    stable noise (so ties break the same way every run)."""
    words = {w.lower() for w in _WORDS.findall(query)}
    scores = []
    for doc in documents:
        found = {w.lower() for w in _WORDS.findall(doc)}
        overlap = len(words & found) / max(1, len(words))
        digest = hashlib.blake2b(f"{seed}\x00{query}\x00{doc}".encode(), digest_size=4).digest()
        scores.append(round(0.9 * overlap + 0.1 * int.from_bytes(digest) / 2**32, 6))
    return scores


def rerank_body(model: str, scores: list[float], top_n: int | None, tokens: int) -> dict[str, Any]:
    """llama-server's answer: results sorted by score, cut to `top_n`, with token usage."""
    ranked = sorted(enumerate(scores), key=lambda pair: -pair[1])[: top_n or len(scores)]
    results = [{"index": i, "relevance_score": score} for i, score in ranked]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"model": model, "object": "list", "usage": usage, "results": results}
