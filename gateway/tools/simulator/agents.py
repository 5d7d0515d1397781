"""The APIs agents and RAG front-ends call besides OpenAI's: Anthropic Messages (streamed and
not, tool use), `count_tokens`, and llama.cpp's rerank (`/v1/rerank` and its aliases).

Messages generate through the same engine as chat (its slots, queue and timing); rerank, like
embeddings, costs prefill time only. Bytes are `messages_wire`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.tools.simulator import engine, wire
from gateway.tools.simulator.handling import (
    JSON_TYPE,
    ApiError,
    gen_request,
    host_of,
    json_body,
    resolve_model,
    respond,
    submit,
)
from gateway.tools.simulator.messages_wire import (
    AnthropicMessages,
    rerank_body,
    rerank_scores,
    wants_tool,
)


def _prompt(body: dict[str, Any]) -> tuple[str, int]:
    """The prompt text (system and messages) and its message count."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: at least one message is required")
    return wire.prompt_text([body.get("system", ""), messages]), len(messages)


async def messages(request: Request) -> Response:
    body = await json_body(request)
    model = resolve_model(host_of(request).profile, body.get("model"))
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ApiError(400, "max_tokens: Field required (a positive integer)")
    prompt, count = _prompt(body)
    gen = submit(request, gen_request(request, model, prompt, limit, body.get("seed"), count))
    msg_id, tool = f"msg_sim{gen.seq_no:08d}", wants_tool(body)
    fmt = AnthropicMessages(msg_id, model.name, gen.prompt_tokens, tool)
    return respond(request, gen, fmt, body.get("stream") is True)


async def count_tokens(request: Request) -> Response:
    body = await json_body(request)
    host = host_of(request)
    resolve_model(host.profile, body.get("model"))
    prompt, count = _prompt(body)
    tokens = engine.chat_prompt_tokens(host.profile, prompt, count)
    return Response(wire.dumps({"input_tokens": tokens}), media_type=JSON_TYPE)


async def rerank(request: Request) -> Response:
    body = await json_body(request)
    host = host_of(request)
    name = body.get("model")
    model = resolve_model(host.profile, name) if name else host.profile.models[0]
    query, documents = body.get("query"), _documents(body.get("documents"))
    if not isinstance(query, str):
        raise ApiError(400, '"query" must be provided')
    tokens = sum(engine.estimate_tokens(query + doc) for doc in documents)
    if host.profile.mode == "batching":
        await asyncio.sleep(tokens / host.profile.prefill_tps)
    scores = rerank_scores(query, documents, host.profile.seed)
    top_n = wire.int_or_none(body.get("top_n"))
    return Response(
        wire.dumps(rerank_body(model.name, scores, top_n, tokens)), media_type=JSON_TYPE
    )


def _documents(value: Any) -> list[str]:
    """Documents as strings or `{"text": ...}` objects, at least one."""
    if isinstance(value, list) and value:
        texts = [d.get("text") if isinstance(d, dict) else d for d in value]
        if all(isinstance(t, str) for t in texts):
            return [str(t) for t in texts]
    raise ApiError(400, '"documents" must be a non-empty string array')


def routes() -> list[Route]:
    post = ["POST"]
    return [
        Route("/v1/messages", messages, methods=post),
        Route("/v1/messages/count_tokens", count_tokens, methods=post),
        *(Route(p, rerank, methods=post) for p in ("/v1/rerank", "/v1/reranking", "/rerank")),
    ]
