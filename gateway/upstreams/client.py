"""One pooled HTTP/1.1 keep-alive client per upstream: the relay's only I/O seam upstream.

Three implementations behind one small interface, chosen by `LANEGATE_UPSTREAM_CLIENT`:
- `lean` (default): lanegate's own HTTP/1.1 client on asyncio Protocols and httptools
  (`http11.py`);
- `aiohttp`: aiohttp's client, with URLs, timeouts and headers built once;
- `httpx`: the httpx API over aiohttp's transport (`httpx-aiohttp`).
Measured on this machine class (docs/performance.md): httpx's own transport cost 3.6-4.3 ms of
gateway CPU per request at 32-64 in flight, httpx over aiohttp ~0.45 ms, aiohttp ~0.24 ms,
lean ~0.13 ms. The two alternatives live in `alt.py` and are imported only when
chosen: they also cost resident memory the default path does not need.
Every implementation reports an upstream failure as an OSError (ConnectionError,
TimeoutError), so the relay catches one family. Clients are created in the app's lifespan (they
need a running loop) and closed on shutdown.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Literal, Protocol

from gateway.policy.spec import UpstreamKind, UpstreamSpec

log = logging.getLogger("lanegate.upstream")

# Upstreams must not compress: the relay scans streamed events as they pass.
_BASE_HEADERS = {"accept-encoding": "identity"}
# Errors that mean "the upstream failed us" (vs. a bug of ours).
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (OSError,)
ClientKind = Literal["lean", "aiohttp", "httpx"]


class UpstreamResponse(Protocol):
    status: int
    raw_headers: list[tuple[bytes, bytes]]
    content_type: bytes

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    spec: UpstreamSpec

    async def open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> UpstreamResponse:
        """Send the request; return once the response headers arrived (body not read)."""
        ...

    async def aclose(self) -> None: ...


# Chosen by name, as uvicorn picks its loop and protocol: an import string per kind, so this
# seam imports none of its implementations (they import it) and the heavy ones load only when
# chosen.
CLIENTS: dict[str, str] = {
    "lean": "gateway.upstreams.http11:LeanUpstream",
    "aiohttp": "gateway.upstreams.alt:AiohttpUpstream",
    "httpx": "gateway.upstreams.alt:HttpxUpstream",
}


def create_client(spec: UpstreamSpec, kind: ClientKind = "lean") -> UpstreamClient:
    module_name, _, class_name = CLIENTS[kind].partition(":")
    implementation = getattr(importlib.import_module(module_name), class_name)
    client: UpstreamClient = implementation(spec)
    return client


def pool_size(spec: UpstreamSpec) -> tuple[int, int]:
    # Headroom over the real slots: queued requests wait in lanegate, not in the socket pool,
    # but metadata calls and requests finishing their last bytes need connections too.
    return max(64, spec.max_concurrency * 4), max(32, spec.max_concurrency * 2)


def default_headers(spec: UpstreamSpec) -> dict[str, str]:
    headers = dict(_BASE_HEADERS)
    key = resolve_key(spec)
    if key:
        headers["authorization"] = f"Bearer {key}"
    if spec.kind is UpstreamKind.ANTHROPIC:  # Anthropic's API reads its key and version here
        if key:
            headers["x-api-key"] = key
        headers["anthropic-version"] = ANTHROPIC_VERSION  # a client's own version wins
    return headers


ANTHROPIC_VERSION = "2023-06-01"  # the Messages API's version, for calls no client made


def resolve_key(spec: UpstreamSpec, ref: str | None = None) -> str | None:
    """A key from its `env:VAR` reference in the policy: the upstream's own API key, or
    another reference of that upstream's (its `signals_key`)."""
    ref = spec.api_key_ref if ref is None else ref
    if ref is None:
        return None
    variable = ref.removeprefix("env:")
    key = os.environ.get(variable)
    if not key:
        log.warning("upstream %s: %s is not set; sending no key", spec.name, variable)
    return key or None
