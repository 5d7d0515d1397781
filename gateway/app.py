"""The gateway as one ASGI app: relay routes on a lean path, everything else on Starlette.

`create_app` builds every component from a policy and settings (no module globals); the
upstream clients live from lifespan startup to shutdown. Relay paths are matched first by a
dict lookup so that inference requests never go through framework routing; the control plane
(health, readiness, metrics, admin, dashboard: gateway/ops/control.py) is a Starlette app
behind it. (FastAPI
would add ~6 MB of resident memory for routes that need none of its validation.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from gateway.errors import (
    ErrorShape,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    shape_for_path,
)
from gateway.lanes.budget_store import Budgets, BudgetService, SqliteSpendStore
from gateway.lanes.gate import LaneGate
from gateway.lanes.limits_feed import AdaptiveLimits
from gateway.observe.ledger import LEDGER_FILE, RequestLedger, SqliteLedgerStore
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.metrics import build_registry
from gateway.observe.recorder import Recorder
from gateway.observe.request_metrics import RequestTally
from gateway.observe.rolling import RollingRegistry
from gateway.offload.loop import OffloadLoop, upstream_signal_source
from gateway.offload.signals import SignalSampler, SignalSource, default_source
from gateway.ops.control import build_control_app
from gateway.ops.drain import Drain
from gateway.ops.fd_watch import FdWatch
from gateway.ops.reload import PolicyReloader
from gateway.policy.change import diff
from gateway.policy.spec import Policy, UpstreamSpec
from gateway.runtime import Runtime
from gateway.serving.auth import Authenticator
from gateway.serving.flow import RequestFlow
from gateway.serving.relay import Relay, send_error
from gateway.serving.routes import (
    MANAGEMENT_PATHS,
    is_relay_path,
    management_refusal,
    match_route,
)
from gateway.serving.routes import Route as RelayRoute
from gateway.settings import Settings
from gateway.upstreams.client import UpstreamClient, create_client
from gateway.upstreams.discovery import Discovery
from gateway.upstreams.model_lists import Inventory, merged_openai_list
from gateway.upstreams.router import UpstreamRouter
from gateway.upstreams.selection import default_upstream

if TYPE_CHECKING:
    from gateway.shared.state import SharedState

log = logging.getLogger("lanegate")

Clock = Callable[[], float]
ClientFactory = Callable[[UpstreamSpec], UpstreamClient]


class Gateway:
    """Everything one gateway process holds; reached by handlers through the ASGI app."""

    def __init__(
        self,
        policy: Policy,
        settings: Settings,
        *,
        clock: Clock | None = None,
        wall_clock: Clock | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or time.monotonic
        self.client_factory = client_factory or (
            lambda spec: create_client(spec, settings.upstream_client)
        )
        self.clients: dict[str, UpstreamClient] = {}
        self.rolling = RollingRegistry()
        self.ledger = RequestLedger(
            SqliteLedgerStore(settings.state_dir / LEDGER_FILE),
            retention_days=settings.ledger_retention_days,
            wall_clock=wall_clock or time.time,
        )
        self.tally = RequestTally()
        self.recorder = Recorder(
            self.rolling,
            access_log_enabled=settings.access_log,
            ledger=self.ledger,
            tally=self.tally,
        )
        store = SqliteSpendStore(settings.state_dir / "budgets.sqlite")
        self.budgets = Budgets(store, wall_clock=wall_clock or time.time)
        self.relay = Relay(
            max_body_bytes=settings.max_body_bytes,
            clock=self.clock,
            body_timeout_s=settings.body_timeout,
            max_upstream_body_bytes=settings.max_upstream_body_bytes,
        )
        self.router = UpstreamRouter(self.discovered, self.clock)
        self.discovery = Discovery(
            self.clients, self.clock, settings.discovery_interval, on_probe=self.router.probed
        )
        # Several gateways, one set of lanes (docs/scaling.md); `shared.healthy` is redis_ok.
        self.shared: SharedState | None = None
        budget_service: BudgetService = self.budgets
        if settings.redis_url:  # imported here: a gateway without Redis never loads its client
            from gateway.shared.budgets import SharedBudgets
            from gateway.shared.state import SharedState

            self.shared = SharedState(
                settings.redis_url,
                lease_ttl_s=settings.redis_lease_ttl,
                prefix=settings.redis_prefix,
                wall_clock=wall_clock or time.time,
            )
            budget_service = SharedBudgets(self.shared, self.budgets)
        self.flow = RequestFlow(
            self.relay,
            budget_service,
            self.recorder,
            self.clients,
            self.router,
            self.clock,
            wall_clock or time.time,
        )
        self.wall_clock = wall_clock or time.time
        self.recorder.listeners.append(self._measured)
        self.runtime = self.build_runtime(policy)
        self.drain = Drain(settings.drain_timeout)
        self.reloader = PolicyReloader(self, settings.policy)
        self.fd_watch = FdWatch()  # says so before the process runs out of descriptors
        self.metrics = build_registry(self, self.tally)
        self.control = build_control_app(self, self.metrics, self.reloader.endpoint)

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    @property
    def reload_error(self) -> str | None:
        """The last refused reload (file, line, field), until the next success."""
        return self.reloader.last_error

    @property
    def access_change(self) -> dict[str, Any] | None:
        """The last reload that changed who may call: {version, at, changes}."""
        return self.reloader.last_access_change

    def swap(self, runtime: Runtime) -> None:
        """The one write a reload makes: the next requests see the new runtime."""
        self.runtime = runtime

    def build_runtime(self, policy: Policy, previous: Runtime | None = None) -> Runtime:
        """The runtime of `policy`. A reload passes the runtime in use: its gates are
        reconfigured in place (slots held by requests in flight keep counting, see LaneGate),
        and its sampler and offload loop are kept unless the offload inputs changed."""
        gate, remote_gate = self._gates(policy, previous)
        if previous is not None and not diff(previous.policy, policy).offload:
            sampler, offload = previous.sampler, previous.offload
        else:
            sampler, offload = self.build_offload(policy)
        version = previous.version + 1 if previous is not None else 1
        return Runtime(
            policy, Authenticator(policy), gate, remote_gate, sampler, offload,
            version=version, loaded_at=self.wall_clock(),
        )  # fmt: skip

    def _gates(self, policy: Policy, previous: Runtime | None) -> tuple[LaneGate, LaneGate | None]:
        """One lane gate per capacity domain: the local pool, and the remote pool that
        offloaded lanes use (so offloaded requests never hold the local Mac's slots)."""
        gate = previous.gate if previous is not None else None
        remote_gate = previous.remote_gate if previous is not None else None
        local_pool = policy.pool(default_upstream(policy).pool)
        remote = [u for u in policy.upstreams if u not in local_pool]
        if gate is not None and gate.adaptive is not None:  # before the gate's admission round
            gate.adaptive.configure(policy, local_pool)
        adaptive = AdaptiveLimits(policy, local_pool) if gate is None else None
        capacity = sum(u.max_concurrency for u in local_pool)
        gate = self._gate(policy, capacity, gate, self.shared, adaptive)
        if policy.offload is not None and remote:
            remote_capacity = sum(u.max_concurrency for u in remote)
            # The remote pool's slots are counted per gateway (not shared through Redis).
            remote_gate = self._gate(policy, remote_capacity, remote_gate, None)
        else:
            remote_gate = None  # requests still holding its slots release into it as before
        return gate, remote_gate

    def _gate(
        self,
        policy: Policy,
        capacity: int,
        gate: LaneGate | None,
        shared: SharedState | None,
        adaptive: AdaptiveLimits | None = None,
    ) -> LaneGate:
        if gate is None:
            return LaneGate(policy, capacity, self.clock, shared, adaptive)
        gate.reconfigure(policy, capacity)
        return gate

    def _measured(self, labels: RequestLabels, record: RequestRecord, now: float) -> None:
        """A finished request: a chat's TTFT feeds the local gate's adaptive limits."""
        adaptive = self.runtime.gate.adaptive
        if adaptive is not None and record.ttft_s is not None:
            adaptive.observed(labels.lane, labels.upstream, record.ttft_s, record.duration_s, now)

    def build_offload(self, policy: Policy) -> tuple[SignalSampler, OffloadLoop | None]:
        """The host-signal sampler (always: status and metrics show host signals) and, with an
        `offload` section, the loop that acts on it."""
        sampler = SignalSampler(_signal_source(policy), interval_s=policy.offload_sample_s)
        if policy.offload is None:
            return sampler, None
        loop = OffloadLoop(policy, sampler, self.rolling, self.router, self.clock)
        loop.models = self.recorder.models  # the same set: it fills as models are seen
        if self.shared is not None:  # one leader decides for all gateways (docs/scaling.md)
            from gateway.shared.offload import SharedOffload

            loop.shared = SharedOffload(self.shared, loop)
        return sampler, loop

    async def startup(self) -> None:
        for spec in self.policy.upstreams:
            self.clients[spec.name] = self.client_factory(spec)
        await self.budgets.start()
        await self.ledger.start()
        if self.shared is not None:
            await self.shared.start()
        self.discovery.start()
        await self.runtime.sampler.start()
        if self.runtime.offload is not None:
            await self.runtime.offload.start()
        self.reloader.start()
        self.fd_watch.start()

    async def shutdown(self) -> None:
        await self.fd_watch.stop()
        await self.reloader.stop()
        runtime = self.runtime
        if runtime.offload is not None:
            await runtime.offload.stop()
        await runtime.sampler.stop()
        await self.discovery.stop()
        clients = list(self.clients.values())
        self.clients.clear()
        await asyncio.gather(*(client.aclose() for client in clients))
        if self.shared is not None:
            await self.shared.stop()
        await self.budgets.stop()
        await self.ledger.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = match_route(scope["method"], scope["path"])
            if route is not None:
                await self.handle_relay(route, scope, receive, send)
            elif is_relay_path(scope["path"]) or scope["path"] in MANAGEMENT_PATHS:
                shape = shape_for_path(scope["path"])
                await send_error(send, _not_relayed(scope), shape, self.relay.request_ids.of(scope))
            else:
                await self.control(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.control(scope, receive, send)

    async def handle_relay(
        self, route: RelayRoute, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            if self.drain.refusing:  # shutting down: send the client elsewhere, at once
                error = self.drain.refusal(self.clock())
                await send_error(send, error, route.shape, self.relay.request_ids.of(scope))
                return
            if route.name == "models" and self.discovered():
                await self.serve_model_list(route, scope, send)
                return
            await self.flow.handle(self.runtime, route, scope, receive, send)
        except Exception:  # the one outermost boundary: log with the request id, answer 500
            request_id = self.relay.request_ids.of(scope)
            log.exception("request %s: unexpected error", request_id)
            await _try_send_internal_error(send, route.shape, request_id)

    def discovered(self) -> dict[str, Inventory]:
        """The inventories read successfully at least once (stale ones are kept)."""
        return {
            name: found.inventory
            for name, found in self.discovery.inventories.items()
            if found.read_at is not None and (found.error is None or found.inventory.models)
        }

    async def serve_model_list(self, route: RelayRoute, scope: Scope, send: Send) -> None:
        """`GET /v1/models`: every upstream's models merged, under their logical names."""
        request_id = self.relay.request_ids.of(scope)
        try:
            self.runtime.auth.client_for(scope["headers"])
        except GatewayError as error:
            await send_error(send, error, route.shape, request_id)
            return
        logical = {
            (upstream, model_id): spec.name
            for spec in self.policy.models
            for upstream, model_id in spec.ids
        }
        body = json.dumps(merged_openai_list(self.discovered(), logical)).encode()
        headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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


def _signal_source(policy: Policy) -> SignalSource:
    """The local host's signals: a `signals_url` on a local upstream (the simulator in the
    demo, or an agent), else this machine's own (sysctl on macOS, /proc on Linux)."""
    for upstream in policy.pool(default_upstream(policy).pool):
        if upstream.signals_url:
            return upstream_signal_source(upstream)
    return default_source()


def _not_relayed(scope: Scope) -> GatewayError:
    """A relay path with the wrong method (405), or Ollama's model management (403)."""
    refusal = management_refusal(scope["method"], scope["path"])
    if refusal is not None:
        return Forbidden(refusal, code="model_management")
    return MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}")


async def _try_send_internal_error(send: Send, shape: ErrorShape, request_id: str) -> None:
    error = GatewayError(f"internal gateway error (request id {request_id}); see the gateway log")
    try:
        await send_error(send, error, shape, request_id)
    except (OSError, RuntimeError):
        log.debug("request %s: could not send the 500", request_id)


def create_app(
    policy: Policy,
    settings: Settings,
    *,
    clock: Clock | None = None,
    wall_clock: Clock | None = None,
    client_factory: ClientFactory | None = None,
) -> Gateway:
    return Gateway(
        policy, settings, clock=clock, wall_clock=wall_clock, client_factory=client_factory
    )


__all__ = ["Gateway", "create_app"]
