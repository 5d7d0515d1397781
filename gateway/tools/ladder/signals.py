"""Host signals sampled beside the load, on the requests' clock: memory, a process's RSS, and
the CPU, disk, thermal and process readings of `host_probe`.

Owns the sampling loop and finding the watched process(es): `--watch-pid` (one process) or
`--watch-name` (every process whose name or command line's first word matches, summed: Ollama
runs its models in `ollama runner` children of `ollama serve`). Swap and pressure come from
`offload.signals.default_source()` (sysctl on macOS, /proc on Linux). A reading that fails
is recorded as empty, never fatal: the ladder's requests matter more than one sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence

import psutil

from gateway.offload.signals import SignalSource, default_source
from gateway.ops.periodic import Periodic
from gateway.tools.ladder.host_probe import HostProbe
from gateway.tools.ladder.host_summary import SignalRow

__all__ = ["ProcessWatch", "SignalRecorder", "SignalRow", "peak_rss", "swap_growth", "window"]


class ProcessWatch:
    """The RSS of a pid, or of every process matching a name, summed."""

    def __init__(self, pid: int | None = None, name: str | None = None) -> None:
        self.pid = pid
        self.name = name

    @property
    def active(self) -> bool:
        return self.pid is not None or bool(self.name)

    def rss(self) -> tuple[int | None, int]:
        procs = self._processes()
        total = 0
        counted = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                counted += 1
        return (total if counted else None), counted

    def _processes(self) -> list[psutil.Process]:
        if self.pid is not None:
            with contextlib.suppress(psutil.Error):
                return [psutil.Process(self.pid)]
            return []
        if not self.name:
            return []
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.pid != os.getpid() and _matches(self.name, proc.info):
                found.append(proc)
        return found


def _matches(name: str, info: dict[str, object]) -> bool:
    if info.get("name") == name:
        return True
    cmdline = info.get("cmdline")
    first = cmdline[0] if isinstance(cmdline, list) and cmdline else ""
    return isinstance(first, str) and os.path.basename(first) == name


class SignalRecorder:
    """Samples every `interval_s` until stopped; `rows` holds every sample taken."""

    def __init__(
        self,
        now: Callable[[], float],
        *,
        watch: ProcessWatch | None = None,
        source: SignalSource | None = None,
        probe: HostProbe | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.now = now
        self.watch = watch or ProcessWatch()
        self.source = source or default_source()
        self.probe = probe or HostProbe()
        self.interval_s = interval_s
        self.rows: list[SignalRow] = []
        self.error: str | None = None
        self.failures = 0  # samples that raised: skipped, the sampling goes on
        self.failure: str | None = None  # the last one's error
        self._periodic = Periodic(self._step, interval_s)

    async def sample(self) -> SignalRow:
        t = self.now()
        try:
            signals = await asyncio.wait_for(self.source.read(), 5.0)
            self.error = self.source.last_error
        except TimeoutError:
            signals, self.error = None, "host signals timed out"
        rss, count = await asyncio.to_thread(self.watch.rss) if self.watch.active else (None, 0)
        host = await self.probe.read()
        row = SignalRow(
            t_s=t,
            swap_used_bytes=signals.swap_used_bytes if signals else None,
            swap_total_bytes=signals.swap_total_bytes if signals else None,
            pressure=signals.pressure.value if signals else "unknown",
            memory_available_bytes=signals.memory_available_bytes if signals else None,
            rss_bytes=rss,
            processes=count,
            cpu_busy_pct=host.cpu_busy_pct,
            cpu_clusters=host.cpu_clusters,
            cpu_cores=host.cpu_cores,
            disk_read_bps=host.disk_read_bps,
            disk_write_bps=host.disk_write_bps,
            thermal=host.heat.text,
            thermal_level=host.heat.level,
            cpu_speed_limit_pct=host.heat.speed_limit_pct,
            temp_max_c=host.heat.temp_max_c,
            cpufreq_pct=host.heat.cpufreq_pct,
            top=host.top,
        )
        self.rows.append(row)
        return row

    async def start(self) -> None:
        await self.probe.start()
        await self.sample()
        self._periodic.start()

    async def _step(self) -> None:
        try:
            await self.sample()
        except Exception as exc:  # noqa: BLE001 - one bad sample never ends the sampling
            self.failures += 1
            self.failure = f"{type(exc).__name__}: {exc}"[:300]

    async def stop(self) -> None:
        await self._periodic.stop()
        with contextlib.suppress(Exception):
            await self.source.aclose()


def window(rows: Sequence[SignalRow], start_s: float, end_s: float) -> list[SignalRow]:
    """The samples taken while a rung ran."""
    return [row for row in rows if start_s <= row.t_s <= end_s]


def peak_rss(rows: Sequence[SignalRow]) -> int | None:
    known = [row.rss_bytes for row in rows if row.rss_bytes is not None]
    return max(known) if known else None


def swap_growth(rows: Sequence[SignalRow], baseline: int | None) -> int | None:
    """Peak swap used in `rows` minus the ladder's starting swap."""
    known = [row.swap_used_bytes for row in rows if row.swap_used_bytes is not None]
    if not known or baseline is None:
        return None
    return max(known) - baseline
