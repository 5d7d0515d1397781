"""Which upstream serves a request. Pure: a choice over the policy's data and known state.

Inside a pool: only healthy upstreams (the breaker allows them); among those, ones that have
the model (or whose model list is not known yet) over ones known not to; then ones where the
model is already resident (no cold load of several GB on a Mac); then the least loaded
relative to its real slots; then the policy's order, so ties are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import NotFound
from gateway.policy.spec import ANTHROPIC_API, OLLAMA_API, RERANK_API, Policy, UpstreamSpec

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


def serving(pool: tuple[UpstreamSpec, ...], family: str, what: str) -> tuple[UpstreamSpec, ...]:
    """The upstreams of `pool` that serve an API family (the pool itself when all do); when
    none does, a 404 for `what` (e.g. `POST /v1/rerank`) naming each and what it serves."""
    if all(spec.serves(family) for spec in pool):
        return pool
    served = tuple(spec for spec in pool if spec.serves(family))
    if not served:
        raise NotFound(not_served_message(what, family, pool), code="api_not_served")
    return served


def first_serving(policy: Policy, family: str, what: str) -> UpstreamSpec:
    """Who answers a metadata call of this family: the default upstream if it serves it,
    else the first of the local pool, then of the policy, that does (else the 404)."""
    first = default_upstream(policy)
    if first.serves(family):
        return first
    ordered = (*policy.pool(DEFAULT_POOL), *policy.upstreams)
    found = next((spec for spec in ordered if spec.serves(family)), None)
    if found is None:
        raise NotFound(not_served_message(what, family, policy.upstreams), code="api_not_served")
    return found


# Who serves each family, for the message when nobody here does.
_WHO = {
    ANTHROPIC_API: "llama.cpp's server, Ollama 0.14 or later, LM Studio, or `kind: anthropic`",
    RERANK_API: "llama.cpp's server started with --reranking (kind: llamacpp)",
    OLLAMA_API: "Ollama",
}


def not_served_message(what: str, family: str, pool: tuple[UpstreamSpec, ...]) -> str:
    """Why `what` (e.g. `POST /v1/rerank`) cannot be relayed: each upstream, what it serves."""
    names = "; ".join(
        f"{spec.name} (kind {spec.kind.value}) serves {', '.join(sorted(spec.apis)) or 'none'}"
        for spec in pool
    )
    who = _WHO.get(family, "an OpenAI-compatible server")
    return (
        f"no upstream here serves {what} (the {family} API): {names}. Use an API they "
        f"serve, or ask the operator to add an upstream that does ({who}) or to list "
        f"`{family}` in an upstream's `apis` if it serves it"
    )


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
