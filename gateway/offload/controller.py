"""Offload controller: when to move offloadable lanes off the Mac mini to the remote pool, and back.

Owns the decision only. No I/O, no clock, standard library only: the shell samples host and pool
signals every few seconds, passes them in with the time, routes *new* requests by the returned
state (in-flight streams are never moved) and logs the one Decision per change whose `changed`
is True. Times must be non-decreasing.

Rules in AUTO mode (every rule is about signals the shell could actually read):
- Each local signal is CLEAR (below threshold x hysteresis), BAND (between that and the
  threshold), BREACH (past the threshold) or unknown (reader failed, too few samples, no
  baseline). Memory pressure is categorical: it breaches at/above `pressure_level` and is CLEAR
  only at "normal", so with `pressure_level="critical"` a "warn" reading sits in the band.
- LOCAL -> OFFLOADING: some known signal breaches on every sample for `sustain_s`; one sample
  without a breach resets the timer. Unknown never counts as a breach, so a broken reader can
  delay an offload but never cause one.
- The flip needs a usable remote pool: healthy, not itself at/above `pressure_level`, and not
  slower than the degraded local host (remote p95 >= local interactive p95; only compared when
  both are known). Otherwise the state stays LOCAL (or goes SHEDDING with `shed`) and the reason
  says why.
- OFFLOADING/SHEDDING -> LOCAL: every known signal CLEAR on every sample for `recover_s` (at
  least one must be known). A sample in the band or breaching resets that timer; it does not
  re-arm anything else, because away from LOCAL there is nothing to re-arm.
- OFFLOADING <-> SHEDDING/LOCAL on remote health: the remote must stay unusable (or, from
  SHEDDING, usable) for `sustain_s`, so a flapping health check cannot flap the state. While
  away, "slower" compares against the local p95 recorded when the offload started, because the
  local p95 improves as soon as the batch traffic leaves.
- Every transition resets all timers, so two changes are at least min(sustain_s, recover_s) apart.
- Swap growth = current swap - the lowest reading since the controller entered its current state
  (initially the configured baseline, else the first reading). A transition re-takes it at the
  current reading: macOS frees swap lazily, so an elevated level left over from the last episode
  must not trigger the next one, and recovery asks "is swap still growing", not "has it drained".
Manual modes override all of this with their own reason; returning to AUTO keeps the state and
restarts the timers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Literal

GIB = 1 << 30
HISTORY = 32  # transitions kept for status
LEARN_WINDOW = 16  # quiet-period p95 samples kept for the learned baseline
LEARN_QUANTILE = 0.25
_PRESSURE = {"normal": 0, "warn": 1, "critical": 2}  # anything else reads as unknown

Route = Literal["local", "remote", "shed"]


@dataclass(frozen=True, slots=True)
class OffloadConfig:
    swap_growth_gb: float = 2.0  # GiB of growth since the swap baseline
    pressure_level: str = "warn"  # breaches at or above this level
    p95_ratio: float = 3.0  # interactive p95 TTFT / single-stream baseline
    sustain_s: float = 30.0
    recover_s: float = 120.0
    hysteresis: float = 0.7  # recover only below threshold x hysteresis
    when_remote_unhealthy: Literal["stay_local", "shed"] = "stay_local"
    baseline_ttft_s: float | None = None  # None: learned from quiet periods
    min_samples: int = 20  # a p95 over fewer requests is noise

    def __post_init__(self) -> None:
        if self.pressure_level not in ("warn", "critical"):
            raise ValueError(
                f"pressure_level must be warn or critical, not {self.pressure_level!r}"
            )
        if self.swap_growth_gb <= 0 or self.p95_ratio <= 0:
            raise ValueError("swap_growth_gb and p95_ratio must be positive")
        if self.sustain_s < 0 or self.recover_s < 0:
            raise ValueError("sustain_s and recover_s must not be negative")
        if not 0 < self.hysteresis <= 1:
            raise ValueError("hysteresis must be in (0, 1]")
        if self.when_remote_unhealthy not in ("stay_local", "shed"):
            raise ValueError("when_remote_unhealthy must be stay_local or shed")
        if self.baseline_ttft_s is not None and self.baseline_ttft_s <= 0:
            raise ValueError("baseline_ttft_s must be positive")
        if self.min_samples < 1:
            raise ValueError("min_samples must be at least 1")


@dataclass(frozen=True, slots=True)
class Signals:
    """One sample, taken by the shell every few seconds; None or "unknown" when a reader failed."""

    now: float
    swap_used_bytes: int | None
    pressure: str  # normal / warn / critical / unknown
    interactive_p95_s: float | None
    interactive_samples: int
    remote_healthy: bool
    remote_p95_s: float | None
    remote_pressure: str


class Mode(Enum):
    AUTO = "auto"
    FORCE_LOCAL = "force-local"
    FORCE_OFFLOAD = "force-offload"


class State(Enum):
    LOCAL = "local"
    OFFLOADING = "offloading"
    SHEDDING = (
        "shedding"  # offloadable lanes get 503 + Retry-After: local degraded, remote unusable
    )


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    changed: bool
    reason: str
    breaches: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    source: State
    target: State
    reason: str


class _Level(Enum):
    CLEAR = "clear"
    BAND = "band"
    BREACH = "breach"


@dataclass(frozen=True, slots=True)
class _Reading:
    level: _Level
    text: str


def route_for(state: State, offloadable: bool) -> Route:
    """Where a new request goes; lanes that are not offloadable always stay on the mini."""
    if not offloadable or state is State.LOCAL:
        return "local"
    return "remote" if state is State.OFFLOADING else "shed"


def _level(value: float, threshold: float, hysteresis: float) -> _Level:
    if value > threshold:
        return _Level.BREACH
    return _Level.CLEAR if value < threshold * hysteresis else _Level.BAND


class OffloadController:
    def __init__(self, config: OffloadConfig, *, swap_baseline_bytes: int | None = None) -> None:
        self._config = config
        self._state = State.LOCAL
        self._mode = Mode.AUTO
        self._swap_ref = swap_baseline_bytes
        self._last_swap: int | None = None
        self._calm = False
        self._breach_since: float | None = None
        self._clear_since: float | None = None
        self._switch_since: float | None = None
        self._degraded_p95: float | None = None
        self._learned: deque[float] = deque(maxlen=LEARN_WINDOW)
        self._transitions: deque[Transition] = deque(maxlen=HISTORY)
        self._last_reason = "started local"
        self.transition_count = 0  # all of them; `transitions` keeps only the recent ones

    @property
    def state(self) -> State:
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def last_reason(self) -> str:
        return self._last_reason

    @property
    def transitions(self) -> tuple[Transition, ...]:
        return tuple(self._transitions)

    @property
    def baseline_ttft_s(self) -> float | None:
        """The configured baseline, else the low quartile of the learned quiet-period p95s."""
        if self._config.baseline_ttft_s is not None:
            return self._config.baseline_ttft_s
        if not self._learned:
            return None
        ordered = sorted(self._learned)
        return ordered[max(1, math.ceil(LEARN_QUANTILE * len(ordered))) - 1]

    def learn_baseline(self, p95_s: float, samples: int, *, quiet: bool) -> float | None:
        """Offer one window's single-stream p95 TTFT; returns the baseline now in use.

        The shell sets `quiet` when the window held only interactive traffic, one stream at a
        time. The window is kept only if it also had `min_samples` requests, the controller is
        LOCAL, and the last observed sample was calm: pressure "normal" and swap growth known and
        below threshold x hysteresis. The low quartile of the last LEARN_WINDOW kept windows is
        the baseline: robust to the odd cold load or huge prompt, unlike the mean or the minimum.
        """
        if (
            quiet
            and samples >= self._config.min_samples
            and p95_s > 0
            and self._state is State.LOCAL
            and self._calm
        ):
            self._learned.append(p95_s)
        return self.baseline_ttft_s

    def observe(self, signals: Signals) -> Decision:
        """Feed one sample; call every sampling interval, in any mode."""
        used = signals.swap_used_bytes
        if used is not None and (self._swap_ref is None or used < self._swap_ref):
            self._swap_ref = used
        self._last_swap = signals.swap_used_bytes
        readings = self._readings(signals)
        breaches = tuple(r.text for r in readings.values() if r.level is _Level.BREACH)
        swap = readings.get("swap")
        self._calm = (
            signals.pressure == "normal" and swap is not None and swap.level is _Level.CLEAR
        )
        if self._mode is not Mode.AUTO:
            return self._hold(f"mode {self._mode.value} set by operator", breaches)
        if self._state is State.LOCAL:
            return self._observe_local(signals, breaches)
        return self._observe_away(signals, tuple(readings.values()), breaches)

    def set_mode(self, mode: Mode, now: float) -> Decision:
        """Operator override; AUTO keeps the current state and restarts every timer."""
        self._mode = mode
        self._breach_since = self._clear_since = self._switch_since = None
        reason = f"operator set mode {mode.value}"
        target = {Mode.FORCE_LOCAL: State.LOCAL, Mode.FORCE_OFFLOAD: State.OFFLOADING}.get(mode)
        if target is None:
            return self._hold(f"{reason}; {self._state.value} until the signals say otherwise", ())
        if target is self._state:
            return self._hold(f"{reason}; already {target.value}", ())
        return self._change(target, now, reason, ())

    def _readings(self, s: Signals) -> dict[str, _Reading]:
        """Classify every local signal that is known; unknown ones are simply absent."""
        cfg = self._config
        out: dict[str, _Reading] = {}
        if s.swap_used_bytes is not None and self._swap_ref is not None:
            growth = s.swap_used_bytes - self._swap_ref
            text = (
                f"swap grew {growth / GIB:.1f} GiB over the {self._swap_ref / GIB:.1f} GiB "
                f"baseline (threshold {cfg.swap_growth_gb:.1f} GiB)"
            )
            level = _level(growth / GIB, cfg.swap_growth_gb, cfg.hysteresis)
            out["swap"] = _Reading(level, text)
        rank = _PRESSURE.get(s.pressure)
        if rank is not None:
            if rank >= _PRESSURE[cfg.pressure_level]:
                level = _Level.BREACH
            else:
                level = _Level.CLEAR if rank == 0 else _Level.BAND
            text = f"memory pressure {s.pressure} (threshold {cfg.pressure_level})"
            out["pressure"] = _Reading(level, text)
        p95, baseline = self._local_p95(s), self.baseline_ttft_s
        if p95 is not None and baseline is not None:
            ratio = p95 / baseline
            text = (
                f"interactive p95 TTFT {p95:.2f} s is {ratio:.1f}x the {baseline:.2f} s "
                f"baseline (threshold {cfg.p95_ratio:.1f}x)"
            )
            out["p95"] = _Reading(_level(ratio, cfg.p95_ratio, cfg.hysteresis), text)
        return out

    def _local_p95(self, s: Signals) -> float | None:
        if s.interactive_samples < self._config.min_samples:
            return None
        return s.interactive_p95_s

    def _remote_problem(self, s: Signals) -> str | None:
        """Why the remote pool cannot take the traffic now, or None when it can."""
        if not s.remote_healthy:
            return "the remote pool is unhealthy"
        rank = _PRESSURE.get(s.remote_pressure)
        if rank is not None and rank >= _PRESSURE[self._config.pressure_level]:
            return f"the remote pool is under {s.remote_pressure} memory pressure"
        local = self._local_p95(s) if self._state is State.LOCAL else self._degraded_p95
        if s.remote_p95_s is not None and local is not None and s.remote_p95_s >= local:
            return (
                f"remote p95 TTFT {s.remote_p95_s:.2f} s is no faster than "
                f"the degraded local {local:.2f} s"
            )
        return None

    def _observe_local(self, s: Signals, breaches: tuple[str, ...]) -> Decision:
        cfg = self._config
        if not breaches:
            self._breach_since = None
            return self._hold("local: no known signal past its threshold", breaches)
        if self._breach_since is None:
            self._breach_since = s.now
        held = s.now - self._breach_since
        summary = f"{'; '.join(breaches)} for {held:.0f} s"
        if held < cfg.sustain_s:
            return self._hold(f"local: {summary} of the {cfg.sustain_s:.0f} s needed", breaches)
        problem = self._remote_problem(s)
        self._degraded_p95 = self._local_p95(s)
        if problem is None:
            return self._change(State.OFFLOADING, s.now, f"offloading: {summary}", breaches)
        if cfg.when_remote_unhealthy == "shed":
            reason = f"shedding offloadable lanes: {summary}, but {problem}"
            return self._change(State.SHEDDING, s.now, reason, breaches)
        return self._hold(f"staying local: {summary}, but {problem}", breaches)

    def _observe_away(
        self, s: Signals, readings: tuple[_Reading, ...], breaches: tuple[str, ...]
    ) -> Decision:
        cfg, here = self._config, self._state.value
        if readings and all(r.level is _Level.CLEAR for r in readings):
            if self._clear_since is None:
                self._clear_since = s.now
            held = s.now - self._clear_since
            texts = "; ".join(r.text for r in readings)
            if held >= cfg.recover_s:
                reason = f"back to local: {texts}, below x{cfg.hysteresis:g} for {held:.0f} s"
                return self._change(State.LOCAL, s.now, reason, breaches)
            return self._hold(f"{here}: recovering for {held:.0f} of {cfg.recover_s:.0f} s", ())
        self._clear_since = None
        problem = self._remote_problem(s)
        if (problem is None) == (self._state is State.OFFLOADING):
            self._switch_since = None
            why = "; ".join(r.text for r in readings if r.level is not _Level.CLEAR)
            return self._hold(f"{here}: not recovered: {why or 'no known signal'}", breaches)
        if self._switch_since is None:
            self._switch_since = s.now
        held = s.now - self._switch_since
        if problem is None:
            target, reason = State.OFFLOADING, "offloading: the remote pool is usable again for"
        elif cfg.when_remote_unhealthy == "shed":
            target, reason = State.SHEDDING, f"shedding offloadable lanes: {problem} for"
        else:
            target, reason = State.LOCAL, f"back to local: {problem} for"
        reason = f"{reason} {held:.0f} s"
        if held < cfg.sustain_s:
            return self._hold(f"{here}: {target.value} next if this holds: {reason}", breaches)
        return self._change(target, s.now, reason, breaches)

    def _hold(self, reason: str, breaches: tuple[str, ...]) -> Decision:
        self._last_reason = reason
        return Decision(self._state, False, reason, breaches)

    def _change(
        self, target: State, now: float, reason: str, breaches: tuple[str, ...]
    ) -> Decision:
        self._transitions.append(Transition(now, self._state, target, reason))
        self.transition_count += 1
        self._state = target
        self._breach_since = self._clear_since = self._switch_since = None
        self._swap_ref = self._last_swap  # re-taken here; see the module docstring
        self._last_reason = reason
        return Decision(target, True, reason, breaches)
