"""Shared request handling of the simulated host: errors in each API's shape, reading bodies
and models, and the ASGI response that runs one generation to the client.

`server` (OpenAI and Ollama endpoints) and `agents` (Anthropic Messages, rerank) build on it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import LanegateError
from gateway.tools.simulator import engine, wire
from gateway.tools.simulator.engine import ModelSpec, Profile
from gateway.tools.simulator.runner import Generation, GenRequest, SimHost

BUSY = "server busy, please try again.  maximum pending requests exceeded"
JSON_TYPE = "application/json; charset=utf-8"
KEEP_ALIVE_S = 300


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
        return Response(wire.dumps({"error": message}), status, media_type=JSON_TYPE)
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    err = {"message": message, "type": kind, "param": None, "code": None}
    return Response(wire.dumps({"error": err}), status, media_type=JSON_TYPE)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if request.url.path.startswith("/v1/messages"):  # Anthropic's shape, as llama-server's own
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(exc.status, "api_error")
        error = {"type": "error", "error": {"type": kind, "message": exc.message}}
        return Response(wire.dumps(error), exc.status, media_type=JSON_TYPE)
    return error_response(exc.status, exc.message, _is_openai(request))


def host_of(request: Request) -> SimHost:
    host: SimHost = request.app.state.host
    return host


async def json_body(request: Request) -> dict[str, Any]:
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


def gen_request(
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
            engine.chat_prompt_tokens(host_of(request).profile, prompt, messages)
            if messages >= 0
            else engine.estimate_tokens(prompt)
        ),
        max_tokens=max_tokens,
        seed=wire.int_or_none(seed),
    )


def submit(request: Request, req: GenRequest) -> Generation:
    gen = host_of(request).submit(req)
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
        media = fmt.media_type if stream else JSON_TYPE
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


def respond(request: Request, gen: Generation, fmt: wire.StreamFormat, stream: bool) -> Response:
    return GenerationResponse(gen, fmt, stream, host_of(request).profile)
