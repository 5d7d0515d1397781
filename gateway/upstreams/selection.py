"""Which upstream serves a request. Pure: a choice over the policy's data and known state.

Inside a pool: only healthy upstreams (the breaker allows them); among those, ones that have
the model (or whose model list is not known yet) over ones known not to; then ones where the
model is already resident (no cold load of several GB on a Mac); then the least loaded
relative to its real slots; then the policy's order, so ties are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.policy.spec import Policy, UpstreamSpec

DEFAULT_POOL = "local"


@dataclass(frozen=True, slots=True)
class Candidate:
    spec: UpstreamSpec
    healthy: bool = True  # the circuit breaker allows a request now
    has_model: bool | None = None  # None: the model list has not been read yet
    resident: bool = False  # the model is loaded (Ollama /api/ps, LM Studio state)
    in_flight: int = 0


def default_upstream(policy: Policy) -> UpstreamSpec:
    local = policy.pool(DEFAULT_POOL)
    return local[0] if local else policy.upstreams[0]


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The best candidate, or None when none is healthy."""
    usable = [(i, c) for i, c in enumerate(candidates) if c.healthy]
    if not usable:
        return None
    return min(usable, key=lambda pair: _rank(*pair))[1]


def _rank(order: int, candidate: Candidate) -> tuple[int, int, float, int]:
    lacks_model = 1 if candidate.has_model is False else 0
    cold = 0 if candidate.resident else 1
    load = candidate.in_flight / max(1, candidate.spec.max_concurrency)
    return lacks_model, cold, load, order
