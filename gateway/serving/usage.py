"""Token usage for streams whose client did not ask for it, invisible to that client. Pure.

OpenAI-style streams report usage only when the request says
`stream_options: {"include_usage": true}`; most clients never do, so the ledger, budgets and
token counters saw estimates. Ollama and mlx_lm answer that option with one extra event just
before `[DONE]` (`"choices": []` plus `usage`) and change nothing else (their other chunks
carry no `usage`: Ollama's `openai/openai.go` omits it, mlx_lm's `server.py` adds it only to
non-streamed bodies), so the gateway asks on the client's behalf and removes that one event
from what the client receives: the client's stream is the one it would have had without the
gateway.

Not asked: llama.cpp's server already puts exact counts in the finish chunk's `timings`, and
`include_usage` would move them from that chunk into the extra one; OpenAI adds
`"usage": null` to every chunk; LM Studio is not known to leave the other chunks alone. Their
streams keep the counts they carry (or the counted estimate). Ollama's native API needs
nothing: its final `done` object always carries the counts.

Must not: parse anything but the few events that mention `"usage"` (one substring search per
forwarded piece otherwise), or change any other byte of the stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.policy.spec import UpstreamKind
from gateway.serving.stream_parser import Api

ASKING_KINDS = frozenset({UpstreamKind.OLLAMA, UpstreamKind.MLX})
_APIS = frozenset({Api.CHAT, Api.COMPLETIONS})
_OPTION = b'"stream_options":{"include_usage":true}'
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n")


def should_ask(
    api: Api | None, stream: bool, body: dict[str, Any] | None, kind: UpstreamKind
) -> bool:
    """Ask this upstream for usage: a chat/completions stream whose client did not ask, to an
    upstream that answers with a separate usage event and nothing else."""
    if api not in _APIS or not stream or body is None or kind not in ASKING_KINDS:
        return False
    options = body.get("stream_options")
    if options is None:
        return True
    return isinstance(options, dict) and options.get("include_usage") is not True


def asking_body(raw: bytes, body: dict[str, Any]) -> bytes:
    """`raw` with `stream_options.include_usage` set; the other bytes unchanged when the
    client sent no `stream_options` (inserted after the opening brace: no re-serialising)."""
    options = body.get("stream_options")
    if options is None:
        start = raw.index(b"{") + 1
        empty = raw[start:].lstrip()[:1] == b"}"
        return raw[:start] + _OPTION + (b"" if empty else b",") + raw[start:]
    merged = {**body, "stream_options": {**options, "include_usage": True}}
    return json.dumps(merged, separators=(",", ":")).encode()


def strip_usage_event(ready: bytes) -> bytes:
    """`ready` (whole SSE events, as the relay forwards them) without usage-only events."""
    if b'"usage"' not in ready:
        return ready
    kept: list[bytes] = []
    start = 0
    for end in _EVENT_END.finditer(ready):
        event = ready[start : end.end()]
        start = end.end()
        if not _usage_only(event):
            kept.append(event)
    kept.append(ready[start:])
    return b"".join(kept)


def _usage_only(event: bytes) -> bool:
    if b'"usage"' not in event:
        return False
    data = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    try:
        obj = json.loads(b"\n".join(data)) if data else None
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
