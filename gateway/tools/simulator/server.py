"""The simulated host's HTTP surface: Ollama-native and OpenAI-compatible endpoints.

Owns the endpoints' request parsing (model, prompt size, token limit); errors, body reading and
the generation response are `handling`'s, Anthropic Messages and rerank are `agents`'.
Timing and scheduling belong to `runner`/`engine`, byte framing to `wire`. Built whole by
`create_app(profile)`; the host lives in app state, never in a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.tools.simulator import agents, engine, wire
from gateway.tools.simulator.engine import ModelSpec, Profile
from gateway.tools.simulator.handling import (
    JSON_TYPE,
    KEEP_ALIVE_S,
    ApiError,
    api_error_handler,
    gen_request,
    host_of,
    json_body,
    resolve_model,
    respond,
    submit,
)
from gateway.tools.simulator.runner import create_host

# ---------------------------------------------------------------------------- OpenAI /v1


def _stream_opts(body: dict[str, Any]) -> tuple[bool, bool]:
    opts = body.get("stream_options")
    usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    return bool(body.get("stream")), usage


async def chat_completions(request: Request) -> Response:
    body = await json_body(request)
    model = resolve_model(host_of(request).profile, body.get("model"))
    messages = body.get("messages", [])
    prompt = wire.prompt_text(messages)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    count = len(messages) if isinstance(messages, list) else 1
    gen = submit(request, gen_request(request, model, prompt, limit, body.get("seed"), count))
    stream, usage = _stream_opts(body)
    fmt = wire.ChatCompletions(f"chatcmpl-sim{gen.seq_no}", model.name, int(time.time()), usage)
    return respond(request, gen, fmt, stream)


async def completions(request: Request) -> Response:
    body = await json_body(request)
    model = resolve_model(host_of(request).profile, body.get("model"))
    prompt = wire.prompt_text(body.get("prompt", ""))
    req = gen_request(request, model, prompt, body.get("max_tokens"), body.get("seed"))
    gen = submit(request, req)
    stream, usage = _stream_opts(body)
    fmt = wire.TextCompletions(f"cmpl-sim{gen.seq_no}", model.name, int(time.time()), usage)
    return respond(request, gen, fmt, stream)


async def responses(request: Request) -> Response:
    body = await json_body(request)
    model = resolve_model(host_of(request).profile, body.get("model"))
    prompt = wire.prompt_text([body.get("instructions", ""), body.get("input", "")])
    limit = wire.int_or_none(body.get("max_output_tokens"))
    gen = submit(request, gen_request(request, model, prompt, limit, body.get("seed")))
    fmt = wire.Responses(f"resp_sim{gen.seq_no:08d}", model.name, int(time.time()), limit)
    return respond(request, gen, fmt, bool(body.get("stream")))


async def _embed(request: Request, body: dict[str, Any], key: str) -> tuple[str, list[Any], int]:
    host = host_of(request)
    model = resolve_model(host.profile, body.get("model"))
    try:
        texts = wire.embedding_inputs(body.get(key, ""))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    tokens = sum(engine.estimate_tokens(t) for t in texts)
    if host.profile.mode == "batching":
        await asyncio.sleep(tokens / host.profile.prefill_tps)
    dim, seed = host.profile.embedding_dim, host.profile.seed
    return model.name, [engine.embedding_vector(seed, t, dim) for t in texts], tokens


async def embeddings(request: Request) -> Response:
    name, vectors, tokens = await _embed(request, await json_body(request), "input")
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    payload = {"object": "list", "data": data, "model": name, "usage": usage}
    return Response(wire.dumps(payload), media_type=JSON_TYPE)


async def list_models(request: Request) -> Response:
    data = [wire.openai_model(m) for m in host_of(request).profile.models]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    for model in host_of(request).profile.models:
        if model.name == name:
            return JSONResponse(wire.openai_model(model))
    raise ApiError(404, f"model '{name}' not found")


# -------------------------------------------------------------------------- Ollama /api


def _ollama_limit(body: dict[str, Any]) -> tuple[Any, Any]:
    options = body.get("options")
    if not isinstance(options, dict):
        return None, None
    return options.get("num_predict"), options.get("seed")


async def _ollama_generate(request: Request, chat: bool) -> Response:
    body = await json_body(request)
    model = resolve_model(host_of(request).profile, body.get("model"))
    prompt = wire.prompt_text([body.get("system", ""), body.get("messages" if chat else "prompt")])
    if not prompt:
        return _ollama_loaded(model, chat)
    limit, seed = _ollama_limit(body)
    messages = body.get("messages") if chat else None
    count = (len(messages) if isinstance(messages, list) else 1) if chat else -1
    gen = submit(request, gen_request(request, model, prompt, limit, seed, count))
    fmt = wire.OllamaStream(model.name, chat)
    return respond(request, gen, fmt, body.get("stream", True) is not False)


def _ollama_loaded(model: ModelSpec, chat: bool) -> Response:
    """An empty prompt only loads the model, answered with done_reason "load"."""
    out: dict[str, Any] = {"model": model.name, "created_at": wire.rfc3339_now()}
    out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return JSONResponse({**out, "done": True, "done_reason": "load"})


async def api_chat(request: Request) -> Response:
    return await _ollama_generate(request, chat=True)


async def api_generate(request: Request) -> Response:
    return await _ollama_generate(request, chat=False)


async def api_embed(request: Request) -> Response:
    started = time.monotonic()
    name, vectors, tokens = await _embed(request, await json_body(request), "input")
    total = int((time.monotonic() - started) * 1e9)
    payload = {
        "model": name,
        "embeddings": vectors,
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }
    return Response(wire.dumps(payload), media_type=JSON_TYPE)


async def api_embeddings(request: Request) -> Response:
    """The legacy single-prompt endpoint."""
    _, vectors, _ = await _embed(request, await json_body(request), "prompt")
    return Response(wire.dumps({"embedding": vectors[0]}), media_type=JSON_TYPE)


async def api_show(request: Request) -> Response:
    body = await json_body(request)
    name = body.get("model") or body.get("name")
    return JSONResponse(wire.ollama_show(resolve_model(host_of(request).profile, name)))


async def api_tags(request: Request) -> Response:
    return JSONResponse({"models": [wire.ollama_tag(m) for m in host_of(request).profile.models]})


async def api_ps(request: Request) -> Response:
    expires = datetime.now(UTC) + timedelta(seconds=KEEP_ALIVE_S)
    stamp = expires.isoformat().replace("+00:00", "Z")
    models = [wire.ollama_ps_entry(m, stamp) for m in host_of(request).profile.models]
    return JSONResponse({"models": models})


async def api_version(request: Request) -> Response:
    return JSONResponse({"version": wire.OLLAMA_VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


# ------------------------------------------------------------------------- health and sim


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def sim_signals(request: Request) -> Response:
    signals = host_of(request).signals()
    return JSONResponse({name: getattr(signals, name) for name in signals.__slots__})


async def sim_stats(request: Request) -> Response:
    host = host_of(request)
    active, queued = host.counts()
    return JSONResponse(host.stats.snapshot(host.profile, active, queued))


async def sim_reset(request: Request) -> Response:
    host_of(request).reset()
    return JSONResponse({"status": "ok"})


def create_app(profile: Profile) -> Starlette:
    """Build the simulator for one profile; its engine starts and stops with the app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        host = create_host(profile)
        app.state.host = host
        await host.start()
        try:
            yield
        finally:
            await host.stop()

    post = ["POST"]
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=post),
        Route("/v1/completions", completions, methods=post),
        Route("/v1/responses", responses, methods=post),
        Route("/v1/embeddings", embeddings, methods=post),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/api/chat", api_chat, methods=post),
        Route("/api/generate", api_generate, methods=post),
        Route("/api/embed", api_embed, methods=post),
        Route("/api/embeddings", api_embeddings, methods=post),
        Route("/api/show", api_show, methods=post),
        Route("/api/tags", api_tags, methods=["GET"]),
        Route("/api/ps", api_ps, methods=["GET"]),
        Route("/api/version", api_version, methods=["GET"]),
        *agents.routes(),
        Route("/health", health, methods=["GET"]),
        Route("/sim/signals", sim_signals, methods=["GET"]),
        Route("/sim/stats", sim_stats, methods=["GET"]),
        Route("/sim/reset", sim_reset, methods=post),
        Route("/", root, methods=["GET", "HEAD"]),
    ]
    handlers = {ApiError: api_error_handler}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
