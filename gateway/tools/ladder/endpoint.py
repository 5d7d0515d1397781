"""What the ladder reads about the server it loads: the model's digest, the server's version.

The digest comes from the same host as `--base-url`: Ollama's `/api/tags` (and so a lanegate
gateway in front of Ollama, which relays it), else an OpenAI `/v1/models` entry that carries
one. llama.cpp and LM Studio publish none: the report then says "unknown" rather than guess.
The server version: Ollama's `/api/version`, else llama.cpp's `/props` `build_info`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.errors import LanegateError
from gateway.upstreams.model_lists import ollama_tags

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    digest: str
    digest_source: str  # the URL it came from, or why it is unknown
    server_version: str | None


def host_of(base_url: str) -> str:
    """`http://h:p/v1` → `http://h:p`: where Ollama's native API lives."""
    url = base_url.rstrip("/")
    return url.removesuffix("/v1")


async def model_info(
    base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 5.0
) -> ModelInfo:
    """The model's digest and the server's version; raises `Unreachable` when the host
    does not answer at all (an HTTP error status is an answer: the digest is then unknown)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as client:
        tags_url = host_of(base_url) + "/api/tags"
        models_url = base_url.rstrip("/") + "/models"
        digest = _digest_from_tags(await _get_json(client, tags_url), model)
        source = tags_url
        if digest is None:
            digest = _digest_from_models(await _get_json(client, models_url), model)
            source = models_url
        server_version = await _server_version(client, host_of(base_url))
    if digest is None:
        return ModelInfo(UNKNOWN, "the server publishes no digest", _text(server_version))
    return ModelInfo(digest, source, _text(server_version))


async def _server_version(client: httpx.AsyncClient, host: str) -> str | None:
    """Ollama's `/api/version`, else llama.cpp's `/props` `build_info` ("b5123-1a2b3c4")."""
    version = await _get_json(client, host + "/api/version")
    if isinstance(version, dict) and isinstance(version.get("version"), str):
        return str(version["version"])
    props = await _get_json(client, host + "/props")
    build = props.get("build_info") if isinstance(props, dict) else None
    return f"llama.cpp {build}" if isinstance(build, str) and build else None


class Unreachable(LanegateError):
    """Nothing answers at the base URL: no point in starting the ladder."""


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        response = await client.get(url)
    except httpx.TransportError as exc:
        raise Unreachable(f"nothing answers at {url}: {type(exc).__name__}: {exc}") from None
    with contextlib.suppress(ValueError):
        if response.status_code == 200:
            return response.json()
    return None


def _digest_from_tags(body: Any, model: str) -> str | None:
    digests = ollama_tags(body).digests
    return digests.get(model) or digests.get(f"{model}:latest")


def _digest_from_models(body: Any, model: str) -> str | None:
    items = body.get("data") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("id") == model:
            digest = item.get("digest")
            return digest if isinstance(digest, str) and digest else None
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


async def live_gateway_warning(base_url: str, *, timeout_s: float = 5.0) -> str | None:
    """A warning when `base_url` is a running lanegate whose offload this load may trip.

    A lanegate answers `/metrics` (open, like any exporter) with `lanegate_` series, and with
    `lanegate_offload_state` when its policy has an offload section: a ladder through it
    raises TTFT on purpose, which the offload loop reads as a slow host and answers by sending
    offloadable lanes to the remote pool, so later rungs measure the pool, not this host.
    """
    url = host_of(base_url) + "/metrics"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or "lanegate_" not in response.text:
        return None
    if "lanegate_offload_state" not in response.text:
        return None
    return (
        f"{host_of(base_url)} is a lanegate gateway with offload configured: this ladder's "
        "load can trip its offload (rising TTFT reads as a slow host), and later rungs would "
        "then measure the remote pool. Ladder the engine directly, or pin it local for the run: "
        "`curl -X POST -H 'Authorization: Bearer <admin key>' -d '{\"mode\": \"force-local\"}' "
        f"{host_of(base_url)}/admin/offload`."
    )
