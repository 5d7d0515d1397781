"""Pure circuit breaker for one upstream: decides whether a request may be sent to it now.

Owns the CLOSED -> OPEN -> HALF_OPEN -> CLOSED/OPEN state machine and its counters. It must
not do I/O, read the clock or know about HTTP: the relay classifies each attempt into an
Outcome and passes the current time in, which keeps every transition testable with a fake
clock.

Why BUSY is counted apart from FAILURE: an Ollama whose queue is full answers 503 in
milliseconds. Counted as a failure it would take `failures_to_open` fast refusals to trip, and
meanwhile a least-latency or least-loaded selector sees the quickest upstream in the pool and
sends it *more* traffic. A separate, lower `busy_to_open` sheds it sooner, and keeps "busy"
(healthy but full: come back soon) distinguishable from "broken" in status and metrics.

"Consecutive" means "without a success in between": only a success proves health, so a
failure does not reset the busy streak nor a busy answer the failure streak.

Why an error *answer* is counted apart from a FAILURE: an upstream that answers 500 is up;
one client's poisoned requests (a 900-deep `messages` nesting makes the simulator answer 500)
must not open the breaker for everyone. A 5xx answer counts towards `failures_to_open` like a
failure, but opens the breaker only with evidence the upstream itself is sick: a connection
failure or timeout in the same streak, or 5xx answers from at least `sources_to_open`
distinct sources (clients, or the active probe).

Cooldown backoff: each time a half-open probe fails the next cooldown doubles, capped at
`max_cooldown_s`, so a host that is down for minutes is probed a handful of times rather than
every `cooldown_s`; closing resets it to `cooldown_s`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(Enum):
    """How one attempt ended, as far as upstream health is concerned."""

    SUCCESS = "success"
    FAILURE = "failure"  # connect error, timeout before the first byte, 5xx other than busy
    BUSY = "busy"  # 503 "server busy": alive but its queue is full
    ERROR_ANSWER = "error_answer"  # answered 5xx: alive; counts when several sources see it


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures_to_open: int = 5
    busy_to_open: int = 3
    cooldown_s: float = 10.0
    max_cooldown_s: float = 120.0
    half_open_probes: int = 1  # consecutive successful probes needed to close again
    sources_to_open: int = 2  # distinct sources of 5xx answers needed without a failure

    def __post_init__(self) -> None:
        counts = (self.failures_to_open, self.busy_to_open, self.half_open_probes)
        if min(*counts, self.sources_to_open) < 1:
            raise ValueError(
                "failures_to_open, busy_to_open, half_open_probes and sources_to_open must be >= 1"
            )
        if not 0 < self.cooldown_s <= self.max_cooldown_s:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s")


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    source: BreakerState
    target: BreakerState
    reason: str


MAX_TRANSITIONS_KEPT = 32
"""Recent transitions kept for status pages; `transition_count` keeps the full tally."""


class CircuitBreaker:
    """Per-upstream breaker. `allow` reserves the half-open probe slot, so every True it
    returns must be answered by `record` or, if the request ended without a verdict on the
    upstream (client disconnected, cancelled), by `release_probe`.

    Results arriving while OPEN (requests admitted before it opened) are ignored. In HALF_OPEN
    the breaker cannot tell such a straggler from the probe, so it judges by whichever comes
    first; a late success can close a breaker early, which the next failure streak corrects.
    """

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._hard = False  # a connection failure or timeout in the current failure streak
        self._sources: set[str | None] = set()  # of 5xx answers in it, at most sources_to_open
        self._busy = 0
        self._probe_successes = 0
        self._probe_in_flight = False
        self._cooldown = config.cooldown_s
        self._open_until = 0.0
        self.reason = "initial"
        self.transition_count = 0
        self._transitions: deque[Transition] = deque(maxlen=MAX_TRANSITIONS_KEPT)

    @property
    def transitions(self) -> tuple[Transition, ...]:
        return tuple(self._transitions)

    @property
    def open_until(self) -> float | None:
        """When the current cooldown ends, or None if not OPEN."""
        return self._open_until if self._state is BreakerState.OPEN else None

    @property
    def cooldown_s(self) -> float:
        """The cooldown the next (or current) opening uses."""
        return self._cooldown

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def consecutive_busy(self) -> int:
        return self._busy

    def state(self, now: float) -> BreakerState:
        """The state as of `now`; an elapsed cooldown reads as HALF_OPEN without mutating."""
        if self._state is BreakerState.OPEN and now >= self._open_until:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self, now: float) -> bool:
        """May a request go to this upstream now? In HALF_OPEN, True reserves the probe."""
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN or self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def release_probe(self) -> None:
        """Give back a probe slot whose request ended without telling us anything."""
        self._probe_in_flight = False

    def record(
        self, outcome: Outcome, now: float, detail: str = "", source: str | None = None
    ) -> None:
        """Account one finished attempt; `detail` (e.g. "connection refused") goes in reasons,
        `source` (who sent the request: a client, or "probe") tells 5xx answers apart."""
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            self._record_closed(outcome, now, detail, source)
        elif self._state is BreakerState.HALF_OPEN:
            self._record_half_open(outcome, now, detail)

    def _record_closed(self, outcome: Outcome, now: float, detail: str, source: str | None) -> None:
        if outcome is Outcome.SUCCESS:
            self._reset_streaks()
            return
        suffix = f": {detail}" if detail else ""
        if outcome is Outcome.BUSY:
            self._busy += 1
            if self._busy >= self.config.busy_to_open:
                self._open(now, f"{self._busy} consecutive busy answers (503){suffix}")
            return
        self._failures += 1
        if outcome is Outcome.FAILURE:
            self._hard = True
        elif len(self._sources) < self.config.sources_to_open:
            self._sources.add(source)
        evidence = self._hard or len(self._sources) >= self.config.sources_to_open
        if self._failures >= self.config.failures_to_open and evidence:
            self._open(now, f"{self._failures} consecutive failures{suffix}")

    def _reset_streaks(self) -> None:
        self._failures = self._busy = 0
        self._hard = False
        self._sources.clear()

    def _record_half_open(self, outcome: Outcome, now: float, detail: str) -> None:
        self._probe_in_flight = False
        if outcome is Outcome.SUCCESS:
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._cooldown = self.config.cooldown_s
                self._reset_streaks()
                self._move(now, BreakerState.CLOSED, f"{self._probe_successes} probe(s) succeeded")
            return
        self._cooldown = min(self._cooldown * 2, self.config.max_cooldown_s)
        kind = "answered busy" if outcome is Outcome.BUSY else "failed"
        suffix = f": {detail}" if detail else ""
        self._open(now, f"probe {kind}{suffix}; cooling down {self._cooldown:g}s")

    def _open(self, now: float, reason: str) -> None:
        self._open_until = now + self._cooldown
        self._probe_in_flight = False
        self._move(now, BreakerState.OPEN, reason)

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._probe_successes = 0
            self._probe_in_flight = False
            reason = f"cooldown of {self._cooldown:g}s elapsed; probing"
            self._move(self._open_until, BreakerState.HALF_OPEN, reason)

    def _move(self, at: float, target: BreakerState, reason: str) -> None:
        self._transitions.append(Transition(at, self._state, target, reason))
        self.transition_count += 1
        self._state = target
        self.reason = reason
