"""One ladder run: the rungs in order, signals alongside, the knee checked after each rung.

Owns the order of things and what is kept when the run is cut short: every row and sample
lives on the runner and the recorder as it happens, and `finish` summarises whatever rungs
ran (the interrupted one marked partial), so Ctrl-C loses nothing that was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.tools.ladder.host_summary import HostSummary, summarise_host
from gateway.tools.ladder.knee import Knee, KneeRules, RungPoint, knee_at
from gateway.tools.ladder.runner import LaneLoad, LoadRunner
from gateway.tools.ladder.signals import SignalRecorder, SignalRow, peak_rss, swap_growth, window
from gateway.tools.ladder.stats import RequestRow, RungStats, rung_span, summarise_rung


@dataclass(frozen=True, slots=True)
class RungResult:
    concurrency: int
    started_s: float
    ended_s: float
    overall: RungStats
    lanes: dict[str, RungStats]
    peak_rss_bytes: int | None
    swap_growth_bytes: int | None
    host: HostSummary

    @property
    def partial(self) -> bool:
        return self.overall.partial

    def point(self) -> RungPoint:
        return RungPoint(
            self.concurrency,
            self.overall.ttft.p95,
            self.overall.error_rate,
            self.overall.throughput_rps,
        )


@dataclass
class LadderState:
    rungs: list[RungResult] = field(default_factory=list)
    knee: Knee | None = None
    current: tuple[int, float] | None = None  # (concurrency, started_s) of the running rung
    loads: dict[str, LaneLoad] = field(default_factory=dict)  # the running rung's, by lane
    window: tuple[float, float] = (0.0, 0.0)  # the running rung's steady part: ramp to deadline
    interrupted: bool = False


class Ladder:
    def __init__(
        self,
        runner: LoadRunner,
        recorder: SignalRecorder,
        *,
        rungs: Sequence[int],
        rung_seconds: float,
        loads_for: Callable[[int], list[LaneLoad]],
        rules: KneeRules,
        stop_at_knee: bool = False,
        on_rung: Callable[[int, float], None] | None = None,
    ) -> None:
        self.runner = runner
        self.recorder = recorder
        self.concurrencies = tuple(rungs)
        self.rung_seconds = rung_seconds
        self.loads_for = loads_for
        self.rules = rules
        self.stop_at_knee = stop_at_knee
        self.on_rung = on_rung
        self.state = LadderState()

    async def run(self) -> LadderState:
        """Climb the rungs; cancel the task to stop, then call `finish`."""
        for concurrency in self.concurrencies:
            started = self.runner.now()
            self.state.current = (concurrency, started)
            if self.on_rung is not None:
                self.on_rung(concurrency, started)
            ramp = self._ramp_s(concurrency)
            loads = self.loads_for(concurrency)
            self.state.loads = {load.name: load for load in loads}
            self.state.window = (started + ramp, started + self.rung_seconds)
            await self.runner.run_step(concurrency, loads, self.rung_seconds, ramp)
            self.state.current = None
            self._close_rung(concurrency, started, partial=False)
            if self.state.knee is not None and self.stop_at_knee:
                break
        return self.state

    def _ramp_s(self, concurrency: int) -> float:
        """One request's duration (the last rung's median e2e), at most a quarter of the rung:
        first starts spread over it leave the workers as staggered as steady state would."""
        if concurrency <= 1 or not self.state.rungs:
            return 0.0
        median = self.state.rungs[-1].overall.e2e.p50 or 0.0
        return min(median, self.rung_seconds / 4)

    def finish(self, *, interrupted: bool) -> LadderState:
        """Summarise the rung that was running when the run stopped, if any."""
        self.state.interrupted = interrupted
        if self.state.current is not None:
            concurrency, started = self.state.current
            self.state.current = None
            self._close_rung(concurrency, started, partial=True)
        return self.state

    def _close_rung(self, concurrency: int, started: float, *, partial: bool) -> None:
        rows = [row for row in self.runner.rows if row.rung == concurrency]
        start, end = self.state.window
        if partial:  # cut short: the steady part ended when the last request did
            end = min(end, max((r.start_s + r.e2e_s for r in rows), default=start))
        result = summarise(
            concurrency,
            started,
            rows,
            self.recorder.rows,
            (start, end),
            partial=partial,
            loads=self.state.loads,
        )
        self.state.rungs.append(result)
        if partial or self.state.knee is not None:
            return
        points = [rung.point() for rung in self.state.rungs if not rung.partial]
        self.state.knee = knee_at(points, len(points) - 1, self.rules)


def summarise(
    concurrency: int,
    started: float,
    rows: Sequence[RequestRow],
    signals: Sequence[SignalRow],
    steady: tuple[float, float],
    *,
    partial: bool,
    loads: Mapping[str, LaneLoad] | None = None,
) -> RungResult:
    """One rung's figures; throughput over the `steady` window (see `stats.summarise_rung`)."""
    span = rung_span(rows, started)
    ended = started + span
    loads = loads or {}
    lanes = {
        lane: summarise_rung(
            loads[lane].concurrency if lane in loads else concurrency,
            [row for row in rows if row.lane == lane],
            span,
            lane=lane,
            window=steady,
            partial=partial,
            rate_per_s=loads[lane].rate_per_s if lane in loads else 0.0,
        )
        for lane in sorted({row.lane for row in rows})
    }
    overall = summarise_rung(concurrency, rows, span, window=steady, partial=partial)
    samples = window(signals, started, ended) or _nearest(signals, ended)
    baseline = next((s.swap_used_bytes for s in signals if s.swap_used_bytes is not None), None)
    return RungResult(
        concurrency=concurrency,
        started_s=started,
        ended_s=ended,
        overall=overall,
        lanes=lanes,
        peak_rss_bytes=peak_rss(samples),
        swap_growth_bytes=swap_growth(samples, baseline),
        host=summarise_host(samples, span),
    )


def _nearest(signals: Sequence[SignalRow], t: float) -> list[SignalRow]:
    before = [row for row in signals if row.t_s <= t]
    return before[-1:] if before else list(signals[:1])
