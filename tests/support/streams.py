"""Small client helpers shared by tests that hold streams open against a gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx


def chat_body(model: str) -> dict[str, object]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def stream_chat(
    http: httpx.AsyncClient, model: str, lane: str = "interactive"
) -> tuple[int, httpx.Headers, bytes]:
    """A streamed chat in `lane`, read to the end: (status, headers, every byte)."""
    headers = {"x-lane": lane}
    body = chat_body(model)
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return r.status_code, r.headers, raw


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        # The condition is often a scripted upstream's, on its own thread's loop: poll it.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def split_into(body: bytes, parts: int) -> list[bytes]:
    """`body` in `parts` nearly equal chunks (a recorded stream, replayed piece by piece)."""
    size = -(-len(body) // parts)
    return [body[i : i + size] for i in range(0, len(body), size)]


def shape(value: Any) -> Any:
    """Key sets and value types, recursively (a list by its first item): what a client's
    parser relies on, without the values a model makes up."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__
