"""The simulated host's HTTP surface: Ollama-native and OpenAI-compatible endpoints.

Owns request parsing (model, prompt size, token limit), error bodies in each API's shape,
and the ASGI response that runs a generation while watching for the client to disconnect.
Timing and scheduling belong to `runner`/`engine`, byte framing to `wire`. Built whole by
`create_app(profile)`; the host lives in app state, never in a module global.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import LanegateError
from gateway.tools.simulator import engine, wire
from gateway.tools.simulator.engine import ModelSpec, Profile
from gateway.tools.simulator.runner import Generation, GenRequest, SimHost, create_host

BUSY = "server busy, please try again.  maximum pending requests exceeded"
_JSON = "application/json; charset=utf-8"
_KEEP_ALIVE_S = 300


class ApiError(LanegateError):
    """An error answered in the caller's API shape (Ollama native or OpenAI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def error_response(status: int, message: str, openai: bool) -> Response:
    """Ollama: `{"error": msg}`; /v1: `{"error": {"message", "type", "param", "code"}}`."""
    if not openai:
        return Response(wire.dumps({"error": message}), status, media_type=_JSON)
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    err = {"message": message, "type": kind, "param": None, "code": None}
    return Response(wire.dumps({"error": err}), status, media_type=_JSON)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, _is_openai(request))


def _host(request: Request) -> SimHost:
    host: SimHost = request.app.state.host
    return host


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def resolve_model(profile: Profile, name: Any) -> ModelSpec:
    """Find a served model, accepting Ollama's implicit `:latest` tag."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "model is required")
    model = wire.find_model(profile, name)
    if model is None:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    return model


def _gen_request(
    request: Request, model: ModelSpec, prompt: str, limit: Any, seed: Any, messages: int = -1
) -> GenRequest:
    """`messages` >= 0 marks a chat request, whose template adds prompt tokens per message."""
    max_tokens = wire.int_or_none(limit)
    if max_tokens is not None and max_tokens < 0:
        max_tokens = None  # Ollama's num_predict -1/-2: until the model stops
    elif max_tokens is not None:
        max_tokens = min(max_tokens, model.context_length)  # generation ends at a full context
    return GenRequest(
        request_id=request.headers.get("x-request-id", ""),
        model=model.name,
        prompt_tokens=(
            engine.chat_prompt_tokens(_host(request).profile, prompt, messages)
            if messages >= 0
            else engine.estimate_tokens(prompt)
        ),
        max_tokens=max_tokens,
        seed=wire.int_or_none(seed),
    )


def _submit(request: Request, req: GenRequest) -> Generation:
    gen = _host(request).submit(req)
    if gen is None:
        raise ApiError(503, BUSY)
    return gen


class GenerationResponse(Response):
    """Runs one generation to the client: streamed pieces or one body at the end.

    Nothing is sent until the first token exists (as Ollama does), unless the profile asks
    for headers at once or when the request takes a slot (as llama-server does). A watcher
    task awaits `http.disconnect`; if it comes first the generation is cancelled at once,
    which frees its slot and records the cancel.
    """

    def __init__(self, gen: Generation, fmt: wire.StreamFormat, stream: bool, profile: Profile):
        self.gen, self.fmt, self.stream = gen, fmt, stream
        self.early, self.on_admission = profile.early_headers, profile.headers_on_admission
        self.status_code = 200
        self.background = None
        media = fmt.media_type if stream else _JSON
        self.raw_headers = [
            (b"content-type", media.encode()),
            (b"x-request-id", gen.request_id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher: asyncio.Task[None] | None = None
        if not self.gen.instant:
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
            watcher.add_done_callback(self._on_disconnect)
        try:
            await (self._stream(send) if self.stream else self._whole(send))
        finally:
            if watcher is not None:
                watcher.remove_done_callback(self._on_disconnect)
                watcher.cancel()

    def _on_disconnect(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self.gen.cancel()

    async def _start(self, send: Send, length: int | None = None) -> None:
        headers = self.raw_headers
        if length is not None:
            headers = [*headers, (b"content-length", str(length).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _stream(self, send: Send) -> None:
        gen, fmt = self.gen, self.fmt
        started, first = self.early, True
        if not started and self.on_admission:
            await gen.wait_admitted()
            started = not gen.cancelled
        if started:
            await self._start(send)
        while texts := await gen.batch():
            if not started:
                await self._start(send)
                started = True
            pieces = [fmt.head()] if first else []
            first = False
            pieces.extend(fmt.token(text) for text in texts)
            last = gen.done and not gen.cancelled
            if last:
                pieces.append(fmt.tail(gen))
            await send(
                {"type": "http.response.body", "body": b"".join(pieces), "more_body": not last}
            )
            if last:
                return
        if started and not gen.cancelled:  # finished with nothing left to drain
            await send({"type": "http.response.body", "body": fmt.tail(gen), "more_body": False})

    async def _whole(self, send: Send) -> None:
        parts: list[str] = []
        while texts := await self.gen.batch():
            parts.extend(texts)
        if self.gen.cancelled:
            return
        body = self.fmt.body(self.gen, "".join(parts))
        await self._start(send, len(body))
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _respond(request: Request, gen: Generation, fmt: wire.StreamFormat, stream: bool) -> Response:
    return GenerationResponse(gen, fmt, stream, _host(request).profile)


# ---------------------------------------------------------------------------- OpenAI /v1


def _stream_opts(body: dict[str, Any]) -> tuple[bool, bool]:
    opts = body.get("stream_options")
    usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    return bool(body.get("stream")), usage


async def chat_completions(request: Request) -> Response:
    body = await _body(request)
    model = resolve_model(_host(request).profile, body.get("model"))
    messages = body.get("messages", [])
    prompt = wire.prompt_text(messages)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    count = len(messages) if isinstance(messages, list) else 1
    gen = _submit(request, _gen_request(request, model, prompt, limit, body.get("seed"), count))
    stream, usage = _stream_opts(body)
    fmt = wire.ChatCompletions(f"chatcmpl-sim{gen.seq_no}", model.name, int(time.time()), usage)
    return _respond(request, gen, fmt, stream)


async def completions(request: Request) -> Response:
    body = await _body(request)
    model = resolve_model(_host(request).profile, body.get("model"))
    prompt = wire.prompt_text(body.get("prompt", ""))
    req = _gen_request(request, model, prompt, body.get("max_tokens"), body.get("seed"))
    gen = _submit(request, req)
    stream, usage = _stream_opts(body)
    fmt = wire.TextCompletions(f"cmpl-sim{gen.seq_no}", model.name, int(time.time()), usage)
    return _respond(request, gen, fmt, stream)


async def responses(request: Request) -> Response:
    body = await _body(request)
    model = resolve_model(_host(request).profile, body.get("model"))
    prompt = wire.prompt_text([body.get("instructions", ""), body.get("input", "")])
    limit = wire.int_or_none(body.get("max_output_tokens"))
    gen = _submit(request, _gen_request(request, model, prompt, limit, body.get("seed")))
    fmt = wire.Responses(f"resp_sim{gen.seq_no:08d}", model.name, int(time.time()), limit)
    return _respond(request, gen, fmt, bool(body.get("stream")))


async def _embed(request: Request, body: dict[str, Any], key: str) -> tuple[str, list[Any], int]:
    host = _host(request)
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
    name, vectors, tokens = await _embed(request, await _body(request), "input")
    data = [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    payload = {"object": "list", "data": data, "model": name, "usage": usage}
    return Response(wire.dumps(payload), media_type=_JSON)


async def list_models(request: Request) -> Response:
    data = [wire.openai_model(m) for m in _host(request).profile.models]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    name = request.path_params["model"]
    for model in _host(request).profile.models:
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
    body = await _body(request)
    model = resolve_model(_host(request).profile, body.get("model"))
    prompt = wire.prompt_text([body.get("system", ""), body.get("messages" if chat else "prompt")])
    if not prompt:
        return _ollama_loaded(model, chat)
    limit, seed = _ollama_limit(body)
    messages = body.get("messages") if chat else None
    count = (len(messages) if isinstance(messages, list) else 1) if chat else -1
    gen = _submit(request, _gen_request(request, model, prompt, limit, seed, count))
    fmt = wire.OllamaStream(model.name, chat)
    return _respond(request, gen, fmt, body.get("stream", True) is not False)


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
    name, vectors, tokens = await _embed(request, await _body(request), "input")
    total = int((time.monotonic() - started) * 1e9)
    payload = {
        "model": name,
        "embeddings": vectors,
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }
    return Response(wire.dumps(payload), media_type=_JSON)


async def api_embeddings(request: Request) -> Response:
    """The legacy single-prompt endpoint."""
    _, vectors, _ = await _embed(request, await _body(request), "prompt")
    return Response(wire.dumps({"embedding": vectors[0]}), media_type=_JSON)


async def api_show(request: Request) -> Response:
    body = await _body(request)
    name = body.get("model") or body.get("name")
    return JSONResponse(wire.ollama_show(resolve_model(_host(request).profile, name)))


async def api_tags(request: Request) -> Response:
    return JSONResponse({"models": [wire.ollama_tag(m) for m in _host(request).profile.models]})


async def api_ps(request: Request) -> Response:
    expires = datetime.now(UTC) + timedelta(seconds=_KEEP_ALIVE_S)
    stamp = expires.isoformat().replace("+00:00", "Z")
    models = [wire.ollama_ps_entry(m, stamp) for m in _host(request).profile.models]
    return JSONResponse({"models": models})


async def api_version(request: Request) -> Response:
    return JSONResponse({"version": wire.OLLAMA_VERSION})


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


# ------------------------------------------------------------------------- health and sim


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def sim_signals(request: Request) -> Response:
    signals = _host(request).signals()
    return JSONResponse({name: getattr(signals, name) for name in signals.__slots__})


async def sim_stats(request: Request) -> Response:
    host = _host(request)
    active, queued = host.counts()
    return JSONResponse(host.stats.snapshot(host.profile, active, queued))


async def sim_reset(request: Request) -> Response:
    _host(request).reset()
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
        Route("/health", health, methods=["GET"]),
        Route("/sim/signals", sim_signals, methods=["GET"]),
        Route("/sim/stats", sim_stats, methods=["GET"]),
        Route("/sim/reset", sim_reset, methods=post),
        Route("/", root, methods=["GET", "HEAD"]),
    ]
    handlers = {ApiError: _api_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
