"""Pure parsers of the host outputs the ladder samples beside its load: text in, values out.

Owns what `pmset -g therm` / `pmset -g thermlog`, `sysctl hw.perflevel*`, macOS `iostat` and
Linux's `/sys/class/thermal` and cpufreq files look like (recorded samples and where each
format comes from: tests/data/host/SOURCES.md). Must not run commands, read files or know the
time: `host_probe` does that and hands the text here.

Every parser is total: garbage yields None or an empty result, never an exception, because a
ladder must not lose its measurements to one odd line of a side signal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# `pmset -g therm` (pmset.c): "<date> Thermal Warning Level = N", and the CPU power status
# block "\tCPU_Speed_Limit \t= N". "set to N" is accepted too (the same level, other wording).
_LEVEL = re.compile(
    r"(Thermal|Performance) Warning Level\s*(?:=|:|set to)\s*([0-9]{1,3})\b", re.IGNORECASE
)
_CPU_KEY = re.compile(r"^\s*(CPU_[A-Za-z_]{1,40}?)\s*=\s*([0-9]{1,4})\s*$")
_NOT_RECORDED = re.compile(r"No (thermal|performance) warning level has been recorded", re.I)
_PERFLEVEL = re.compile(r"^hw\.perflevel([0-9]{1,2})\.(name|logicalcpu)\s*[:=]\s*(.{1,40}?)\s*$")
_NUMBER = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{1,6})?$")
# ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
_INTEGER = re.compile(r"^-?[0-9]{1,9}$")


@dataclass(frozen=True, slots=True)
class Thermal:
    """One reading of macOS's thermal state; None means "not reported", never "fine"."""

    warning_level: int | None  # pmset's thermal warning level; 0 when "none recorded"
    performance_level: int | None  # the performance warning level, likewise
    speed_limit_pct: int | None  # CPU_Speed_Limit: 100 = full speed, lower = throttled
    scheduler_limit_pct: int | None
    available_cpus: int | None

    @property
    def throttled(self) -> bool:
        limits = (self.speed_limit_pct, self.scheduler_limit_pct)
        return any(v is not None and v < 100 for v in limits) or bool(self.warning_level)

    def text(self) -> str:
        """A short label for signals.csv: "nominal", "warning 2", "speed 62%", "unknown"."""
        parts = []
        if self.warning_level:
            parts.append(f"warning {self.warning_level}")
        if self.performance_level:
            parts.append(f"performance warning {self.performance_level}")
        if self.speed_limit_pct is not None and self.speed_limit_pct < 100:
            parts.append(f"speed {self.speed_limit_pct}%")
        if parts:
            return ", ".join(parts)
        known = (self.warning_level, self.performance_level, self.speed_limit_pct)
        return "unknown" if all(v is None for v in known) else "nominal"


UNKNOWN_THERMAL = Thermal(None, None, None, None, None)


def parse_pmset_therm(text: str) -> Thermal:
    """Read `pmset -g therm` (or the latest entries of `pmset -g thermlog`).

    "No ... warning level has been recorded" means level 0 (nothing ever raised it, which is
    what an idle Apple Silicon Mac prints). With several entries (thermlog), the last wins.
    """
    levels: dict[str, int] = {}
    keys: dict[str, int] = {}
    for line in text.splitlines():
        note = _NOT_RECORDED.search(line)
        if note is not None:
            levels.setdefault(note.group(1).lower(), 0)
            continue
        level = _LEVEL.search(line)
        if level is not None:
            levels[level.group(1).lower()] = int(level.group(2))
            continue
        key = _CPU_KEY.match(line)
        if key is not None:
            keys[key.group(1)] = int(key.group(2))
    return Thermal(
        warning_level=levels.get("thermal"),
        performance_level=levels.get("performance"),
        speed_limit_pct=keys.get("CPU_Speed_Limit"),
        scheduler_limit_pct=keys.get("CPU_Scheduler_Limit"),
        available_cpus=keys.get("CPU_Available_CPUs"),
    )


@dataclass(frozen=True, slots=True)
class Cluster:
    """One kind of core: perflevel 0 is the fastest (Apple's numbering)."""

    level: int
    name: str
    logical_cpus: int


def parse_perflevels(text: str) -> tuple[Cluster, ...]:
    """Read `sysctl hw.perflevelN.name hw.perflevelN.logicalcpu ...` (or `sysctl -a` lines).

    Returns the clusters in perflevel order (0 first); a level without a logical CPU count is
    dropped; a level without a name is named "perflevelN". Intel Macs have no perflevels:
    empty.
    """
    names: dict[int, str] = {}
    counts: dict[int, int] = {}
    for line in text.splitlines():
        match = _PERFLEVEL.match(line.strip())
        if match is None:
            continue
        level, field, value = int(match.group(1)), match.group(2), match.group(3)
        if field == "name":
            names[level] = value
        elif _INTEGER.match(value) and int(value) > 0:
            counts[level] = int(value)
    return tuple(
        Cluster(level, names.get(level, f"perflevel{level}"), counts[level])
        for level in sorted(counts)
    )


def cluster_ranges(clusters: Sequence[Cluster], cpus: int) -> dict[str, range] | None:
    """Which per-CPU indices (psutil's percpu order) belong to which cluster.

    Known only for two-level chips whose counts add up to `cpus`: their efficiency cores come
    first in the kernel's numbering (cpu0-3 on an M1). Chips with three kinds of core number
    them otherwise (an M5 Pro's fastest come first), so those get None: no guess.
    """
    if len(clusters) != 2 or sum(c.logical_cpus for c in clusters) != cpus:
        return None
    fast, slow = clusters[0], clusters[1]
    return {
        slow.name: range(0, slow.logical_cpus),
        fast.name: range(slow.logical_cpus, cpus),
    }


def cluster_busy(per_cpu: Sequence[float], ranges: dict[str, range]) -> dict[str, float]:
    """Mean busy percent of each cluster's cores."""
    busy = {}
    for name, indices in ranges.items():
        values = [per_cpu[i] for i in indices if i < len(per_cpu)]
        if values:
            busy[name] = round(sum(values) / len(values), 1)
    return busy


@dataclass(frozen=True, slots=True)
class DiskRate:
    disk: str
    mb_per_s: float  # reads and writes together: macOS iostat does not split them


def parse_iostat(text: str) -> tuple[DiskRate, ...]:
    """The last report of macOS `iostat -d -w N -c 2 [disks]`: MB/s per disk.

    The first line names the devices (disk0, disk4, then "cpu" and "load average" when -d is
    not given); the second holds "KB/t tps MB/s" per disk. Each data row has three columns
    per disk first. The first report averages since boot, so the last one is the one to read.
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 3:
        return ()
    disks = [word for word in lines[0] if word.startswith("disk")]
    row = lines[-1]
    if not disks or not all(_NUMBER.match(cell) for cell in row[: 3 * len(disks)]):
        return ()
    if len(row) < 3 * len(disks):
        return ()
    return tuple(DiskRate(disk, float(row[3 * i + 2])) for i, disk in enumerate(disks))


def parse_millidegrees(text: str) -> float | None:
    """`/sys/class/thermal/thermal_zoneN/temp`: millidegrees Celsius → degrees."""
    value = text.strip()
    if not _INTEGER.match(value):
        return None
    celsius = int(value) / 1000
    return celsius if -60 <= celsius <= 200 else None  # outside: a sensor not wired up


def parse_khz(text: str) -> int | None:
    """A cpufreq file (`scaling_cur_freq`, `scaling_max_freq`): kHz → MHz."""
    value = text.strip()
    return int(value) // 1000 if _INTEGER.match(value) and not value.startswith("-") else None


_IDLE_FIELDS = ("idle", "iowait")
_GUEST_FIELDS = ("guest", "guest_nice")  # Linux counts them inside user and nice already


def busy_pct(before: Mapping[str, float], after: Mapping[str, float]) -> float | None:
    """One core's busy percent between two readings of its CPU times (psutil `cpu_times`).

    Each field's delta is clamped at zero: on some VMs a counter (iowait above all) steps
    backwards between reads, and a difference of totals then reads as 0% busy on a saturated
    host. None when no time passed (two reads within one clock tick)."""
    deltas = {
        name: max(0.0, after[name] - before[name])
        for name in after
        if name in before and name not in _GUEST_FIELDS
    }
    total = sum(deltas.values())
    if total <= 0:
        return None
    idle = sum(deltas.get(name, 0.0) for name in _IDLE_FIELDS)
    return round(100 * (total - idle) / total, 1)
