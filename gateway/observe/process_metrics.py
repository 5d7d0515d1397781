"""`process_*` metrics read with psutil, so macOS (the target) has them as Linux does.

prometheus_client's `ProcessCollector` reads /proc, which macOS has not: there it yields
nothing, and RSS, a headline figure for a gateway on a 16 GB Mac, went missing. This collector
yields the same standard names (so existing dashboards work) from psutil, on every platform
psutil supports: resident and virtual memory, CPU seconds, open file descriptors, threads and
start time. Read at scrape time only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class PsutilProcessCollector(Collector):
    """The standard process metrics of one process (this one by default)."""

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid or os.getpid())

    def collect(self) -> Iterator[Metric]:
        process = self._process
        with process.oneshot():
            memory = process.memory_info()
            cpu = process.cpu_times()
            yield GaugeMetricFamily(
                "process_resident_memory_bytes", "Resident memory size in bytes.", value=memory.rss
            )
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=memory.vms
            )
            yield CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=cpu.user + cpu.system,
            )
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=process.create_time(),
            )
            yield GaugeMetricFamily(
                "process_threads",
                "Number of OS threads in the process.",
                value=process.num_threads(),
            )
            if hasattr(process, "num_fds"):  # POSIX only (macOS and Linux both have it)
                yield GaugeMetricFamily(
                    "process_open_fds", "Number of open file descriptors.", value=process.num_fds()
                )
