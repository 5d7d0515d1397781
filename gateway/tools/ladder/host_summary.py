"""One host sample on the ladder's clock, and what a rung's samples add up to.

Owns `SignalRow` (one line of signals.csv), `ProcessUse` (what one process used between two
samples) and `summarise_host`: the peaks, means and top processes over a rung's samples, which
the report prints and `tail` reads. Pure: rows in, figures out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

TOP = 3  # processes named per rung, by CPU and by disk


@dataclass(frozen=True, slots=True)
class ProcessUse:
    """What one process used since the previous sample."""

    pid: int
    name: str
    cpu_s: float  # CPU seconds (all cores)
    disk_bytes: int | None  # read + written; None where the OS does not say (macOS)


@dataclass(frozen=True, slots=True)
class SignalRow:
    """One sample; None means "not measured", never zero."""

    t_s: float  # seconds since the ladder started
    swap_used_bytes: int | None
    swap_total_bytes: int | None
    pressure: str
    memory_available_bytes: int | None
    rss_bytes: int | None  # of the watched process(es); None when none is watched or found
    processes: int  # how many processes the RSS sums
    cpu_busy_pct: float | None = None  # all cores, since the previous sample
    cpu_clusters: str = ""  # Apple Silicon: "Efficiency=12.0 Performance=80.5"
    cpu_cores: str = ""  # every core's busy %, in the OS's order: "12.0;80.5;..."
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    thermal: str = ""  # "nominal", "warning 2", "speed 62%", "71.0 C", "unknown"
    thermal_level: int | None = None  # 0 nominal, higher hotter
    cpu_speed_limit_pct: int | None = None  # macOS CPU_Speed_Limit
    temp_max_c: float | None = None  # Linux: the hottest thermal zone
    cpufreq_pct: int | None = None  # Linux: the lowest core's current/maximum frequency
    # Not a CSV column: the top processes of this sample, kept for the rung's summary.
    top: tuple[ProcessUse, ...] = field(default=(), compare=False)


CSV_EXCLUDED = ("top",)


@dataclass(frozen=True, slots=True)
class TopProcess:
    name: str
    pid: int
    cpu_pct: float  # percent of one core, averaged over the rung
    disk_bytes: int | None


@dataclass(frozen=True, slots=True)
class HostSummary:
    samples: int
    cpu_busy_max_pct: float | None
    cpu_busy_mean_pct: float | None
    clusters_max_pct: tuple[tuple[str, float], ...]
    disk_read_bps: float | None  # mean
    disk_write_bps: float | None
    thermal_level: int | None  # the highest
    speed_limit_pct: int | None  # the lowest
    temp_max_c: float | None  # the highest
    cpufreq_min_pct: int | None  # the lowest
    pressure: str | None  # the worst
    min_available_bytes: int | None
    top_cpu: tuple[TopProcess, ...]
    top_disk: tuple[TopProcess, ...]  # empty where the OS reports no per-process I/O


_PRESSURES = ("normal", "warn", "critical")


def summarise_host(rows: Sequence[SignalRow], seconds: float) -> HostSummary:
    """The rung's samples in one line: peaks where a peak hurts, means for rates."""
    busy = [r.cpu_busy_pct for r in rows if r.cpu_busy_pct is not None]
    levels = [r.thermal_level for r in rows if r.thermal_level is not None]
    limits = [r.cpu_speed_limit_pct for r in rows if r.cpu_speed_limit_pct is not None]
    temps = [r.temp_max_c for r in rows if r.temp_max_c is not None]
    freqs = [r.cpufreq_pct for r in rows if r.cpufreq_pct is not None]
    pressures = [p for p in (r.pressure for r in rows) if p in _PRESSURES]
    available = [r.memory_available_bytes for r in rows if r.memory_available_bytes is not None]
    top_cpu, top_disk = top_processes(rows, seconds)
    return HostSummary(
        samples=len(rows),
        cpu_busy_max_pct=max(busy) if busy else None,
        cpu_busy_mean_pct=round(sum(busy) / len(busy), 1) if busy else None,
        clusters_max_pct=_cluster_peaks(rows),
        disk_read_bps=_mean([r.disk_read_bps for r in rows]),
        disk_write_bps=_mean([r.disk_write_bps for r in rows]),
        thermal_level=max(levels) if levels else None,
        speed_limit_pct=min(limits) if limits else None,
        temp_max_c=max(temps) if temps else None,
        cpufreq_min_pct=min(freqs) if freqs else None,
        pressure=max(pressures, key=_PRESSURES.index) if pressures else None,
        min_available_bytes=min(available) if available else None,
        top_cpu=top_cpu,
        top_disk=top_disk,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def parse_clusters(text: str) -> dict[str, float]:
    """`"Efficiency=12.0 Performance=80.5"` → {name: percent}; bad parts are skipped."""
    found = {}
    for part in text.split():
        name, sep, value = part.partition("=")
        try:
            found[name] = float(value) if sep and name else float("nan")
        except ValueError:
            continue
    return {k: v for k, v in found.items() if v == v}  # drop NaN


def format_clusters(busy: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.1f}" for name, value in busy.items())


def _cluster_peaks(rows: Sequence[SignalRow]) -> tuple[tuple[str, float], ...]:
    peaks: dict[str, float] = {}
    for row in rows:
        for name, value in parse_clusters(row.cpu_clusters).items():
            peaks[name] = max(value, peaks.get(name, value))
    return tuple(peaks.items())


def top_processes(
    rows: Sequence[SignalRow], seconds: float
) -> tuple[tuple[TopProcess, ...], tuple[TopProcess, ...]]:
    """The `TOP` processes by CPU and by disk over these samples (summed per pid)."""
    cpu: dict[tuple[int, str], float] = {}
    disk: dict[tuple[int, str], int] = {}
    for row in rows:
        for use in row.top:
            key = (use.pid, use.name)
            cpu[key] = cpu.get(key, 0.0) + use.cpu_s
            if use.disk_bytes is not None:
                disk[key] = disk.get(key, 0) + use.disk_bytes
    span = max(seconds, 1e-9)
    by_cpu = sorted(cpu.items(), key=lambda item: -item[1])[:TOP]
    by_disk = sorted(disk.items(), key=lambda item: -item[1])[:TOP]
    return (
        tuple(
            TopProcess(name, pid, round(100 * s / span, 1), disk.get((pid, name)))
            for (pid, name), s in by_cpu
            if s > 0
        ),
        tuple(
            TopProcess(name, pid, round(100 * cpu.get((pid, name), 0.0) / span, 1), b)
            for (pid, name), b in by_disk
            if b > 0
        ),
    )
