"""The status document behind `GET /admin/status`, `lanegate status` and `/dashboard`.

Owns reading the gateway's live objects (lane gate, router, breakers, discovery, sampler,
offload loop, budgets, rolling percentiles) into one JSON-ready dict, and the two control-plane
routes that serve it and the dashboard page. It runs only when an operator asks, so it may
merge histograms and walk every lane; nothing here runs on the request path, and nothing here
changes state. Field meanings are documented in docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.errors import GatewayError, shape_for_path
from gateway.observe.rolling import Key, RollingRegistry, Summary
from gateway.offload.signals import SignalSampler
from gateway.policy.spec import LaneSpec, UpstreamSpec

if TYPE_CHECKING:
    from gateway.view import GatewayView

NONE = "-"  # the upstream of a request refused before reaching one
# The dashboard's trends: status field name → rolling series name.
HISTORY_SERIES = (("ttft", "ttft"), ("queue_wait", "queue"), ("duration", "duration"))
WINDOWS: tuple[tuple[str, float], ...] = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
SWAP_HISTORY_POINTS = 90  # what the dashboard's swap trend draws on first load
Doc = dict[str, Any]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _percentiles(summary: Summary) -> Doc:
    return {
        "count": summary.count,
        "p50_ms": _ms(summary.p50),
        "p95_ms": _ms(summary.p95),
        "p99_ms": _ms(summary.p99),
    }


def _windows(rolling: RollingRegistry, keys: list[Key], now: float) -> dict[str, Doc]:
    """p50/p95/p99 (ms) and sample count of these series merged, per 1/5/15-minute window."""
    return {
        name: _percentiles(rolling.merged_snapshot(keys, now, seconds)) for name, seconds in WINDOWS
    }


def _series_keys(
    rolling: RollingRegistry, metric: str, lane: str | None, upstream: str | None
) -> list[Key]:
    """The series of one metric, for one lane (any upstream) or one upstream (any lane)."""
    return [
        key
        for key in rolling
        if key[0] == metric
        and (lane is None or key[1] == lane)
        and (upstream is None or key[2] == upstream)
    ]


def _preemptions(gateway: GatewayView, lane: str) -> int:
    tally = gateway.flow.recorder.tally
    if tally is None:
        return 0
    return sum(count for (name, _), count in tally.preemptions.items() if name == lane)


def lane_status(gateway: GatewayView, lane: LaneSpec, now: float) -> Doc:
    gate, remote, rolling = gateway.runtime.gate, gateway.runtime.remote_gate, gateway.rolling
    budget = gateway.budgets
    remote_in_flight = remote.by_lane.get(lane.name, 0) if remote else 0
    remote_queued = remote.queue_depth(lane.name) if remote else 0
    finished = _series_keys(rolling, "duration", lane.name, None)  # every request, refused too
    relayed = [key for key in finished if key[2] != NONE]
    return {
        "name": lane.name,
        "priority": lane.priority,
        "offloadable": lane.offloadable,
        "preemptible": lane.preemptible,
        "preemptions": _preemptions(gateway, lane.name),  # since start, finished requests
        "in_flight": gate.by_lane.get(lane.name, 0) + remote_in_flight,
        "remote_in_flight": remote_in_flight,  # of those, holding the remote pool's slots
        "max_concurrency": lane.max_concurrency,
        # The lane's adaptive limit over the local pool now (null: none applies to it).
        "adaptive_limit": _adaptive_limit(gateway, lane.name),
        "reserved": lane.reserved,
        "queued": gate.queue_depth(lane.name) + remote_queued,
        "remote_queued": remote_queued,
        "max_queue": lane.max_queue,
        "requests": {name: rolling.count(finished, now, seconds) for name, seconds in WINDOWS},
        "ttft": _windows(rolling, _series_keys(rolling, "ttft", lane.name, None), now),
        "gap_p95": _windows(rolling, _series_keys(rolling, "gap_p95", lane.name, None), now),
        # Waiting for a lane slot (admitted requests), and arrival to last byte of every
        # request that reached an upstream, streamed or not (refusals are not durations).
        "queue_wait": _windows(rolling, _series_keys(rolling, "queue", lane.name, None), now),
        "duration": _windows(rolling, relayed, now),
        "budget": [
            {
                "window": state.window,
                "limit": state.limit,
                "used": state.used,
                "reserved": state.reserved,
                "remaining": state.remaining,
                "reset_s": round(state.reset_s, 1),
            }
            for state in budget.ledger.remaining(
                ("lane", lane.name), lane.budget, budget.wall_clock()
            )
        ],
    }


def upstream_status(gateway: GatewayView, spec: UpstreamSpec, now: float) -> Doc:
    breaker = gateway.router.breaker(spec.name)
    state = breaker.state(now)
    found = gateway.discovery.inventories.get(spec.name)
    open_until = breaker.open_until
    rolling = gateway.rolling
    return {
        "name": spec.name,
        "pool": spec.pool,
        "kind": spec.kind.value,
        "base_url": spec.base_url,
        "healthy": state.value != "open" and (found is None or found.error is None),
        "in_flight": gateway.router.in_flight.get(spec.name, 0),
        "max_concurrency": spec.max_concurrency,
        "breaker": {
            "state": state.value,
            "reason": breaker.reason,
            "retry_in_s": None if open_until is None else round(max(0.0, open_until - now), 1),
            "transitions": breaker.transition_count,
        },
        "models": sorted(found.inventory.models) if found else [],
        "resident": sorted(found.inventory.resident) if found else [],
        "slots": found.slots if found else None,
        "discovery_error": found.error if found else None,
        "ttft": _windows(rolling, _series_keys(rolling, "ttft", None, spec.name), now),
    }


def host_status(sampler: SignalSampler | None, wall_now: float) -> Doc | None:
    if sampler is None:
        return None
    latest = sampler.latest
    history = list(sampler.history)[-SWAP_HISTORY_POINTS:]
    return {
        "source": latest.source,
        "pressure": latest.pressure.value,
        "swap_used_bytes": latest.swap_used_bytes,
        "swap_total_bytes": latest.swap_total_bytes,
        "memory_total_bytes": latest.memory_total_bytes,
        "memory_available_bytes": latest.memory_available_bytes,
        "sampled_at": sampler.sampled_at or None,
        "age_s": round(wall_now - sampler.sampled_at, 1) if sampler.sampled_at else None,
        "error": sampler.error,
        "swap_trend_bytes_per_s": sampler.swap_trend_bytes_per_s(),
        "swap_history": [[round(at, 3), used] for at, used, _ in history],
    }


def offload_status(gateway: GatewayView) -> Doc:
    loop = gateway.runtime.offload
    if loop is None:
        return {"configured": False, "state": "local", "mode": None, "reason": None}
    controller = loop.controller
    return {
        "configured": True,
        "state": controller.state.value,
        "mode": controller.mode.value,
        "reason": controller.last_reason,
        "remote": [spec.name for spec in loop.remote],
        "early_sent": dict(loop.early_sent),  # per lane: sent remote early (a chat was active)
    }


def adaptive_status(gateway: GatewayView) -> Doc:
    """The adaptive limits of lower lanes: per local upstream, each lane's limit and why."""
    adaptive = gateway.runtime.gate.adaptive
    if adaptive is None:
        return {"enabled": False, "upstreams": []}
    return adaptive.status()


def _adaptive_limit(gateway: GatewayView, lane: str) -> int | None:
    adaptive = gateway.runtime.gate.adaptive
    if adaptive is None or not adaptive.enabled:
        return None
    return adaptive.limits().get(lane)


def history_status(gateway: GatewayView, lanes: Iterable[LaneSpec], now: float) -> Doc:
    """Per lane, the p95 of each 10 s slice over the last 15 minutes (oldest first, null for
    a slice without requests): the dashboard's trends, there from the first page load."""
    rolling = gateway.rolling

    def p95_ms(metric: str, lane: str) -> list[float | None]:
        keys = _series_keys(rolling, metric, lane, None)
        if metric == "duration":
            keys = [key for key in keys if key[2] != NONE]
        return [_ms(value) for value in rolling.history(keys, now, 0.95)]

    return {
        "slice_s": rolling.slice_s,
        "lanes": {
            lane.name: {
                f"{name}_p95_ms": p95_ms(metric, lane.name) for name, metric in HISTORY_SERIES
            }
            for lane in lanes
        },
    }


def totals_status(gateway: GatewayView) -> Doc:
    """What the dashboard's header counts: every request holding a slot (the lanes' in-flight
    figures add up to it), split into the local pool's slots and the remote pool's."""
    local, remote = gateway.runtime.gate, gateway.runtime.remote_gate
    remote_doc = (
        None if remote is None else {"in_flight": remote.in_flight, "capacity": remote.capacity}
    )
    queued = sum(local.queue_depth(lane.name) for lane in gateway.policy.lanes)
    if remote is not None:
        queued += sum(remote.queue_depth(lane.name) for lane in gateway.policy.lanes)
    return {
        "in_flight": local.in_flight + (remote.in_flight if remote is not None else 0),
        "queued": queued,
        "local": {"in_flight": local.in_flight, "capacity": local.capacity},
        "remote": remote_doc,
    }


def build_status(gateway: GatewayView, wall_now: float | None = None) -> Doc:
    """The whole status document, read from the gateway's objects at one moment."""
    now = gateway.clock()
    wall_now = time.time() if wall_now is None else wall_now
    policy = gateway.policy
    return {
        "generated_at": round(wall_now, 3),
        "version": __version__,
        "policy": {
            "version": gateway.runtime.version,
            "source": policy.source,
            "loaded_at": gateway.runtime.loaded_at,
            "reload_error": gateway.reload_error,
            # The last reload that changed who may call (anonymous access, a client's lanes).
            "access_change": gateway.access_change,
        },
        "capacity": gateway.runtime.gate.capacity,  # the local pool's slots
        "in_flight": gateway.runtime.gate.in_flight,  # of those, held
        "totals": totals_status(gateway),
        "lanes": [lane_status(gateway, lane, now) for lane in policy.lanes],
        "history": history_status(gateway, policy.lanes, now),
        "upstreams": [upstream_status(gateway, spec, now) for spec in policy.upstreams],
        "host": host_status(gateway.runtime.sampler, wall_now),
        "offload": offload_status(gateway),
        "adaptive": adaptive_status(gateway),
        # Several gateways through Redis (docs/scaling.md); null when this one stands alone.
        "shared": gateway.shared.status() if gateway.shared is not None else None,
    }


# -- the control-plane routes ----------------------------------------------------------------

DASHBOARD_FILES = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
# The page loads nothing from elsewhere and runs no inline script: say so to the browser.
DASHBOARD_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
}


def _read_static(name: str) -> bytes:
    return resources.files("gateway.observe").joinpath("static", name).read_bytes()


def status_routes(gateway: GatewayView) -> list[Route]:
    """`GET /admin/status` (admin key) and the dashboard's files (no data, no key)."""

    async def status(request: Request) -> Response:
        try:
            gateway.runtime.auth.check_admin(request.headers.raw)
        except GatewayError as error:
            shape = shape_for_path(request.url.path)
            return Response(
                error.body(shape), error.status, error.headers, media_type="application/json"
            )
        return JSONResponse(build_status(gateway), headers={"cache-control": "no-store"})

    return [Route("/admin/status", status, methods=["GET"]), *_dashboard_routes()]


def _dashboard_routes() -> Iterable[Route]:
    for path, (name, media_type) in DASHBOARD_FILES.items():
        body = _read_static(name)  # read once: the files are part of the package
        yield Route(path, _static(body, media_type), methods=["GET"])


def _static(body: bytes, media_type: str) -> Callable[[Request], Any]:
    async def serve(request: Request) -> Response:
        return Response(body, 200, DASHBOARD_HEADERS, media_type=media_type)

    return serve
