"""The offload loop: every few seconds, read the signals, ask the pure controller, and route.

Reads the host signals (sampler), the interactive lane's rolling p95 TTFT on the local pool,
the remote pool's health (its circuit breakers) and p95; feeds `offload.OffloadController`;
logs one line per transition with its reason. `route(lane)` tells the router where a new
request of a lane goes. In-flight requests are never moved. With several gateways sharing
Redis (`shared_offload`), the leader's decision is routed by everywhere; each gateway's own
controller still runs and takes over while Redis is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.circuit_breaker import BreakerState
from gateway.host_signal_reader import SignalSampler
from gateway.offload import Mode, OffloadController, Route, Signals, State, route_for
from gateway.periodic import Periodic
from gateway.policy.spec import LaneSpec, Policy, UpstreamSpec
from gateway.rolling import RollingRegistry
from gateway.upstream_router import UpstreamRouter

if TYPE_CHECKING:
    from gateway.shared_offload import SharedOffload

log = logging.getLogger("lanegate.offload")

P95_WINDOW_S = 60.0
REMOTE_WINDOW_S = 300.0


class OffloadLoop:
    def __init__(
        self,
        policy: Policy,
        sampler: SignalSampler,
        rolling: RollingRegistry,
        router: UpstreamRouter,
        clock: Callable[[], float],
    ) -> None:
        assert policy.offload is not None
        self.policy = policy
        self.controller = OffloadController(policy.offload)
        self.sampler = sampler
        self.rolling = rolling
        self.router = router
        self.clock = clock
        self.local = router.pool_of(policy)
        self.remote = tuple(u for u in policy.upstreams if u not in self.local)
        self.interactive = _interactive_lane(policy)
        self._periodic = Periodic(self._step, policy.offload_sample_s)
        self.shared: SharedOffload | None = None  # set by the app with LANEGATE_REDIS_URL

    @property
    def state(self) -> State:
        view = self.shared.view if self.shared is not None else None
        return State(view.state) if view is not None else self.controller.state

    def view(self) -> tuple[str, str, str]:
        """(state, mode, reason) as routed by: the shared leader's, else this controller's."""
        view = self.shared.view if self.shared is not None else None
        if view is not None:
            return view.state, view.mode, view.reason
        controller = self.controller
        return controller.state.value, controller.mode.value, controller.last_reason

    def route(self, lane: LaneSpec) -> Route:
        return route_for(self.state, lane.offloadable)

    def set_mode(self, mode: Mode) -> str:
        reason = self.apply_mode(mode)
        if self.shared is not None:
            self.shared.mode_set(mode)
        return reason

    def apply_mode(self, mode: Mode) -> str:
        decision = self.controller.set_mode(mode, self.clock())
        self._log(decision.changed, decision.reason)
        return decision.reason

    def signals(self) -> Signals:
        now = self.clock()
        host = self.sampler.latest
        local = self._p95(self.local, (self.interactive,), P95_WINDOW_S, now)
        remote = self._p95(
            self.remote, tuple(lane.name for lane in self.policy.lanes), REMOTE_WINDOW_S, now
        )
        healthy = any(
            self.router.breaker(u.name).state(now) is not BreakerState.OPEN for u in self.remote
        )
        return Signals(
            now=now,
            swap_used_bytes=host.swap_used_bytes,
            pressure=host.pressure.value,
            interactive_p95_s=local[0],
            interactive_samples=local[1],
            remote_healthy=healthy,
            remote_p95_s=remote[0],
            remote_pressure="unknown",
        )

    def tick(self) -> None:
        decision = self.controller.observe(self.signals())
        self._log(decision.changed, decision.reason)

    def _p95(
        self,
        upstreams: tuple[UpstreamSpec, ...],
        lanes: tuple[str, ...],
        window: float,
        now: float,
    ) -> tuple[float | None, int]:
        """The worst p95 TTFT over these upstreams and lanes, and how many samples it saw."""
        worst, count = None, 0
        for upstream in upstreams:
            for lane in lanes:
                summary = self.rolling.snapshot(("ttft", lane, upstream.name), now, window)
                count += summary.count
                if summary.p95 is not None and (worst is None or summary.p95 > worst):
                    worst = summary.p95
        return worst, count

    def _log(self, changed: bool, reason: str) -> None:
        if changed:
            log.warning("offload: now %s — %s", self.controller.state.value, reason)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _step(self) -> None:
        if self.shared is not None:
            await self.shared.step()
        else:
            self.tick()


def _interactive_lane(policy: Policy) -> str:
    """The lane offload protects: the highest-priority lane that never moves."""
    staying = [lane for lane in policy.lanes if not lane.offloadable] or list(policy.lanes)
    return max(staying, key=lambda lane: lane.priority).name
