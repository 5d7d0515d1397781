"""A rung's host samples in one line: peaks, means, the worst pressure, the top processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.tools.ladder.host_summary import (
    TOP,
    ProcessUse,
    SignalRow,
    summarise_host,
    top_processes,
)


def sample(t: float, **fields: object) -> SignalRow:
    base = SignalRow(t, 0, 0, "normal", 8 << 30, None, 0)
    return SignalRow(**{**{f: getattr(base, f) for f in base.__slots__}, **fields})  # type: ignore[arg-type]


def test_peaks_means_and_the_worst_of_each_signal() -> None:
    rows = [
        sample(0.0, cpu_busy_pct=20.0, disk_read_bps=1e6, pressure="normal", thermal_level=0,
               cpu_clusters="Efficiency=30.0 Performance=10.0", memory_available_bytes=8 << 30),
        sample(1.0, cpu_busy_pct=80.0, disk_read_bps=3e6, pressure="warn", thermal_level=2,
               cpu_speed_limit_pct=62, cpu_clusters="Efficiency=95.0 Performance=40.0",
               memory_available_bytes=6 << 30),
        sample(2.0, cpu_busy_pct=None, disk_read_bps=None, pressure="unknown"),
    ]  # fmt: skip
    host = summarise_host(rows, seconds=2.0)
    assert (host.samples, host.cpu_busy_max_pct, host.cpu_busy_mean_pct) == (3, 80.0, 50.0)
    assert host.disk_read_bps == 2e6 and host.disk_write_bps is None
    assert dict(host.clusters_max_pct) == {"Efficiency": 95.0, "Performance": 40.0}
    assert (host.pressure, host.thermal_level, host.speed_limit_pct) == ("warn", 2, 62)
    assert host.min_available_bytes == 6 << 30


def test_top_processes_sum_each_pid_over_the_rung() -> None:
    rows = [
        sample(0.0, top=(ProcessUse(10, "ollama", 1.0, None), ProcessUse(11, "mds", 0.5, 4096))),
        sample(1.0, top=(ProcessUse(10, "ollama", 1.0, None), ProcessUse(11, "mds", 0.0, 8192))),
    ]
    by_cpu, by_disk = top_processes(rows, seconds=2.0)
    assert [(p.name, p.cpu_pct) for p in by_cpu] == [("ollama", 100.0), ("mds", 25.0)]
    assert [(p.name, p.disk_bytes) for p in by_disk] == [("mds", 12288)]  # macOS: ollama unknown


uses = st.builds(
    ProcessUse,
    st.integers(1, 30),
    st.sampled_from(["a", "b", "c"]),
    st.floats(0, 5),
    st.one_of(st.none(), st.integers(0, 1 << 30)),
)


@given(st.lists(st.lists(uses, max_size=12), max_size=8), st.floats(0.1, 100))
def test_the_top_lists_are_short_sorted_and_positive(
    samples: list[list[ProcessUse]], seconds: float
) -> None:
    rows = [sample(float(i), top=tuple(top)) for i, top in enumerate(samples)]
    by_cpu, by_disk = top_processes(rows, seconds)
    assert len(by_cpu) <= TOP and len(by_disk) <= TOP
    assert [p.cpu_pct for p in by_cpu] == sorted((p.cpu_pct for p in by_cpu), reverse=True)
    assert all(p.cpu_pct >= 0 for p in by_cpu) and all((p.disk_bytes or 0) > 0 for p in by_disk)
