"""Which upstream each attempt goes to, and what its result teaches the circuit breakers.

Selection is the pure `selection.choose` over what the shell knows: each upstream's breaker,
its discovered models, and its requests in flight. The router does not loop: the request flow
owns the retry loop (as httpx's `send` owns its redirect loop) and asks the router for each
attempt (`begin`), then tells it how the attempt ended (`failed`, `finished`, `abandoned`).
A failure before anything reached the client (connection refused or closed, a 502/503 answer)
goes to another upstream of the same pool, never the same one twice; once a byte has gone to
the client the request is never retried. Timeouts before the first byte are not retried
either: the client has already waited `first_byte` seconds.

`finished` says whether the attempt had its upstream to itself from start to end: its TTFT
is then that engine's single-stream TTFT, from which offload learns its baseline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.errors import NOT_THE_UPSTREAMS, RetryElsewhere, ServiceUnavailable
from gateway.observe.measurement import RequestRecord
from gateway.policy.spec import Policy, UpstreamSpec
from gateway.serving.exchange import CLIENT_LEFT
from gateway.upstreams.circuit_breaker import BreakerConfig, BreakerState, CircuitBreaker, Outcome
from gateway.upstreams.model_lists import Inventory
from gateway.upstreams.selection import DEFAULT_POOL, Candidate, choose

log = logging.getLogger("lanegate.router")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one upstream; `others`: untried upstreams remain, so a failure before the
    first byte may go elsewhere."""

    spec: UpstreamSpec
    others: bool
    in_flight: int  # this upstream's requests in flight, this one included, when it started
    sent: int  # attempts ever sent to this upstream, when it started
    source: str | None = None  # who asked (client name, or address): the breaker's evidence


PROBE = "probe"  # the source of discovery's own reads, for the breaker


class UpstreamRouter:
    def __init__(
        self,
        inventories: Callable[[], Mapping[str, Inventory]],
        clock: Callable[[], float],
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        self.inventories = inventories
        self.clock = clock
        self.breaker_config = breaker_config or BreakerConfig()
        self.breakers: dict[str, CircuitBreaker] = {}
        self.in_flight: dict[str, int] = {}
        self.sent: dict[str, int] = {}  # attempts sent per upstream, ever
        self._pool: tuple[Policy, tuple[UpstreamSpec, ...]] | None = None

    def breaker(self, upstream: str) -> CircuitBreaker:
        breaker = self.breakers.get(upstream)
        if breaker is None:
            breaker = self.breakers[upstream] = CircuitBreaker(self.breaker_config)
        return breaker

    def probed(self, upstream: str, reachable: bool, detail: str) -> None:
        """An active probe's result (discovery's periodic read): an unreachable upstream counts
        a failure even when no request goes there, and a half-open breaker may close on a
        probe instead of risking a user's request. Probes that reach a closed upstream say
        nothing new: passive results from real traffic decide."""
        breaker, now = self.breaker(upstream), self.clock()
        state = breaker.state(now)
        if state is BreakerState.CLOSED and not reachable:
            breaker.record(Outcome.FAILURE, now, f"probe: {detail}", PROBE)
        elif state is BreakerState.HALF_OPEN and breaker.allow(now):
            outcome = Outcome.SUCCESS if reachable else Outcome.FAILURE
            breaker.record(outcome, now, f"probe: {detail}" if detail else "probe", PROBE)

    def pool_of(self, policy: Policy) -> tuple[UpstreamSpec, ...]:
        if self._pool is None or self._pool[0] is not policy:  # computed once per policy
            pool = policy.pool(DEFAULT_POOL) or policy.pool(policy.upstreams[0].pool)
            self._pool = (policy, pool)
        return self._pool[1]

    def pick(
        self, policy: Policy, pool: tuple[UpstreamSpec, ...], model: str | None, exclude: set[str]
    ) -> UpstreamSpec | None:
        now = self.clock()
        if len(pool) == 1 and not exclude:  # one local server, the common case: no ranking
            only = pool[0]
            return only if self.breaker(only.name).allow(now) else None
        inventories = self.inventories()
        skipped = set(exclude)
        while True:
            candidates = [
                self._candidate(
                    spec, policy.model_id(model, spec.name) if model else None, inventories, now
                )
                for spec in pool
                if spec.name not in skipped
            ]
            best = choose(candidates)
            if best is None:
                return None
            if self.breaker(best.spec.name).allow(now):  # half-open: this reserves the probe
                return best.spec
            skipped.add(best.spec.name)

    def _candidate(
        self,
        spec: UpstreamSpec,
        model: str | None,
        inventories: Mapping[str, Inventory],
        now: float,
    ) -> Candidate:
        """`model` is the upstream's own id for the requested model (None: no model)."""
        inventory = inventories.get(spec.name)
        has = None if inventory is None or model is None else model in inventory.models
        resident = inventory is not None and model is not None and model in inventory.resident
        healthy = self.breaker(spec.name).state(now) is not BreakerState.OPEN
        return Candidate(spec, healthy, has, resident, self.in_flight.get(spec.name, 0))

    def begin(
        self,
        policy: Policy,
        pool: tuple[UpstreamSpec, ...],
        model: str | None,
        tried: set[str],
        source: str | None = None,
    ) -> Attempt:
        """The next attempt: the best untried upstream of the pool, counted in flight.
        Raises ServiceUnavailable when no upstream of the pool may be tried."""
        spec = self.pick(policy, pool, model, tried)
        if spec is None:
            raise self._none_healthy(pool)
        tried.add(spec.name)
        others = any(s.name not in tried for s in pool)
        in_flight = self.in_flight[spec.name] = self.in_flight.get(spec.name, 0) + 1
        sent = self.sent[spec.name] = self.sent.get(spec.name, 0) + 1
        return Attempt(spec, others, in_flight, sent, source)

    def failed(self, attempt: Attempt, failure: RetryElsewhere) -> None:
        """The attempt failed before any byte reached the client: its breaker learns it."""
        self._end(attempt)
        outcome = Outcome.FAILURE
        if failure.busy or failure.answered:
            outcome = Outcome.BUSY if failure.busy else Outcome.ERROR_ANSWER
        breaker = self.breaker(attempt.spec.name)
        breaker.record(outcome, self.clock(), failure.detail, attempt.source)
        log.info(
            "upstream %s failed before the first byte (%s); trying another",
            attempt.spec.name,
            failure.detail,
        )

    def abandoned(self, attempt: Attempt) -> None:
        """The attempt ended without an answer to judge (cancelled, or a bug): not counted."""
        self._end(attempt)

    def finished(self, attempt: Attempt, record: RequestRecord) -> bool:
        """The attempt answered: its breaker learns the outcome. Returns whether it had its
        upstream to itself from start to end (nobody came or went meanwhile): its TTFT is
        then that engine's single-stream TTFT."""
        self._end(attempt)
        self._account(attempt.spec, record, attempt.source)
        name = attempt.spec.name
        return attempt.in_flight == 1 and self.sent[name] == attempt.sent

    def _end(self, attempt: Attempt) -> None:
        self.in_flight[attempt.spec.name] -= 1

    def _account(self, spec: UpstreamSpec, record: RequestRecord, source: str | None) -> None:
        breaker, now = self.breaker(spec.name), self.clock()
        if record.status == 499 or record.error == CLIENT_LEFT or record.error in NOT_THE_UPSTREAMS:
            breaker.release_probe()  # the client left, or the gateway's own limit: no verdict
        elif record.status == 503:
            breaker.record(Outcome.BUSY, now, "503 server busy", source)
        elif record.upstream_failed:  # connection lost, timeouts; mid-stream failures too
            breaker.record(Outcome.FAILURE, now, record.error or str(record.status), source)
        elif record.status >= 500:  # answered with an error: alive, perhaps a poisoned request
            breaker.record(Outcome.ERROR_ANSWER, now, f"answered {record.status}", source)
        else:
            breaker.record(Outcome.SUCCESS, now)

    def _none_healthy(self, pool: tuple[UpstreamSpec, ...]) -> ServiceUnavailable:
        now = self.clock()
        waits = [max(0.0, (self.breaker(s.name).open_until or now) - now) for s in pool]
        seconds = max(1, math.ceil(min(waits, default=1.0)))
        names = ", ".join(f"{s.name} ({self.breaker(s.name).reason})" for s in pool)
        return ServiceUnavailable(
            f"no healthy upstream: {names}; retry in {seconds} s",
            code="no_upstream",
            headers={"retry-after": str(seconds)},
        )
