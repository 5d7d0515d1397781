"""The alternative upstream clients, kept for measurement and as a fallback.

`LANEGATE_UPSTREAM_CLIENT=aiohttp` or `httpx` selects them (see upstream_client.py for the
numbers that made `lean` the default). Both map their errors onto ConnectionError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from gateway.policy.spec import UpstreamSpec
from gateway.upstreams.client import UpstreamResponse, default_headers, pool_size

if TYPE_CHECKING:
    import httpx


class _AiohttpResponse:
    __slots__ = ("_response", "content_type", "raw_headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.raw_headers = list(response.raw_headers)
        self.content_type = response.headers.get("content-type", "").encode("latin-1")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

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
        total, _ = pool_size(spec)
        connector = aiohttp.TCPConnector(
            limit=total, limit_per_host=total, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=CIMultiDict(default_headers(spec)),
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
        try:
            response = await self._session.request(
                method, self._url(path), data=body, headers=headers, allow_redirects=False
            )
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
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
        total, keepalive = pool_size(spec)
        self._client = httpx.AsyncClient(
            base_url=spec.base_url,
            headers=default_headers(spec),
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
