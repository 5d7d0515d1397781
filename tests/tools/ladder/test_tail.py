"""Which host signals moved with a rung's tail, and the verdict the report prints."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from gateway.tools.ladder.tail import RungSignals, read_tail, read_tails

GIB = 1 << 30
BASE = RungSignals(
    concurrency=1,
    p95_ttft_s=0.10,
    p99_ttft_s=0.11,
    error_rate=0.0,
    swap_growth_bytes=0,
    pressure="normal",
    min_available_bytes=8 * GIB,
    peak_rss_bytes=2 * GIB,
    disk_read_bps=1e6,
    disk_write_bps=1e6,
    cpu_busy_pct=30.0,
    cluster_busy_pct=(("Efficiency", 20.0), ("Performance", 35.0)),
    thermal_level=0,
    speed_limit_pct=100,
)


def rung(**changes: object) -> RungSignals:
    return dataclasses.replace(BASE, concurrency=8, **changes)  # type: ignore[arg-type]


def test_swap_in_and_disk_reads_with_a_slower_tail_read_as_memory() -> None:
    reading = read_tail(
        rung(p99_ttft_s=0.40, swap_growth_bytes=GIB, disk_read_bps=80e6, pressure="warn"), BASE
    )
    assert reading.verdict == "memory"
    assert reading.rose == ("p99 3.6x",)
    assert reading.line == (
        "p99 3.6x rose with swap-in and memory pressure and disk reads: suspect memory"
    )


def test_a_thermal_warning_names_its_level() -> None:
    reading = read_tail(rung(p95_ttft_s=0.2, thermal_level=2), BASE)
    assert reading.verdict == "thermal"
    assert reading.line.endswith("suspect thermal throttling (thermal warning level 2)")
    limited = read_tail(rung(p95_ttft_s=0.2, speed_limit_pct=62), BASE)
    assert "CPU speed limited to 62%" in limited.line


def test_efficiency_cores_pinned_read_as_cpu_and_name_the_cluster() -> None:
    reading = read_tail(
        rung(p99_ttft_s=0.3, cluster_busy_pct=(("Efficiency", 98.0), ("Performance", 40.0))), BASE
    )
    assert reading.verdict == "cpu"
    assert "Efficiency cores saturated" in reading.line and "Performance" not in reading.line


def test_errors_without_a_slower_tail_point_away_from_the_host() -> None:
    reading = read_tail(rung(error_rate=0.2), BASE)
    assert reading.verdict == "errors" and not reading.rose
    assert "timeouts or a proxy" in reading.line


def test_a_tail_that_rose_with_nothing_moving_is_the_servers_queue() -> None:
    reading = read_tail(rung(p95_ttft_s=0.5, p99_ttft_s=0.6), BASE)
    assert reading.verdict == "queueing" and reading.moved == ()


def test_disk_alone_and_one_memory_signal_alone() -> None:
    assert read_tail(rung(p95_ttft_s=0.2, disk_write_bps=50e6), BASE).verdict == "disk"
    # Available memory dropping alone is not enough to blame memory.
    only = read_tail(rung(p95_ttft_s=0.2, min_available_bytes=4 * GIB), BASE)
    assert only.verdict == "queueing" and only.moved == ("available memory",)


def test_the_first_rung_is_the_baseline_and_is_steady_unless_already_hot() -> None:
    first, later = read_tails([BASE, rung()])
    assert (first.verdict, later.verdict) == ("steady", "steady")
    assert (first.line, later.line) == ("baseline", "tail steady")
    busy = dataclasses.replace(BASE, cpu_busy_pct=100.0)
    assert read_tails([busy])[0].line == "baseline (already: CPU saturated)"
    hot = dataclasses.replace(BASE, speed_limit_pct=70)
    assert read_tails([hot])[0].verdict == "thermal"


def test_unmeasured_signals_never_move() -> None:
    blank = RungSignals(4, 0.5, 0.5, 0.0, None, None, None, None, None, None, None)
    reading = read_tail(blank, BASE)
    assert reading.moved == () and reading.verdict == "queueing"


@given(
    st.floats(0.001, 10),
    st.floats(0.001, 10),
    st.floats(0, 1),
    st.one_of(st.none(), st.integers(0, 64 * GIB)),
    st.one_of(st.none(), st.floats(0, 100)),
)
def test_every_reading_names_one_verdict(
    p95: float, p99: float, errors: float, swap: int | None, busy: float | None
) -> None:
    reading = read_tail(
        rung(p95_ttft_s=p95, p99_ttft_s=p99, error_rate=errors, swap_growth_bytes=swap,
             cpu_busy_pct=busy),
        BASE,
    )  # fmt: skip
    assert reading.verdict in {"memory", "thermal", "cpu", "disk", "errors", "queueing", "steady"}
    assert reading.line
    if reading.verdict == "steady":
        assert not reading.rose and errors <= 0.01
