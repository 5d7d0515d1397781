"""The offload loop: every few seconds, read the signals, ask the pure controller, and route.

Reads the host signals (sampler), the interactive lane's rolling p95 TTFT on the local pool,
the remote pool's health (its circuit breakers), p95 and memory pressure (from the agents at
the remote upstreams' `signals_url`, sampled here); feeds `offload.OffloadController`;
logs one line per transition with its reason. `route(lane)` tells the router where a new
request of a lane goes. In-flight requests are never moved. With several gateways sharing
Redis (`shared_offload`), the leader's decision is routed by everywhere; each gateway's own
controller still runs and takes over while Redis is unreachable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Protocol

from gateway.observe.rolling import Key, RollingRegistry
from gateway.offload.controller import Mode, OffloadController, Route, Signals, State, route_for
from gateway.offload.early import EarlyView, go_remote_early
from gateway.offload.host_signals import Pressure
from gateway.offload.signals import HttpSource, SignalSampler
from gateway.ops.periodic import Periodic
from gateway.policy.spec import LaneSpec, Policy, UpstreamSpec
from gateway.shared.plan import OffloadView
from gateway.upstreams.circuit_breaker import BreakerState
from gateway.upstreams.client import resolve_key
from gateway.upstreams.router import UpstreamRouter

log = logging.getLogger("lanegate.offload")

P95_WINDOW_S = 60.0
REMOTE_WINDOW_S = 300.0
# Without a configured `baseline_ttft`, every LEARN_PERIOD_S the interactive lane's TTFTs of
# requests sent alone to a local upstream (single-stream, by construction) over that period
# are offered to the controller, which keeps them only with enough samples on a calm host.
LEARN_PERIOD_S = 300.0


class Leadership(Protocol):
    """One offload decision shared by several gateways (`shared.offload` with Redis): the
    leader's view to route by, and the step that leads or follows."""

    view: OffloadView | None

    def mode_set(self, mode: Mode) -> None: ...

    async def step(self) -> None: ...


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
        self.remote_samplers = {
            u.name: SignalSampler(upstream_signal_source(u), interval_s=policy.offload_sample_s)
            for u in self.remote
            if u.signals_url
        }
        self._periodic = Periodic(self._step, policy.offload_sample_s)
        self._learned_at = clock()
        self.shared: Leadership | None = None  # set by the app with LANEGATE_REDIS_URL
        self.models: Collection[str] = ()  # models the recorder keeps per-model TTFTs of
        self.early_sent: dict[str, int] = {}  # requests early offload sent remote, per lane

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

    def early(
        self, lane: LaneSpec, held_back: bool, remote_free: int, model: str | None = None
    ) -> bool:
        """Send this request remote now, before any sustained breach (`early.py`)? The TTFTs
        compared are the request's model's on each pool when the recorder keeps that model's
        series (`Recorder.models`), else every lane's."""
        if not lane.offloadable or not held_back:  # the common case: nothing to read
            return False
        now = self.clock()
        healthy = any(
            self.router.breaker(u.name).state(now) is not BreakerState.OPEN for u in self.remote
        )
        view = EarlyView(
            offloadable=True,
            held_back=True,
            remote_free=remote_free,
            remote_healthy=healthy,
            remote_ttft_s=self._worst(self._ttft_keys(self.remote, model), now),
            local_ttft_s=self._worst(self._ttft_keys(self.local, model), now),
        )
        go, reason = go_remote_early(view)
        if go:
            self.early_sent[lane.name] = self.early_sent.get(lane.name, 0) + 1
            log.info("offload: early, lane %s goes remote: %s", lane.name, reason)
        return go

    def _ttft_keys(self, upstreams: tuple[UpstreamSpec, ...], model: str | None) -> list[Key]:
        if model is not None and model in self.models:
            return [("ttft_model", model, u.name) for u in upstreams]
        return [("ttft", spec.name, u.name) for u in upstreams for spec in self.policy.lanes]

    def _worst(self, keys: list[Key], now: float) -> float | None:
        """The worst recent p95 over these series (None: no samples)."""
        worst = None
        for key in keys:
            p95 = self.rolling.snapshot(key, now, REMOTE_WINDOW_S).p95
            if p95 is not None and (worst is None or p95 > worst):
                worst = p95
        return worst

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
        usable = [
            u.name
            for u in self.remote
            if self.router.breaker(u.name).state(now) is not BreakerState.OPEN
        ]
        return Signals(
            now=now,
            swap_used_bytes=host.swap_used_bytes,
            pressure=host.pressure.value,
            interactive_p95_s=local[0],
            interactive_samples=local[1],
            remote_healthy=bool(usable),
            remote_p95_s=remote[0],
            remote_pressure=self._remote_pressure(usable),
        )

    def _remote_pressure(self, usable: list[str]) -> str:
        """The least loaded usable remote host's pressure (traffic goes where it fits), or
        "unknown" when no usable remote reports one."""
        levels = [
            sampler.latest.pressure
            for name, sampler in self.remote_samplers.items()
            if name in usable and sampler.latest.pressure is not Pressure.UNKNOWN
        ]
        if not levels:
            return Pressure.UNKNOWN.value
        return str(min(levels, key=_PRESSURE_RANK.__getitem__).value)

    def tick(self) -> None:
        decision = self.controller.observe(self.signals())
        self._log(decision.changed, decision.reason)
        now = self.clock()
        if now - self._learned_at >= LEARN_PERIOD_S:
            self._learned_at = now
            self.learn(now)

    def learn(self, now: float) -> float | None:
        """Offer the last period's single-stream interactive p95 TTFT; the baseline in use."""
        p95, samples = self._p95(self.local, (self.interactive,), LEARN_PERIOD_S, now, "ttft_solo")
        before = self.controller.baseline_ttft_s
        if p95 is None:
            return before
        baseline = self.controller.learn_baseline(p95, samples, quiet=True)
        if baseline != before and baseline is not None:
            log.info(
                "offload: single-stream TTFT baseline now %.3f s (%d requests sent alone)",
                baseline,
                samples,
            )
        return baseline

    def _p95(
        self,
        upstreams: tuple[UpstreamSpec, ...],
        lanes: tuple[str, ...],
        window: float,
        now: float,
        series: str = "ttft",
    ) -> tuple[float | None, int]:
        """The worst p95 TTFT over these upstreams and lanes, and how many samples it saw."""
        worst, count = None, 0
        for upstream in upstreams:
            for lane in lanes:
                summary = self.rolling.snapshot((series, lane, upstream.name), now, window)
                count += summary.count
                if summary.p95 is not None and (worst is None or summary.p95 > worst):
                    worst = summary.p95
        return worst, count

    def _log(self, changed: bool, reason: str) -> None:
        if changed:
            log.warning("offload: now %s — %s", self.controller.state.value, reason)

    async def start(self) -> None:
        for sampler in self.remote_samplers.values():
            await sampler.start()
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        for sampler in self.remote_samplers.values():
            await sampler.stop()

    async def _step(self) -> None:
        if self.shared is not None:
            await self.shared.step()
        else:
            self.tick()


_PRESSURE_RANK = {Pressure.NORMAL: 0, Pressure.WARN: 1, Pressure.CRITICAL: 2}


def upstream_signal_source(upstream: UpstreamSpec) -> HttpSource:
    """The signals of the host serving `upstream`: its agent or simulator at `signals_url`."""
    assert upstream.signals_url is not None
    key = resolve_key(upstream, upstream.signals_key_ref) if upstream.signals_key_ref else None
    return HttpSource(upstream.signals_url, key=key)


def _interactive_lane(policy: Policy) -> str:
    """The lane offload protects: the highest-priority lane that never moves."""
    staying = [lane for lane in policy.lanes if not lane.offloadable] or list(policy.lanes)
    return max(staying, key=lambda lane: lane.priority).name
