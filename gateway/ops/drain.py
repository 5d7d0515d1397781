"""Pure graceful-drain decisions: when to refuse, when to cut the streams left, when to stop.

Phases (one gateway process, driven by signals and a 0.1 s tick)::

    SERVING ──first SIGTERM/SIGINT──▶ DRAINING ──nothing in flight──────────────▶ DONE
                                         │                                         ▲
                                         └─timeout_s passed──▶ CUTTING ──nothing in flight,
                                                                         or grace_s passed

While DRAINING, new relay requests and queued waiters are refused (503 + Retry-After +
`Connection: close`), requests in flight go on. CUTTING interrupts what is left with the stream
error event and gives those handlers `grace_s` to write it. DONE lets the server close its
listener, run the lifespan shutdown (flushes) and exit 0. A second signal cuts at once instead
of waiting; a third stops without the shutdown (forced). Must not: read the clock (``now``
comes in), do I/O, or know about asyncio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from gateway.errors import ServiceUnavailable

DRAINING_CODE = "gateway_draining"
# After the drain the process exits and launchd (KeepAlive) starts it again: a second or two.
RESTART_S = 2.0
RETRY_AFTER_MAX_S = 60


class Phase(Enum):
    SERVING = "serving"
    DRAINING = "draining"
    CUTTING = "cutting"
    DONE = "done"


class Step(Enum):
    """What the shell does after one tick."""

    WAIT = "wait"  # keep serving what is in flight
    CUT = "cut"  # interrupt every request still in flight, with the stream error event
    STOP = "stop"  # close the listener, run the lifespan shutdown, exit


@dataclass(slots=True)
class Drain:
    timeout_s: float
    grace_s: float = 1.0  # after the cut: time for the interrupted handlers to write the event
    phase: Phase = Phase.SERVING
    started_at: float | None = None
    cut_at: float | None = None
    forced: bool = False

    @property
    def refusing(self) -> bool:
        """True from the first signal on: new relay requests get a 503."""
        return self.phase is not Phase.SERVING

    def on_signal(self, now: float) -> Step:
        """A SIGTERM or SIGINT arrived. The first starts the drain (WAIT); the second skips the
        wait (CUT now, then the usual shutdown); a third stops at once (STOP, forced)."""
        if self.phase is Phase.SERVING:
            self.phase, self.started_at = Phase.DRAINING, now
            return Step.WAIT
        if self.phase is Phase.DRAINING:
            self.phase, self.cut_at = Phase.CUTTING, now
            return Step.CUT
        self.phase, self.forced = Phase.DONE, True
        return Step.STOP

    def tick(self, now: float, in_flight: int) -> Step:
        if self.phase is Phase.SERVING:
            return Step.WAIT
        if self.phase is Phase.DRAINING:
            if in_flight == 0:
                self.phase = Phase.DONE
                return Step.STOP
            if now - self._started() >= self.timeout_s:
                self.phase, self.cut_at = Phase.CUTTING, now
                return Step.CUT
            return Step.WAIT
        if self.phase is Phase.CUTTING:
            assert self.cut_at is not None
            if in_flight == 0 or now - self.cut_at >= self.grace_s:
                self.phase = Phase.DONE
                return Step.STOP
            return Step.WAIT
        return Step.STOP

    def retry_after_s(self, now: float) -> int:
        """Whole seconds until this process could serve again: the drain left plus a restart."""
        left = 0.0
        if self.phase is Phase.DRAINING:
            left = max(0.0, self._started() + self.timeout_s - now)
        return max(1, min(RETRY_AFTER_MAX_S, math.ceil(left + RESTART_S)))

    def refusal(self, now: float) -> ServiceUnavailable:
        """The 503 for a request that arrives, or still waits in a queue, during the drain."""
        seconds = self.retry_after_s(now)
        return ServiceUnavailable(
            f"lanegate is shutting down (draining) and takes no new requests; retry in "
            f"{seconds} s, or send it to another gateway",
            code=DRAINING_CODE,
            headers={"retry-after": str(seconds), "connection": "close"},
        )

    def _started(self) -> float:
        assert self.started_at is not None
        return self.started_at


def cut_error() -> ServiceUnavailable:
    """The final stream error event (or 503) of a request still running at the deadline."""
    return ServiceUnavailable(
        "lanegate is shutting down and this response did not finish within the drain timeout "
        "(LANEGATE_DRAIN_TIMEOUT); retry the request",
        code=DRAINING_CODE,
        headers={"retry-after": str(math.ceil(RESTART_S)), "connection": "close"},
    )
