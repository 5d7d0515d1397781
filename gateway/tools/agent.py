"""The `lanegate agent` web app: one remote Mac's memory signals over HTTP.

Owns the `/signals` JSON shape (readable by `host_signals.parse_simulator_signals`, so the
gateway's `HttpSource` reads agents and simulators alike) and the bearer-key check. It must
not read the host itself on a request: a `SignalSampler` does that in the background, and
`/signals` only reports the latest sample.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import ErrorShape, Unauthorized
from gateway.offload.host_signals import HostSignals, Pressure
from gateway.offload.signals import Clock, SignalSampler, SignalSource
from gateway.serving.auth import presented_key
from gateway.serving.keys import key_matches

# The macOS `kern.memorystatus_vm_pressure_level` numbers; 0 is "unknown" (no such level).
PRESSURE_LEVELS = {Pressure.NORMAL: 1, Pressure.WARN: 2, Pressure.CRITICAL: 4}


def signals_payload(signals: HostSignals, sampled_at: float, error: str | None) -> dict[str, Any]:
    return {
        "swap_used_bytes": signals.swap_used_bytes,
        "swap_total_bytes": signals.swap_total_bytes,
        "pressure_level": PRESSURE_LEVELS.get(signals.pressure, 0),
        "pressure": signals.pressure.value,
        "memory_total_bytes": signals.memory_total_bytes,
        "memory_available_bytes": signals.memory_available_bytes,
        "source": signals.source,
        "sampled_at": sampled_at,
        "error": error,
    }


def create_agent_app(
    source: SignalSource,
    key_ref: str | None,
    env: Mapping[str, str],
    interval_s: float = 2.0,
    *,
    clock: Clock | None = None,
) -> Starlette:
    """Build the agent. `key_ref` None means no auth (the CLI allows that only on loopback)."""
    sampler = SignalSampler(source, interval_s=interval_s, clock=clock or time.time)

    def authorized(request: Request) -> bool:
        if key_ref is None:
            return True
        key = presented_key(request.headers.raw)
        return key is not None and key_matches(key, key_ref, env)

    async def signals(request: Request) -> Response:
        if not authorized(request):
            error = Unauthorized(
                "this agent needs its key: send `Authorization: Bearer <key>` "
                "(the value behind the agent's --key reference)"
            )
            return Response(
                error.body(ErrorShape.OPENAI),
                status_code=error.status,
                media_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse(signals_payload(sampler.latest, sampler.sampled_at, sampler.error))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sampling": sampler.running})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sampler.start()
        try:
            yield
        finally:
            await sampler.stop()

    app = Starlette(
        routes=[
            Route("/signals", signals, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.sampler = sampler
    return app
