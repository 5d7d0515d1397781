"""The running gateway as the control plane, status, metrics, reload and the server see it.

A `Protocol`, so those modules never import the app that builds them (no import circle): the
app (`gateway.app.Gateway`) satisfies it, and a test can hand them anything that does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.lanes.budget_store import Budgets
from gateway.observe.rolling import RollingRegistry
from gateway.ops.drain import Drain
from gateway.policy.spec import Policy, UpstreamSpec
from gateway.runtime import Runtime
from gateway.serving.flow import RequestFlow
from gateway.settings import Settings
from gateway.upstreams.client import UpstreamClient
from gateway.upstreams.discovery import Discovery
from gateway.upstreams.router import UpstreamRouter

if TYPE_CHECKING:  # Redis is imported only when configured
    from gateway.shared.state import SharedState


class GatewayView(Protocol):
    settings: Settings
    runtime: Runtime
    clock: Callable[[], float]
    rolling: RollingRegistry
    router: UpstreamRouter
    discovery: Discovery
    budgets: Budgets
    flow: RequestFlow
    drain: Drain
    shared: SharedState | None
    clients: dict[str, UpstreamClient]
    client_factory: Callable[[UpstreamSpec], UpstreamClient]

    @property
    def policy(self) -> Policy: ...

    @property
    def reload_error(self) -> str | None: ...

    @property
    def access_change(self) -> dict[str, Any] | None: ...

    def build_runtime(self, policy: Policy, previous: Runtime | None = None) -> Runtime: ...

    def swap(self, runtime: Runtime) -> None: ...
