"""The body one attempt sends upstream, and how its answer is relayed. Pure.

The client's bytes as they came, unless: the model goes under another name there (the lane's
rewrite, then the upstream's own id); usage is asked for on the client's behalf
(`serving.usage`, then `strip_usage`); or a preemptible non-streamed chat/completions request
goes to a llama.cpp server, which stops a closed stream at once but not a closed non-streamed
request: then it goes as a stream with usage and the relay assembles the non-streamed answer
(`serving.assemble`, then `assemble`). A changed body is encoded once, here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.policy.spec import UpstreamKind
from gateway.serving.stream_events import Api
from gateway.serving.usage import asking_body, should_ask

ASSEMBLED_APIS = frozenset({Api.CHAT, Api.COMPLETIONS})
ASSEMBLED_KINDS = frozenset({UpstreamKind.LLAMACPP})


@dataclass(frozen=True, slots=True)
class UpstreamBody:
    raw: bytes
    strip_usage: bool = False  # the stream's usage event was asked for by the gateway
    assemble: bool = False  # sent as a stream, answered whole (serving.assemble)


def should_assemble(
    api: Api | None, stream: bool, body: dict[str, Any] | None, kind: UpstreamKind, cut: bool
) -> bool:
    """Stream it upstream and assemble: a non-streamed chat/completions request that may be
    preempted (`cut`), to a llama.cpp server."""
    return (
        cut
        and not stream
        and body is not None
        and api in ASSEMBLED_APIS
        and (kind in ASSEMBLED_KINDS)
    )


def body_for(
    raw: bytes,
    body: dict[str, Any] | None,
    facts_model: str | None,
    upstream_model: str | None,
    *,
    api: Api | None,
    stream: bool,
    kind: UpstreamKind,
    preemptible: bool,
) -> UpstreamBody:
    """`upstream_model`: the model's id at this upstream (None: no model to send)."""
    if body is not None and should_assemble(api, stream, body, kind, preemptible):
        options = body.get("stream_options")
        streamed = {
            **body,
            "stream": True,
            "stream_options": {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            },
        }
        if upstream_model is not None:
            streamed["model"] = upstream_model
        return UpstreamBody(json.dumps(streamed, separators=(",", ":")).encode(), assemble=True)
    if upstream_model is None or body is None:
        return UpstreamBody(raw)
    ask = should_ask(api, stream, body, kind)
    if upstream_model == facts_model:
        return UpstreamBody(asking_body(raw, body), True) if ask else UpstreamBody(raw)
    changed = {**body, "model": upstream_model}
    if ask:
        changed["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return UpstreamBody(json.dumps(changed, separators=(",", ":")).encode(), ask)
