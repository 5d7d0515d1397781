"""The gateway as one ASGI app: relay routes on a lean path, everything else on Starlette.

`create_app` builds every component from a policy and settings (no module globals); the
upstream clients live from lifespan startup to shutdown. Relay paths are matched first by a
dict lookup so that inference requests never go through framework routing; the control plane
(health, readiness, metrics, admin, dashboard: gateway/control_app.py) is a Starlette app
behind it. (FastAPI
would add ~6 MB of resident memory for routes that need none of its validation.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from gateway.auth import Authenticator
from gateway.budget_store import Budgets, SqliteSpendStore
from gateway.control_app import build_control_app
from gateway.discovery import Discovery
from gateway.drain import Drain
from gateway.errors import ErrorShape, GatewayError, MethodNotAllowed, shape_for_path
from gateway.host_signal_reader import SignalSampler, SignalSource, default_source
from gateway.lane_gate import LaneGate
from gateway.ledger import LEDGER_FILE, RequestLedger, SqliteLedgerStore
from gateway.metrics import build_registry
from gateway.model_lists import Inventory, merged_openai_list
from gateway.offload_loop import OffloadLoop, upstream_signal_source
from gateway.policy.spec import Policy, UpstreamSpec
from gateway.recorder import Recorder
from gateway.relay import Relay, send_error
from gateway.reload import PolicyReloader
from gateway.request_flow import RequestFlow, Runtime
from gateway.request_metrics import RequestTally
from gateway.rolling import RollingRegistry
from gateway.routes import Route as RelayRoute
from gateway.routes import is_relay_path, match_route
from gateway.selection import default_upstream
from gateway.settings import Settings
from gateway.upstream_client import UpstreamClient, create_client
from gateway.upstream_router import UpstreamRouter

if TYPE_CHECKING:
    from gateway.shared_state import SharedState

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
        )
        self.router = UpstreamRouter(self.discovered, self.clock, solo=self.rolling)
        self.discovery = Discovery(
            self.clients, self.clock, settings.discovery_interval, on_probe=self.router.probed
        )
        self.flow = RequestFlow(
            self.relay, self.budgets, self.recorder, self.clients, self.router, self.clock
        )
        # Several gateways, one set of lanes (docs/scaling.md); `shared.healthy` is redis_ok.
        self.shared: SharedState | None = None
        if settings.redis_url:  # imported here: a gateway without Redis never loads its client
            from gateway.shared_budgets import SharedBudgets
            from gateway.shared_state import SharedState

            self.shared = SharedState(
                settings.redis_url,
                lease_ttl_s=settings.redis_lease_ttl,
                prefix=settings.redis_prefix,
                wall_clock=wall_clock or time.time,
            )
            self.flow.shared_budgets = SharedBudgets(self.shared, self.budgets)
        self.runtime = self.build_runtime(policy)
        self.drain = Drain(settings.drain_timeout)
        self.reloader = PolicyReloader(self, settings.policy)
        # What status reports about the policy: reload (SIGHUP, file watch, admin) bumps the
        # version on success and keeps the last refusal here, with file, line and field.
        self.policy_version = 1
        self.policy_loaded_at = (wall_clock or time.time)()
        self.reload_error: str | None = None
        self.sampler, self.flow.offload = self.build_offload(policy)
        self.metrics = build_registry(self, self.tally)
        self.control = build_control_app(self)

    @property
    def policy(self) -> Policy:
        return self.runtime.policy

    def build_runtime(
        self,
        policy: Policy,
        gate: LaneGate | None = None,
        remote_gate: LaneGate | None = None,
    ) -> Runtime:
        """The runtime of `policy`: one lane gate per capacity domain, the local pool and the
        remote pool that offloaded lanes use (so offloaded requests never hold the local Mac's
        slots). A reload passes the gates in use, reconfigured in place so that the slots held
        by requests in flight keep counting (see LaneGate)."""
        local_pool = policy.pool(default_upstream(policy).pool)
        remote = [u for u in policy.upstreams if u not in local_pool]
        gate = self._gate(policy, sum(u.max_concurrency for u in local_pool), gate, self.shared)
        if policy.offload is not None and remote:
            remote_capacity = sum(u.max_concurrency for u in remote)
            # The remote pool's slots are counted per gateway (not shared through Redis).
            remote_gate = self._gate(policy, remote_capacity, remote_gate, None)
        else:
            remote_gate = None  # requests still holding its slots release into it as before
        return Runtime(policy, Authenticator(policy), gate, remote_gate)

    def _gate(
        self,
        policy: Policy,
        capacity: int,
        gate: LaneGate | None,
        shared: SharedState | None,
    ) -> LaneGate:
        if gate is None:
            return LaneGate(policy, capacity, self.clock, shared)
        gate.reconfigure(policy, capacity)
        return gate

    def build_offload(self, policy: Policy) -> tuple[SignalSampler, OffloadLoop | None]:
        """The host-signal sampler (always: status and metrics show host signals) and, with an
        `offload` section, the loop that acts on it."""
        sampler = SignalSampler(_signal_source(policy), interval_s=policy.offload_sample_s)
        if policy.offload is None:
            return sampler, None
        loop = OffloadLoop(policy, sampler, self.rolling, self.router, self.clock)
        if self.shared is not None:  # one leader decides for all gateways (docs/scaling.md)
            from gateway.shared_offload import SharedOffload

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
        await self.sampler.start()
        if self.flow.offload is not None:
            await self.flow.offload.start()
        self.reloader.start()

    async def shutdown(self) -> None:
        await self.reloader.stop()
        if self.flow.offload is not None:
            await self.flow.offload.stop()
        await self.sampler.stop()
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
            elif is_relay_path(scope["path"]):
                shape = shape_for_path(scope["path"])
                await send_error(
                    send, _method_not_allowed(scope), shape, self.relay.request_ids.of(scope)
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


def _method_not_allowed(scope: Scope) -> GatewayError:
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
