"""One pooled HTTP/1.1 keep-alive client per upstream: the relay's only I/O seam upstream.

Two implementations behind one small interface, chosen by `LANEGATE_UPSTREAM_CLIENT`:
- `aiohttp` (default): aiohttp's client directly, with URLs, timeouts and headers built once.
- `httpx`: the httpx API over aiohttp's transport (`httpx-aiohttp`).
- `lean`: our own HTTP/1.1 client on asyncio Protocols and httptools (`upstream_http.py`).
Measured on this machine class (docs/performance.md), httpx's own transport cost 3.6-4.3 ms
of CPU per request at 32-64 in flight; httpx over aiohttp ~0.55 ms; aiohttp directly about half
of that again, which is what lets one gateway process pass a quarter of direct req/s.
Clients are created in the app's lifespan (aiohttp needs a running loop), closed on shutdown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.policy.spec import UpstreamSpec

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("lanegate.upstream")

# Upstreams must not compress: the relay scans streamed events as they pass.
_BASE_HEADERS = {"accept-encoding": "identity"}
# Errors that mean "the upstream failed us" (vs. a bug of ours). httpx is imported only when
# chosen (it costs resident memory the default path does not need), so HttpxUpstream maps its
# transport errors onto ConnectionError, an OSError.
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)


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


def create_client(spec: UpstreamSpec, kind: str = "aiohttp") -> UpstreamClient:
    if kind == "httpx":
        return HttpxUpstream(spec)
    if kind == "lean":
        from gateway.upstream_http import LeanUpstream  # imports this module: import late

        return LeanUpstream(spec)
    return AiohttpUpstream(spec)


def _pool_size(spec: UpstreamSpec) -> tuple[int, int]:
    # Headroom over the real slots: queued requests wait in lanegate, not in the socket pool,
    # but metadata calls and requests finishing their last bytes need connections too.
    return max(64, spec.max_concurrency * 4), max(32, spec.max_concurrency * 2)


def _default_headers(spec: UpstreamSpec) -> dict[str, str]:
    headers = dict(_BASE_HEADERS)
    key = resolve_key(spec)
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


class _AiohttpResponse:
    __slots__ = ("_response", "content_type", "raw_headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.raw_headers = list(response.raw_headers)
        self.content_type = response.headers.get("content-type", "").encode("latin-1")

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def aclose(self) -> None:
        # Releases a fully read connection to the pool; closes one cut short, so the upstream
        # sees the disconnect and stops generating.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpUpstream:
    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        total, _ = _pool_size(spec)
        connector = aiohttp.TCPConnector(limit=total, limit_per_host=total, ttl_dns_cache=300,
                                         keepalive_timeout=30)  # fmt: skip
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=CIMultiDict(_default_headers(spec)),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            # Read timeouts are the relay's (first byte vs idle gap differ); only connect here.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=spec.timeouts.connect_s),
        )
        self._base = URL(spec.base_url)
        self._urls: dict[str, URL] = {}

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._base.with_path(path)
            if len(self._urls) < 256:  # paths with a model id in them are not cached forever
                self._urls[path] = url
        return url

    async def open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> UpstreamResponse:
        response = await self._session.request(
            method, self._url(path), data=body, headers=headers, allow_redirects=False
        )
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        await self._session.close()


class _HttpxResponse:
    __slots__ = ("_response", "content_type", "raw_headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.raw_headers = response.headers.raw
        self.content_type = response.headers.get("content-type", "").encode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    def __init__(self, spec: UpstreamSpec) -> None:
        import httpx
        from httpx_aiohttp import AiohttpTransport

        self._errors = httpx.TransportError
        self.spec = spec
        total, keepalive = _pool_size(spec)
        self._client = httpx.AsyncClient(
            base_url=spec.base_url,
            headers=_default_headers(spec),
            timeout=httpx.Timeout(None, connect=spec.timeouts.connect_s),
            transport=AiohttpTransport(
                limits=httpx.Limits(max_connections=total, max_keepalive_connections=keepalive)
            ),
            follow_redirects=False,
        )

    async def open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> UpstreamResponse:
        request = self._client.build_request(method, path, content=body, headers=headers)
        try:
            return _HttpxResponse(await self._client.send(request, stream=True))
        except self._errors as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def resolve_key(spec: UpstreamSpec) -> str | None:
    """The upstream's own API key, from the `env:VAR` reference in the policy."""
    if spec.api_key_ref is None:
        return None
    variable = spec.api_key_ref.removeprefix("env:")
    key = os.environ.get(variable)
    if not key:
        log.warning("upstream %s: %s is not set; sending no key", spec.name, variable)
    return key or None
