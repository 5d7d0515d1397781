"""The gateway as one ASGI app: relay routes on a lean path, everything else on Starlette.

`create_app` builds every component from a policy and settings (no module globals); the
upstream clients live from lifespan startup to shutdown. Relay paths are matched first by a
dict lookup so that inference requests never go through framework routing; the control plane
(health, readiness, later metrics/admin/dashboard) is a Starlette app behind it. (FastAPI
would add ~6 MB of resident memory for routes that need none of its validation.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.errors import (
    ErrorShape,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    error_body,
    shape_for_path,
)
from gateway.measurement import RequestRecord
from gateway.policy.spec import Policy, UpstreamSpec
from gateway.recorder import Recorder, RequestLabels
from gateway.relay import Exchange, Relay, request_id_of, send_error
from gateway.rolling import RollingRegistry
from gateway.routes import Route as RelayRoute
from gateway.routes import is_relay_path, match_route
from gateway.selection import default_upstream
from gateway.settings import Settings
from gateway.upstream_client import UPSTREAM_ERRORS, UpstreamClient, create_client

log = logging.getLogger("lanegate")

Clock = Callable[[], float]
ClientFactory = Callable[[UpstreamSpec], UpstreamClient]
PROBE_ERRORS: tuple[type[BaseException], ...] = (*UPSTREAM_ERRORS, TimeoutError)


class Gateway:
    """Everything one gateway process holds; reached by handlers through the ASGI app."""

    def __init__(
        self,
        policy: Policy,
        settings: Settings,
        *,
        clock: Clock | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.policy = policy
        self.settings = settings
        self.clock = clock or time.monotonic
        self.client_factory = client_factory or (
            lambda spec: create_client(spec, settings.upstream_client)
        )
        self.clients: dict[str, UpstreamClient] = {}
        self.rolling = RollingRegistry()
        self.recorder = Recorder(self.rolling, access_log_enabled=settings.access_log)
        self.relay = Relay(max_body_bytes=settings.max_body_bytes, clock=self.clock)
        self.control = build_control_app(self)

    async def startup(self) -> None:
        for spec in self.policy.upstreams:
            self.clients[spec.name] = self.client_factory(spec)

    async def shutdown(self) -> None:
        clients, self.clients = self.clients, {}
        await asyncio.gather(*(client.aclose() for client in clients.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = match_route(scope["method"], scope["path"])
            if route is not None:
                await self.handle_relay(route, scope, receive, send)
            elif is_relay_path(scope["path"]):
                await send_error(
                    send,
                    _method_not_allowed(scope),
                    shape_for_path(scope["path"]),
                    request_id_of(scope),
                )
            else:
                await self.control(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.control(scope, receive, send)

    async def handle_relay(
        self, route: RelayRoute, scope: Scope, receive: Receive, send: Send
    ) -> None:
        received_at = self.clock()
        request_id = request_id_of(scope)
        spec: UpstreamSpec | None = None
        model: str | None = None
        try:
            raw, facts = await self.relay.read(route, receive)
            model = facts.model
            spec = default_upstream(self.policy)
            exchange = Exchange(
                request_id, received_at, spec.timeouts.first_byte_s, spec.timeouts.idle_s
            )
            record = await self.relay.forward(
                route,
                scope,
                receive,
                send,
                raw=raw,
                client=self.clients[spec.name],
                exchange=exchange,
            )
        except GatewayError as error:
            await send_error(send, error, route.shape, request_id)
            record = _rejected(error, received_at, self.clock())
        except asyncio.CancelledError:
            raise
        except Exception:  # the one outermost boundary: log with the request id, answer 500
            log.exception("request %s: unexpected error", request_id)
            await _try_send_internal_error(send, route.shape, request_id)
            return
        labels = RequestLabels(
            request_id, route.method, scope["path"], "default", spec.name if spec else "-", model
        )
        self.recorder.record(labels, record, self.clock())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _method_not_allowed(scope: Scope) -> GatewayError:
    return MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}")


def _rejected(error: GatewayError, received_at: float, now: float) -> RequestRecord:
    return RequestRecord(
        ttft_s=None,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=now - received_at,
        prompt_tokens=None,
        completion_tokens=None,
        tokens_estimated=False,
        chunks=0,
        status=error.status,
        error=error.code,
    )


async def _try_send_internal_error(send: Send, shape: ErrorShape, request_id: str) -> None:
    error = GatewayError(f"internal gateway error (request id {request_id}); see the gateway log")
    try:
        await send_error(send, error, shape, request_id)
    except (OSError, RuntimeError):
        log.debug("request %s: could not send the 500", request_id)


def build_control_app(gateway: Gateway) -> Starlette:
    """The control plane: health and readiness now; metrics, admin and dashboard later."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reachable = await probe_upstreams(gateway)
        ready = any(reachable.values())
        body: dict[str, Any] = {"status": "ready" if ready else "unready", "upstreams": reachable}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        shape = shape_for_path(request.url.path)
        if exc.status_code == 404:
            error = NotFound(
                f"no route {request.method} {request.url.path}; lanegate serves the OpenAI API "
                "under /v1 and Ollama's under /api",
                code="unknown_path",
            )
            return Response(error.body(shape), 404, media_type="application/json")
        body = error_body(shape, str(exc.detail), "invalid_request_error", "http_error")
        return Response(body, exc.status_code, media_type="application/json")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


async def probe_upstreams(gateway: Gateway) -> dict[str, bool]:
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


def create_app(
    policy: Policy,
    settings: Settings,
    *,
    clock: Clock | None = None,
    client_factory: ClientFactory | None = None,
) -> Gateway:
    return Gateway(policy, settings, clock=clock, client_factory=client_factory)


__all__ = ["ErrorShape", "Gateway", "create_app"]
