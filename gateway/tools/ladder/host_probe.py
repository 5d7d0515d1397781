"""Reads the host's CPU, disk, thermal state and busiest processes beside the ladder's load.

Owns the I/O behind the signals that explain a tail: psutil for CPU per core and disk bytes
(both OSes) and per-process CPU (and disk, where the OS reports it: not macOS), `sysctl hw`
once for Apple Silicon's core clusters, `pmset -g therm` (no root) for macOS's thermal state,
and on Linux `/sys/class/thermal` and cpufreq when present. Parsing lives in the pure
`host_formats`; summarising in `host_summary`.

A reading that fails is None with the error kept in `errors`, never fatal: the ladder's
requests matter more than one side signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from gateway.offload.signals import run_command
from gateway.tools.ladder.host_formats import (
    Cluster,
    Thermal,
    busy_pct,
    cluster_busy,
    cluster_ranges,
    parse_iostat,
    parse_khz,
    parse_millidegrees,
    parse_perflevels,
    parse_pmset_therm,
)
from gateway.tools.ladder.host_summary import ProcessUse, format_clusters

Runner = Callable[[Sequence[str]], Awaitable[str]]
SYSCTL_HW = ("/usr/sbin/sysctl", "hw")
PMSET_THERM = ("/usr/bin/pmset", "-g", "therm")
IOSTAT = ("/usr/sbin/iostat", "-d", "-c", "2", "-w", "1")
COMMAND_TIMEOUT_S = 3.0
KEEP_PROCESSES = 10  # per sample, by CPU and by disk: bounded whatever the host runs
MIB = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Heat:
    """One thermal reading: macOS's level and speed limit, or Linux's zones and cpufreq."""

    text: str
    level: int | None = None  # macOS: 0 nominal, higher hotter
    speed_limit_pct: int | None = None  # macOS CPU_Speed_Limit
    temp_max_c: float | None = None  # Linux: the hottest thermal zone
    cpufreq_pct: int | None = None  # Linux: the lowest core's current/maximum frequency


@dataclass(frozen=True, slots=True)
class HostReading:
    cpu_busy_pct: float | None
    cpu_clusters: str
    cpu_cores: str
    disk_read_bps: float | None
    disk_write_bps: float | None
    heat: Heat
    top: tuple[ProcessUse, ...]


class HostProbe:
    """Call `start` once, then `read` at each sample: each figure covers the time since the
    previous read (CPU percent, disk bytes per second, process CPU seconds)."""

    def __init__(
        self,
        *,
        runner: Runner = run_command,
        platform: str = sys.platform,
        sys_root: Path = Path("/sys"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.mac = platform == "darwin"
        self.sys_root = sys_root
        self.clock = clock
        self.clusters: tuple[Cluster, ...] = ()
        self.ranges: dict[str, range] | None = None
        self.errors: dict[str, str] = {}
        self._disk: tuple[float, int, int] | None = None
        self._cpu_times: list[dict[str, float]] = []
        self._own_pid = os.getpid()
        self._procs: dict[tuple[int, float], tuple[str, float, int | None]] = {}

    async def start(self) -> None:
        if self.mac:
            text = await self._run("topology", SYSCTL_HW)
            self.clusters = parse_perflevels(text or "")
        cpus = psutil.cpu_count() or 0
        self.ranges = cluster_ranges(self.clusters, cpus)
        await asyncio.to_thread(self._prime)

    def _prime(self) -> None:
        self._per_cpu()
        self._disk_rates()
        self._process_uses()

    async def read(self) -> HostReading:
        per_cpu, disk, top = await asyncio.to_thread(self._psutil_part)
        if disk is None and self.mac:
            disk = await self._iostat()
        heat = await self._thermal()
        read_bps, write_bps = disk if disk else (None, None)
        busy = round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else None
        clusters = (
            format_clusters(cluster_busy(per_cpu, self.ranges)) if per_cpu and self.ranges else ""
        )
        cores = ";".join(f"{v:.1f}" for v in per_cpu or ())
        return HostReading(busy, clusters, cores, read_bps, write_bps, heat, top)

    def _psutil_part(
        self,
    ) -> tuple[
        list[float] | None, tuple[float | None, float | None] | None, tuple[ProcessUse, ...]
    ]:
        per_cpu = _guarded(self.errors, "cpu", self._per_cpu)
        disk = _guarded(self.errors, "disk", self._disk_rates)
        top = _guarded(self.errors, "processes", self._process_uses) or ()
        return per_cpu, disk, top

    def _per_cpu(self) -> list[float] | None:
        """Busy % of each core since the last figure (None for the first call, or when a core's
        clock has not ticked since: the next call then covers the whole span)."""
        now = [times._asdict() for times in psutil.cpu_times(percpu=True)]
        before = self._cpu_times
        if len(before) != len(now):
            self._cpu_times = now
            return None
        busy = [busy_pct(b, a) for b, a in zip(before, now, strict=True)]
        if any(v is None for v in busy):
            return None
        self._cpu_times = now
        return [v for v in busy if v is not None]

    def _disk_rates(self) -> tuple[float | None, float | None] | None:
        counters = psutil.disk_io_counters()
        if counters is None:
            return None
        now = self.clock()
        previous, self._disk = self._disk, (now, counters.read_bytes, counters.write_bytes)
        if previous is None or now <= previous[0]:
            return (None, None)
        dt = now - previous[0]
        return (
            max(0, counters.read_bytes - previous[1]) / dt,
            max(0, counters.write_bytes - previous[2]) / dt,
        )

    def _process_uses(self) -> tuple[ProcessUse, ...]:
        """CPU seconds (and disk bytes) of every process since the last call; the top ones.
        The ladder's own process is named so, to be told from the server under test."""
        seen: dict[tuple[int, float], tuple[str, float, int | None]] = {}
        uses = []
        for proc in psutil.process_iter(["name", "create_time"]):
            with contextlib.suppress(psutil.Error):
                key = (proc.pid, proc.info["create_time"] or 0.0)
                times = proc.cpu_times()
                io = _io_bytes(proc)
                name = proc.info["name"] or "?"
                name += " (this ladder)" if proc.pid == self._own_pid else ""
                seen[key] = (name, times.user + times.system, io)
                before = self._procs.get(key)
                if before is not None:
                    disk = None if io is None or before[2] is None else max(0, io - before[2])
                    cpu = max(0.0, seen[key][1] - before[1])
                    uses.append(ProcessUse(proc.pid, seen[key][0], cpu, disk))
        self._procs = seen
        by_cpu = sorted(uses, key=lambda u: -u.cpu_s)[:KEEP_PROCESSES]
        by_disk = sorted(uses, key=lambda u: -(u.disk_bytes or 0))[:KEEP_PROCESSES]
        return tuple({id(u): u for u in by_cpu + by_disk}.values())

    async def _iostat(self) -> tuple[float | None, float | None] | None:
        """macOS without psutil disk counters: iostat's MB/s, reads and writes together (it
        does not split them), recorded as reads."""
        rates = parse_iostat(await self._run("disk", IOSTAT) or "")
        return (sum(r.mb_per_s for r in rates) * MIB, None) if rates else None

    async def _thermal(self) -> Heat:
        if self.mac:
            text = await self._run("thermal", PMSET_THERM)
            reading = parse_pmset_therm(text) if text is not None else None
            return _mac_thermal(reading)
        return await asyncio.to_thread(self._linux_thermal)

    def _linux_thermal(self) -> Heat:
        zones = sorted((self.sys_root / "class" / "thermal").glob("thermal_zone*/temp"))
        temps = [t for t in (parse_millidegrees(_read(p)) for p in zones) if t is not None]
        cpu_dir = self.sys_root / "devices" / "system" / "cpu"
        ratios = []
        for freq in sorted(cpu_dir.glob("cpu[0-9]*/cpufreq")):
            cur, top = (
                parse_khz(_read(freq / "scaling_cur_freq")),
                parse_khz(_read(freq / "scaling_max_freq")),
            )
            if cur is not None and top:
                ratios.append(round(100 * cur / top))
        hottest = max(temps) if temps else None
        text = "not present" if hottest is None else f"{hottest:.1f} C"
        return Heat(text, temp_max_c=hottest, cpufreq_pct=min(ratios) if ratios else None)

    async def _run(self, what: str, argv: Sequence[str]) -> str | None:
        try:
            text = await asyncio.wait_for(self.runner(argv), COMMAND_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a side signal never stops the ladder
            self.errors[what] = f"`{' '.join(argv)}`: {type(exc).__name__}: {exc}"[:200]
            return None
        self.errors.pop(what, None)
        return text


def _mac_thermal(reading: Thermal | None) -> Heat:
    """macOS tells no temperature without root (powermetrics): levels and limits only."""
    if reading is None:
        return Heat("unknown")
    levels = [v for v in (reading.warning_level, reading.performance_level) if v is not None]
    limited = reading.speed_limit_pct is not None and reading.speed_limit_pct < 100
    level = max(levels) if levels else (1 if limited else None)
    return Heat(reading.text(), level, reading.speed_limit_pct)


def _io_bytes(proc: psutil.Process) -> int | None:
    if not hasattr(proc, "io_counters"):  # macOS: psutil has no per-process I/O
        return None
    with contextlib.suppress(psutil.Error, OSError):
        io = proc.io_counters()
        return int(io.read_bytes + io.write_bytes)
    return None


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text()
    return ""


def _guarded(errors: dict[str, str], what: str, read: Callable[[], T]) -> T | None:
    try:
        value = read()
    except (psutil.Error, OSError, RuntimeError) as exc:
        errors[what] = f"{what}: {type(exc).__name__}: {exc}"[:200]
        return None
    errors.pop(what, None)
    return value
