"""Why a rung's tail moved: the host signals that moved with its p95/p99, and a verdict.

Each rung is compared with the first (the ladder's baseline): the tail "rose" when its p95 or
p99 TTFT reached `TAIL_RISE` x the first rung's; a signal "moved" when it crossed its own
threshold against the first rung (below). The verdict reads them in this order:
- thermal: the thermal warning level rose or the CPU speed limit fell → throttling;
- memory: swap-in or memory pressure moved together with another memory signal (available
  memory, the server's RSS, disk reads: swap-in shows as reads) → memory;
- CPU: a core cluster (or the whole CPU) saturated → CPU, naming the cluster;
- disk: disk traffic moved alone → another process's I/O;
- errors rose while the tail did not → timeouts or a proxy, not the host;
- the tail rose and no host signal moved → the server itself: requests sharing batches below
  its slot count, waiting for a free slot above it (the expected reason past the knee).
Signals that moved while the tail held (and errors did not rise) are listed, not blamed.

Pure: summaries in, a line out; no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TAIL_RISE = 1.5  # p95 or p99 TTFT at least this x the first rung's
ERROR_RISE = 0.01  # error rate this much above the first rung's
SWAP_IN_BYTES = 64 << 20  # swap growth during the rung beyond the first rung's
AVAILABLE_DROP = 0.10  # of the first rung's lowest available memory
RSS_RISE = 0.10  # of the first rung's peak RSS
DISK_RISE = 2.0  # x the first rung's mean, and at least DISK_FLOOR_BPS more
DISK_FLOOR_BPS = 4 << 20
CPU_SATURATED_PCT = 90.0
PRESSURE_RANK = {"normal": 0, "warn": 1, "critical": 2}

MEMORY_SIGNALS = ("swap-in", "memory pressure", "available memory", "server RSS", "disk reads")


@dataclass(frozen=True, slots=True)
class RungSignals:
    """What one rung's latency and host looked like (None: not measured)."""

    concurrency: int
    p95_ttft_s: float | None
    p99_ttft_s: float | None
    error_rate: float
    swap_growth_bytes: int | None
    pressure: str | None  # the worst seen: normal, warn, critical
    min_available_bytes: int | None
    peak_rss_bytes: int | None
    disk_read_bps: float | None  # mean over the rung
    disk_write_bps: float | None
    cpu_busy_pct: float | None  # the highest sample of the whole CPU
    cluster_busy_pct: tuple[tuple[str, float], ...] = ()  # highest sample per cluster
    thermal_level: int | None = None  # 0 nominal; higher is hotter
    speed_limit_pct: int | None = None  # the lowest CPU_Speed_Limit seen


@dataclass(frozen=True, slots=True)
class TailReading:
    concurrency: int
    rose: tuple[str, ...]  # "p95 2.1x", "p99 3.0x": which tail rose, by how much
    moved: tuple[str, ...]  # signals that moved, in MEMORY_SIGNALS-first order
    verdict: str  # "memory", "thermal", "cpu", "disk", "errors", "queueing", "steady"
    line: str


def read_tails(rungs: Sequence[RungSignals]) -> list[TailReading]:
    """One reading per rung; the first rung is the baseline and reads as steady unless it
    was hot or throttled from the start."""
    if not rungs:
        return []
    base = rungs[0]
    return [read_tail(rung, base) for rung in rungs]


def read_tail(rung: RungSignals, base: RungSignals) -> TailReading:
    rose = _tail_rose(rung, base) if rung is not base else ()
    moved = _moved(rung, base)
    errors = rung.error_rate > base.error_rate + ERROR_RISE
    verdict, why = _verdict(rose, moved, errors, rung)
    if rung is base and verdict == "steady":  # what the others are read against
        line = "baseline" + (f" (already: {', '.join(moved)})" if moved else "")
        return TailReading(rung.concurrency, rose, moved, verdict, line)
    return TailReading(rung.concurrency, rose, moved, verdict, _line(rose, moved, why, verdict))


def _tail_rose(rung: RungSignals, base: RungSignals) -> tuple[str, ...]:
    rose = []
    for name, now, then in (
        ("p95", rung.p95_ttft_s, base.p95_ttft_s),
        ("p99", rung.p99_ttft_s, base.p99_ttft_s),
    ):
        if now is not None and then and now >= TAIL_RISE * then:
            rose.append(f"{name} {now / then:.1f}x")
    return tuple(rose)


def _moved(rung: RungSignals, base: RungSignals) -> tuple[str, ...]:
    checks = (
        ("swap-in", _swap_in(rung, base)),
        ("memory pressure", _rank(rung.pressure) > _rank(base.pressure)),
        ("available memory", _dropped(rung.min_available_bytes, base.min_available_bytes)),
        ("server RSS", _rose(rung.peak_rss_bytes, base.peak_rss_bytes, RSS_RISE)),
        ("disk reads", _disk(rung.disk_read_bps, base.disk_read_bps)),
        ("disk writes", _disk(rung.disk_write_bps, base.disk_write_bps)),
        ("thermal", _hotter(rung, base)),
    )
    moved = [name for name, fired in checks if fired]
    moved += [f"{name} cores saturated" for name in _saturated_clusters(rung, base)]
    if _saturated(rung.cpu_busy_pct, base.cpu_busy_pct if rung is not base else None):
        moved.append("CPU saturated")
    return tuple(moved)


def _verdict(
    rose: tuple[str, ...], moved: tuple[str, ...], errors: bool, rung: RungSignals
) -> tuple[str, str]:
    memory = [name for name in moved if name in MEMORY_SIGNALS]
    if "thermal" in moved:
        return "thermal", _thermal_text(rung)
    if not rose and not errors:  # what moved did not hurt the tail: context, not a cause
        return "steady", "steady"
    if ({"swap-in", "memory pressure"} & set(memory)) and len(memory) >= 2:
        return "memory", "suspect memory"
    cpu = [name for name in moved if name.endswith("saturated")]
    if cpu:
        return "cpu", f"suspect CPU ({', '.join(cpu)})"
    if "disk reads" in moved or "disk writes" in moved:
        return "disk", "suspect disk I/O from another process"
    if errors and not rose:
        return "errors", "errors rose without a slower tail: suspect timeouts or a proxy"
    if rose:
        return (
            "queueing",
            "no host signal moved: the server itself (shared batches or a wait for a slot)",
        )
    return "steady", "steady"


def _line(rose: tuple[str, ...], moved: tuple[str, ...], why: str, verdict: str) -> str:
    if verdict == "steady":
        return "tail steady" + (f"; {', '.join(moved)} moved" if moved else "")
    head = f"{' and '.join(rose)} rose" if rose else "tail steady"
    return f"{head} with {' and '.join(moved)}: {why}" if moved else f"{head}: {why}"


def _thermal_text(rung: RungSignals) -> str:
    parts = []
    if rung.thermal_level:
        parts.append(f"thermal warning level {rung.thermal_level}")
    if rung.speed_limit_pct is not None and rung.speed_limit_pct < 100:
        parts.append(f"CPU speed limited to {rung.speed_limit_pct}%")
    return "suspect thermal throttling (" + ", ".join(parts or ["hotter"]) + ")"


def _swap_in(rung: RungSignals, base: RungSignals) -> bool:
    if rung.swap_growth_bytes is None:
        return False
    return rung.swap_growth_bytes - max(base.swap_growth_bytes or 0, 0) >= SWAP_IN_BYTES


def _rank(pressure: str | None) -> int:
    return PRESSURE_RANK.get(pressure or "", -1)


def _dropped(now: int | None, then: int | None) -> bool:
    return now is not None and then is not None and then > 0 and now <= then * (1 - AVAILABLE_DROP)


def _rose(now: float | None, then: float | None, by: float) -> bool:
    return now is not None and then is not None and then > 0 and now >= then * (1 + by)


def _disk(now: float | None, then: float | None) -> bool:
    if now is None or then is None:
        return False
    return now >= DISK_RISE * then and now - then >= DISK_FLOOR_BPS


def _hotter(rung: RungSignals, base: RungSignals) -> bool:
    if rung is base:  # the first rung: hot from the start is worth saying
        return bool(rung.thermal_level) or (rung.speed_limit_pct or 100) < 100
    level = (rung.thermal_level or 0) > (base.thermal_level or 0)
    limit = (rung.speed_limit_pct or 100) < (base.speed_limit_pct or 100)
    return level or limit


def _saturated(now: float | None, then: float | None) -> bool:
    return now is not None and now >= CPU_SATURATED_PCT and (then or 0.0) < CPU_SATURATED_PCT


def _saturated_clusters(rung: RungSignals, base: RungSignals) -> list[str]:
    before = dict(base.cluster_busy_pct) if rung is not base else {}
    return [name for name, busy in rung.cluster_busy_pct if _saturated(busy, before.get(name))]
