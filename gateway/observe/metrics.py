"""`/metrics`: the gateway's numbers in Prometheus text format, built at scrape time.

Owns: one `CollectorRegistry` per gateway (no module globals) holding lanegate's collector and
the process collector (psutil).
Counters and histograms come from the `RequestTally` the recorder feeds once per finished
request; every gauge (in flight, queue depth, budgets, breakers, host signals, offload, policy)
is read from the gateway's live objects when Prometheus scrapes, so none of them costs anything
on the request path. Must not: be called per request or per chunk, or label anything by client
key, request id or a model name nobody configured or listed (see `request_metrics` for the
label bounds).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.observe.process_metrics import PsutilProcessCollector
from gateway.observe.request_metrics import BucketCounts, RequestTally
from gateway.offload.controller import State
from gateway.offload.host_signals import Pressure
from gateway.upstreams.circuit_breaker import BreakerState

if TYPE_CHECKING:
    from gateway.view import GatewayView

__all__ = ["CONTENT_TYPE_LATEST", "GatewayCollector", "build_registry", "exposition"]

LANE_UPSTREAM = ("lane", "upstream")


def build_registry(gateway: GatewayView, tally: RequestTally) -> CollectorRegistry:
    """The gateway's own registry: its collector plus the process's CPU and memory (psutil:
    macOS as Linux, where prometheus_client's ProcessCollector reads /proc only)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, tally))
    registry.register(PsutilProcessCollector())
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class GatewayCollector(Collector):
    """Yields every lanegate_* family from the tally and the gateway's current state."""

    def __init__(self, gateway: GatewayView, tally: RequestTally) -> None:
        self.gateway = gateway
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        yield from request_families(self.tally, known_models(self.gateway))
        yield from lane_families(self.gateway)
        yield from upstream_families(self.gateway)
        yield from host_families(self.gateway)
        yield from policy_families(self.gateway)


# -- counters and histograms: what finished requests did --------------------------------------
def known_models(gateway: GatewayView) -> frozenset[str]:
    """Model names that may be label values: the policy's and those upstreams list."""
    policy = gateway.policy
    names = {spec.name for spec in policy.models}
    names.update(model_id for spec in policy.models for _, model_id in spec.ids)
    names.update(target for lane in policy.lanes for _, target in lane.model_map)
    for found in gateway.discovery.inventories.values():
        names.update(found.inventory.models)
    return frozenset(names)


def request_families(tally: RequestTally, known: frozenset[str]) -> Iterator[Metric]:
    yield _counter(
        "lanegate_requests_total",
        "Finished requests (rejections included), by lane, upstream, model (a name the policy "
        "or an upstream knows, else other) and status class.",
        ("lane", "upstream", "model", "status_class"),
        tally.requests_by_model(known).items(),
    )
    yield _counter(
        "lanegate_client_tokens_total",
        "Tokens per policy client (- without clients); kind is prompt or completion.",
        ("client", "kind"),
        tally.client_tokens.items(),
    )
    yield _counter(
        "lanegate_rejections_total",
        "Requests the gateway refused (auth, lane, budget, queue, offload shedding), by reason.",
        ("lane", "reason"),
        tally.rejections.items(),
    )
    yield _counter(
        "lanegate_tokens_total",
        "Tokens reported (or counted) per finished request; kind is prompt or completion.",
        ("lane", "upstream", "kind"),
        tally.tokens.items(),
    )
    yield _histogram(
        "lanegate_ttft_seconds",
        "Time to first generated output, from request arrival.",
        LANE_UPSTREAM,
        tally.ttft.items(),
    )
    yield _histogram(
        "lanegate_inter_chunk_gap_seconds",
        "Gaps between streamed chunks after the first output (within 1% at bucket bounds).",
        LANE_UPSTREAM,
        tally.gaps.items(),
    )
    yield _histogram(
        "lanegate_request_duration_seconds",
        "Arrival to last byte of relayed requests (rejections are not included).",
        LANE_UPSTREAM,
        tally.duration.items(),
    )
    yield _histogram(
        "lanegate_queue_wait_seconds",
        "Time admitted requests waited in their lane queue.",
        ("lane",),
        (((lane,), counts) for lane, counts in tally.queue_wait.items()),
    )


def _counter(
    name: str, doc: str, labels: tuple[str, ...], values: Iterable[tuple[Sequence[str], int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values:
        family.add_metric(key, value)
    return family


def _histogram(
    name: str,
    doc: str,
    labels: tuple[str, ...],
    series: Iterable[tuple[Sequence[str], BucketCounts]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, counts in series:
        family.add_metric(key, counts.cumulative(), sum_value=counts.total)
    return family


# -- gauges: the state right now ---------------------------------------------------------------
def lane_families(gateway: GatewayView) -> Iterator[Metric]:
    policy = gateway.policy
    snapshot = dict(gateway.runtime.gate.snapshot())
    remote = gateway.runtime.remote_gate  # offloaded requests: the remote pool's slots
    for name, (held, queued) in (remote.snapshot() if remote else {}).items():
        local_held, local_queued = snapshot.get(name, (0, 0))
        snapshot[name] = (local_held + held, local_queued + queued)
    in_flight = GaugeMetricFamily(
        "lanegate_lane_in_flight", "Requests holding a slot, per lane.", labels=["lane"]
    )
    capacity = GaugeMetricFamily(
        "lanegate_lane_capacity", "The lane's max_concurrency.", labels=["lane"]
    )
    depth = GaugeMetricFamily(
        "lanegate_queue_depth", "Requests waiting for a slot, per lane.", labels=["lane"]
    )
    budget = GaugeMetricFamily(
        "lanegate_budget_remaining_tokens",
        "Tokens left in the lane's current budget window (minute, hour, day).",
        labels=["lane", "window"],
    )
    now = gateway.budgets.wall_clock()
    for lane in policy.lanes:
        held, queued = snapshot.get(lane.name, (0, 0))
        in_flight.add_metric([lane.name], held)
        capacity.add_metric([lane.name], lane.max_concurrency)
        depth.add_metric([lane.name], queued)
        if lane.budget.limits():
            for state in gateway.budgets.ledger.remaining(("lane", lane.name), lane.budget, now):
                budget.add_metric([lane.name, state.window], state.remaining)
    yield from (in_flight, capacity, depth, budget)
    yield from adaptive_families(gateway)


def adaptive_families(gateway: GatewayView) -> Iterator[Metric]:
    """Lower lanes' adaptive limits per local upstream, the baseline they are held to, the
    engine's floor learned from chats beside lower lanes, and the target chats are held to."""
    adaptive = gateway.runtime.gate.adaptive
    limit = GaugeMetricFamily(
        "lanegate_lane_adaptive_limit",
        "Requests a lower-priority lane may run on a local upstream now (adaptive limit).",
        labels=list(LANE_UPSTREAM),
    )
    baseline = GaugeMetricFamily(
        "lanegate_adaptive_baseline_ttft_seconds",
        "The no-load chat TTFT the adaptive limits hold chats near, per local upstream.",
        labels=["upstream"],
    )
    floor = GaugeMetricFamily(
        "lanegate_adaptive_engine_floor_ratio",
        "Best p95 chat TTFT with lower lanes running, over the baseline (once learned).",
        labels=["upstream"],
    )
    target = GaugeMetricFamily(
        "lanegate_adaptive_effective_target_ratio",
        "Chat TTFT ratio the adaptive limits hold: the SLO, or just above the engine's floor.",
        labels=["upstream"],
    )
    for entry in adaptive.status()["upstreams"] if adaptive is not None else ():
        for lane in entry["lanes"]:
            limit.add_metric([lane["lane"], entry["upstream"]], lane["limit"])
        if entry["baseline_ttft_ms"] is not None:
            baseline.add_metric([entry["upstream"]], entry["baseline_ttft_ms"] / 1000)
        if entry["engine_floor_ratio"] is not None:
            floor.add_metric([entry["upstream"]], entry["engine_floor_ratio"])
        target.add_metric([entry["upstream"]], entry["effective_target_ratio"])
    yield from (limit, baseline, floor, target)


def upstream_families(gateway: GatewayView) -> Iterator[Metric]:
    router, now = gateway.router, gateway.clock()
    in_flight = GaugeMetricFamily(
        "lanegate_upstream_in_flight", "Requests in flight, per upstream.", labels=["upstream"]
    )
    up = GaugeMetricFamily(
        "lanegate_upstream_up",
        "1 when the upstream's breaker is not open and its last model-list read succeeded.",
        labels=["upstream"],
    )
    breaker = GaugeMetricFamily(
        "lanegate_upstream_breaker_state",
        "Circuit breaker state per upstream: 1 for the current state, 0 for the others.",
        labels=["upstream", "state"],
    )
    for spec in gateway.policy.upstreams:
        state = router.breaker(spec.name).state(now)
        found = gateway.discovery.inventories.get(spec.name)
        healthy = state is not BreakerState.OPEN and (found is None or found.error is None)
        in_flight.add_metric([spec.name], router.in_flight.get(spec.name, 0))
        up.add_metric([spec.name], 1 if healthy else 0)
        for value in BreakerState:
            breaker.add_metric([spec.name, value.value], 1 if value is state else 0)
    yield from (in_flight, up, breaker)


def host_families(gateway: GatewayView) -> Iterator[Metric]:
    """Host memory signals and the offload state; absent when offload is not configured."""
    sampler = gateway.runtime.sampler
    if sampler is not None:
        signals = sampler.latest
        if signals.swap_used_bytes is not None:
            yield GaugeMetricFamily(
                "lanegate_host_swap_used_bytes",
                "Swap in use on the local inference host (latest sample).",
                value=signals.swap_used_bytes,
            )
        yield _state_set(
            "lanegate_host_memory_pressure",
            "Host memory pressure level (latest sample): 1 for the current level.",
            "level",
            (p.value for p in Pressure),
            signals.pressure.value,
        )
    loop = gateway.runtime.offload
    if loop is not None:
        yield _state_set(
            "lanegate_offload_state",
            "Offload state: 1 for the current one.",
            "state",
            (s.value for s in State),
            loop.state.value,
        )
        yield CounterMetricFamily(
            "lanegate_offload_transitions_total",
            "Offload state changes since start.",
            value=loop.controller.transition_count,
        )


def policy_families(gateway: GatewayView) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "lanegate_policy_version",
        "Policy version in force: 1 at start, +1 per successful reload.",
        value=gateway.runtime.version,
    )
    yield GaugeMetricFamily(
        "lanegate_config_last_reload_successful",
        "0 when the last policy reload was refused (the previous policy stays in force).",
        value=0 if gateway.reload_error else 1,
    )
    yield GaugeMetricFamily(
        "lanegate_config_last_reload_success_timestamp_seconds",
        "When the policy in force was loaded (start or last successful reload), Unix time.",
        value=gateway.runtime.loaded_at,
    )
    info = GaugeMetricFamily(
        "lanegate_build_info",
        "The running lanegate: version and Python.",
        labels=["version", "python"],
    )
    info.add_metric([__version__, platform.python_version()], 1)
    yield info
    if gateway.shared is not None:  # only with LANEGATE_REDIS_URL
        yield GaugeMetricFamily(
            "lanegate_redis_up",
            "1 while shared lanes reach Redis; 0: limits are this gateway's own (fail-open) "
            "or fail-closed lanes answer 503.",
            value=1 if gateway.shared.healthy else 0,
        )


def _state_set(
    name: str, doc: str, label: str, values: Iterable[str], current: str
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        family.add_metric([value], 1 if value == current else 0)
    return family
