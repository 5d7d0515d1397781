"""Asyncio driver of the simulated host: turns engine steps into timed token deliveries.

Owns the single engine-loop task (batching mode), the per-request token channels, cancelling
a request the moment its client goes away, and the counters behind /sim/stats. In fixed mode
there is no shared engine: each request's tokens ride on loop timers, so any number run in
parallel at a cost of one timer per chunk. Scheduling decisions stay in `engine`; this module
only sleeps and delivers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.tools.simulator import engine
from gateway.tools.simulator.engine import EngineState, HostSignals, Profile

# Waking up to this late still starts the next step at the planned time, so the simulated
# rates hold under event-loop jitter; later than that, the host is treated as stalled.
_CATCH_UP_S = 0.02
_KEEP_CANCELS = 100
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenRequest:
    """What the host needs from an API request. `max_tokens=None` means the profile default,
    ended as a natural stop rather than a length cut."""

    request_id: str
    model: str
    prompt_tokens: int
    max_tokens: int | None = None
    seed: int | None = None


class Generation:
    """One accepted request: an async iterator of token texts that ends on finish or cancel.

    The host produces into it (`_emit`, `_close`); the HTTP side consumes it and calls
    `cancel()` when the client disconnects. Times are `time.monotonic()` seconds.
    """

    __slots__ = (
        "_done",
        "_items",
        "_loop",
        "_on_cancel",
        "_texts",
        "_waiter",
        "admitted_at",
        "completion_tokens",
        "finish_reason",
        "finished_at",
        "first_token_at",
        "instant",
        "key",
        "limit_reason",
        "max_tokens",
        "prompt_tokens",
        "received_at",
        "request_id",
        "seq_no",
        "timer",
    )

    def __init__(
        self,
        req: GenRequest,
        *,
        key: int,
        seq_no: int,
        profile: Profile,
        on_cancel: Callable[[Generation], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._on_cancel = on_cancel
        self.request_id = req.request_id or f"sim-{key}"
        self.key = key
        self.seq_no = seq_no
        self.prompt_tokens = max(1, req.prompt_tokens)
        if req.max_tokens is None:
            self.max_tokens, self.limit_reason = profile.default_max_tokens, "stop"
        else:
            self.max_tokens, self.limit_reason = max(1, req.max_tokens), "length"
        self.received_at = time.monotonic()
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self.instant = False
        self.timer: asyncio.TimerHandle | None = None
        seed = engine.token_seed(profile.seed, seq_no if req.seed is None else req.seed)
        self._texts = engine.token_texts(seed, self.max_tokens)

    async def batch(self) -> list[str]:
        """Wait for tokens, then take every one ready; empty once finished or cancelled."""
        while not self._items and not self._done:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiter = waiter
            await waiter
        out = list(self._items)
        self._items.clear()
        return out

    async def wait_admitted(self) -> None:
        """Wait until the request holds a slot (or ended without one)."""
        while self.admitted_at is None and not self._done:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiter = waiter
            await waiter

    @property
    def done(self) -> bool:
        return self._done

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"

    def cancel(self) -> None:
        """The client is gone: stop producing and give the slot back at once."""
        if self._done:
            return
        self._close("cancelled", time.monotonic())
        self._on_cancel(self)

    def _emit(self, now: float, count: int = 1) -> None:
        start = self.completion_tokens
        self._items.extend(self._texts[start : start + count])
        self.completion_tokens = min(start + count, self.max_tokens)
        if self.first_token_at is None:
            self.first_token_at = now
        self._wake()

    def _close(self, reason: str, now: float) -> None:
        self._done = True
        self.finish_reason = reason
        self.finished_at = now
        if self.admitted_at is None:
            self.admitted_at = now
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._waiter = None


@dataclass(slots=True)
class SimStats:
    """Counters for /sim/stats; `cancels` keeps the most recent cancellations."""

    received: int = 0
    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    max_active_seen: int = 0
    cancels: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEEP_CANCELS))

    def record_cancel(self, gen: Generation) -> None:
        at = gen.finished_at if gen.finished_at is not None else time.monotonic()
        self.cancelled += 1
        self.cancels.append(
            {"request_id": gen.request_id, "at": at, "after_s": at - gen.received_at}
        )

    def snapshot(self, profile: Profile, active: int, queued: int) -> dict[str, Any]:
        return {
            "profile": profile.name,
            "mode": profile.mode,
            "received": self.received,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "rejected": self.rejected,
            "active": active,
            "queued": queued,
            "max_active_seen": self.max_active_seen,
            "cancels": list(self.cancels),
        }


class SimHost(Protocol):
    profile: Profile
    stats: SimStats

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def submit(self, req: GenRequest) -> Generation | None: ...
    def counts(self) -> tuple[int, int]: ...
    def signals(self) -> HostSignals: ...
    def reset(self) -> None: ...


class _HostBase:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.stats = SimStats()
        self._gens: dict[int, Generation] = {}
        self._next_key = 0
        self._next_seq = 0

    def _new_generation(self, req: GenRequest) -> Generation:
        self._next_key += 1
        self._next_seq += 1
        gen = Generation(
            req,
            key=self._next_key,
            seq_no=self._next_seq,
            profile=self.profile,
            on_cancel=self._cancelled,
        )
        self._gens[gen.key] = gen
        return gen

    def _finish(self, gen: Generation, now: float) -> None:
        self._gens.pop(gen.key, None)
        gen._close(gen.limit_reason, now)
        self.stats.completed += 1

    def _cancelled(self, gen: Generation) -> None:
        self._gens.pop(gen.key, None)
        self.stats.record_cancel(gen)

    def reset(self) -> None:
        """Zero the counters and the text sequence (so a test run is reproducible)."""
        active, _ = self.counts()
        self.stats = SimStats(max_active_seen=active)
        self._next_seq = 0

    def counts(self) -> tuple[int, int]:
        raise NotImplementedError


class BatchingHost(_HostBase):
    """The shared engine: one task runs steps back to back while there is work."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._state = EngineState()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sim-engine-{self.profile.name}")
        self._task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for gen in list(self._gens.values()):
            gen.cancel()

    def submit(self, req: GenRequest) -> Generation | None:
        self.stats.received += 1
        gen = self._new_generation(req)
        seq = engine.new_seq(gen.key, gen.prompt_tokens, gen.max_tokens)
        self._state, accepted = engine.submit(self._state, self.profile, seq)
        if not accepted:
            self._gens.pop(gen.key, None)
            self.stats.rejected += 1
            return None
        self._wake.set()
        return gen

    def counts(self) -> tuple[int, int]:
        return len(self._state.active), len(self._state.waiting)

    def signals(self) -> HostSignals:
        active, queued = self.counts()
        tokens = engine.kv_tokens(self._state)
        return engine.host_signals(self.profile, tokens, active, queued)

    def _cancelled(self, gen: Generation) -> None:
        self._state = engine.cancel(self._state, gen.key)
        super()._cancelled(gen)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_end = loop.time()
        while True:
            now = loop.time()
            start = last_end if 0.0 <= now - last_end <= _CATCH_UP_S else now
            self._state, step = engine.next_step(self._state, self.profile, start)
            if step is None:
                self._wake.clear()
                await self._wake.wait()
                last_end = loop.time()
                continue
            self._note_admitted(step)
            await asyncio.sleep(max(0.0, step.end - loop.time()))
            self._state, emissions = engine.apply_step(self._state, step)
            self._deliver(emissions)
            last_end = step.end

    def _note_admitted(self, step: engine.Step) -> None:
        now = time.monotonic()
        for key in step.admitted:
            gen = self._gens.get(key)
            if gen is not None:
                gen.admitted_at = now
                gen._wake()
        active = len(self._state.active)
        self.stats.max_active_seen = max(self.stats.max_active_seen, active)

    def _deliver(self, emissions: tuple[engine.Emission, ...]) -> None:
        now = time.monotonic()
        for emission in emissions:
            gen = self._gens.get(emission.key)
            if gen is None:
                continue
            gen._emit(now)
            if emission.finished:
                self._finish(gen, now)


class FixedHost(_HostBase):
    """No shared engine: TTFT, then evenly spaced chunks, any number of requests at once."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._ttft = profile.ttft_ms / 1000.0
        self._interval = profile.chunk_interval_ms / 1000.0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for gen in list(self._gens.values()):
            gen.cancel()

    def submit(self, req: GenRequest) -> Generation | None:
        self.stats.received += 1
        gen = self._new_generation(req)
        gen.admitted_at = gen.received_at
        self.stats.max_active_seen = max(self.stats.max_active_seen, len(self._gens))
        if self._ttft == 0.0 and self._interval == 0.0:
            gen.instant = True
            self._tick(gen, 0, 0.0)
        elif self._ttft == 0.0:
            self._tick(gen, 0, gen._loop.time())
        else:
            self._schedule(gen, 0, gen._loop.time())
        return gen

    def counts(self) -> tuple[int, int]:
        return len(self._gens), 0

    def signals(self) -> HostSignals:
        return engine.host_signals(self.profile, 0, len(self._gens), 0)

    def _cancelled(self, gen: Generation) -> None:
        if gen.timer is not None:
            gen.timer.cancel()
        super()._cancelled(gen)

    def _schedule(self, gen: Generation, index: int, t0: float) -> None:
        at = t0 + self._ttft + index * self._interval
        gen.timer = gen._loop.call_at(at, self._tick, gen, index, t0)

    def _tick(self, gen: Generation, index: int, t0: float) -> None:
        if gen.done:
            return
        now = time.monotonic()
        # With no spacing between chunks, every remaining token is ready at once.
        last = gen.max_tokens - 1 if self._interval == 0.0 else index
        gen._emit(now, last + 1 - index)
        if last + 1 >= gen.max_tokens:
            self._finish(gen, now)
        else:
            self._schedule(gen, last + 1, t0)


def _report_crash(task: asyncio.Task[None]) -> None:
    """Say so loudly if the engine loop dies: every request would otherwise hang."""
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator engine loop crashed", exc_info=task.exception())


def create_host(profile: Profile) -> SimHost:
    """The host for a profile's mode."""
    if profile.mode == "fixed":
        return FixedHost(profile)
    return BatchingHost(profile)
