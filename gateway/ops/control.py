"""The control plane: health, readiness, metrics, offload override, status and reload.

A Starlette app behind the relay's own dispatch (gateway/app.py): only requests that are not
relayed reach it, so its routing costs nothing on the inference path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import BadRequest, GatewayError, NotFound, error_body, shape_for_path
from gateway.observe.metrics import CONTENT_TYPE_LATEST, exposition
from gateway.observe.status import status_routes
from gateway.offload.controller import Mode
from gateway.ops.openapi_route import openapi_route
from gateway.upstreams.client import UPSTREAM_ERRORS, UpstreamClient

if TYPE_CHECKING:
    from gateway.view import GatewayView

Endpoint = Callable[[Request], Awaitable[Response]]

PROBE_ERRORS: tuple[type[BaseException], ...] = (*UPSTREAM_ERRORS, TimeoutError)


def build_control_app(
    gateway: GatewayView, registry: CollectorRegistry, reload_endpoint: Endpoint
) -> Starlette:
    """The control plane's routes, bound to one gateway, its metrics and its reloader."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if gateway.drain.refusing:
            return JSONResponse({"status": "draining"}, status_code=503)
        reachable = await probe_upstreams(gateway)
        ready = any(reachable.values())
        body: dict[str, Any] = {"status": "ready" if ready else "unready", "upstreams": reachable}
        if gateway.shared is not None:  # still ready while Redis is down: fail modes apply
            body["shared"] = gateway.shared.status()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        shape = shape_for_path(request.url.path)
        if exc.status_code == 404:
            twin = request.url.path.rstrip("/") if request.url.path.endswith("/") else None
            if twin in known_paths:  # `/admin/status/`: a path-only Location, never from Host
                query = f"?{request.url.query}" if request.url.query else ""
                return Response(status_code=307, headers={"location": twin + query})
            error = NotFound(
                f"lanegate does not relay {request.method} {request.url.path}; the paths it "
                "relays (OpenAI's, Anthropic's Messages and Ollama's) are listed by "
                "GET /openapi.json",
                code="unknown_path",
            )
            return Response(error.body(shape), 404, media_type="application/json")
        body = error_body(
            shape, str(exc.detail), "invalid_request_error", "http_error", status=exc.status_code
        )
        return Response(body, exc.status_code, media_type="application/json")

    async def offload(request: Request) -> Response:
        """GET: the offload state and its last reason; POST {"mode": ...}: operator override."""
        shape = shape_for_path(request.url.path)
        try:
            gateway.runtime.auth.check_admin(request.headers.raw)
            loop = gateway.runtime.offload
            if loop is None:
                raise NotFound("offload is not configured in the policy", code="no_offload")
            if request.method == "POST":
                loop.set_mode(_offload_mode(await request.body()))
        except GatewayError as error:
            return Response(error.body(shape), error.status, media_type="application/json")
        state, mode, reason = loop.view()
        return JSONResponse({"state": state, "mode": mode, "reason": reason})

    async def metrics(request: Request) -> Response:
        """Prometheus exposition; open like any exporter (see docs/operations.md, Metrics)."""
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/admin/offload", offload, methods=["GET", "POST"]),
        *status_routes(gateway),
        Route("/admin/reload", reload_endpoint, methods=["POST"]),
        openapi_route(),
    ]
    known_paths = {route.path for route in routes if isinstance(route, Route)}
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    # Starlette's own slash redirect builds an absolute Location from the Host header.
    app.router.redirect_slashes = False
    return app


async def probe_upstreams(gateway: GatewayView) -> dict[str, bool]:
    """Is each upstream answering HTTP at all? (Health state proper comes from the prober.)"""

    async def probe(name: str, client: UpstreamClient) -> tuple[str, bool]:
        try:
            response = await asyncio.wait_for(client.open("GET", "/", None, {}), timeout=2.0)
            await response.aclose()
            return name, True
        except PROBE_ERRORS:
            return name, False

    results = await asyncio.gather(*(probe(n, c) for n, c in gateway.clients.items()))
    return dict(results)


def _offload_mode(body: bytes) -> Mode:
    try:
        return Mode(json.loads(body)["mode"])
    except (ValueError, KeyError, TypeError) as exc:
        modes = ", ".join(m.value for m in Mode)
        raise BadRequest(f'send {{"mode": "..."}} with one of: {modes}', param="mode") from exc
