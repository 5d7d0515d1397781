"""The ladder's host parsers against recorded macOS outputs (tests/data/host, see SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.tools.ladder.host_formats import (
    Cluster,
    busy_pct,
    cluster_busy,
    cluster_ranges,
    parse_iostat,
    parse_khz,
    parse_millidegrees,
    parse_perflevels,
    parse_pmset_therm,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "host"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def test_an_idle_apple_silicon_mac_records_no_warning_and_no_cpu_status() -> None:
    thermal = parse_pmset_therm(recorded("pmset_therm_apple_silicon_stats749.txt"))
    assert (thermal.warning_level, thermal.performance_level) == (0, 0)
    assert thermal.speed_limit_pct is None and not thermal.throttled
    assert thermal.text() == "nominal"


def test_an_intel_mac_at_full_speed() -> None:
    thermal = parse_pmset_therm(recorded("pmset_therm_intel_node_exporter2031.txt"))
    assert (thermal.speed_limit_pct, thermal.scheduler_limit_pct) == (100, 100)
    assert thermal.available_cpus == 12 and not thermal.throttled
    assert thermal.text() == "nominal"


def test_a_throttled_thermlog_entry() -> None:
    thermal = parse_pmset_therm(recorded("pmset_thermlog_throttled_menumeters158.txt"))
    assert (thermal.speed_limit_pct, thermal.scheduler_limit_pct) == (28, 40)
    assert thermal.warning_level is None  # thermlog's entry said nothing about levels
    assert thermal.throttled and thermal.text() == "speed 28%"


def test_a_recorded_thermal_warning_level() -> None:
    thermal = parse_pmset_therm(recorded("pmset_therm_warning_level_pmset_c.txt"))
    assert (thermal.warning_level, thermal.performance_level) == (2, 0)
    assert thermal.speed_limit_pct == 62
    assert thermal.text() == "warning 2, speed 62%"


def test_the_last_thermlog_entry_wins() -> None:
    log = recorded("pmset_thermlog_throttled_menumeters158.txt") + recorded(
        "pmset_therm_intel_node_exporter2031.txt"
    )
    assert parse_pmset_therm(log).speed_limit_pct == 100


def test_perflevels_from_sysctl_a_lines_and_named_levels() -> None:
    unnamed = parse_perflevels(recorded("sysctl_a_perflevel_m1pro_cpufetch139.txt"))
    assert unnamed == (Cluster(0, "perflevel0", 8), Cluster(1, "perflevel1", 2))
    named = parse_perflevels(recorded("sysctl_perflevel_names_m1pro.txt"))
    assert [(c.name, c.logical_cpus) for c in named] == [("Performance", 8), ("Efficiency", 2)]
    assert parse_perflevels("sysctl: unknown oid 'hw.perflevel0.logicalcpu'") == ()


def test_clusters_map_onto_cpu_indices_efficiency_cores_first() -> None:
    clusters = parse_perflevels(recorded("sysctl_perflevel_names_m1pro.txt"))
    ranges = cluster_ranges(clusters, 10)
    assert ranges == {"Efficiency": range(0, 2), "Performance": range(2, 10)}
    per_cpu = [100.0, 90.0] + [10.0] * 8
    assert cluster_busy(per_cpu, ranges) == {"Efficiency": 95.0, "Performance": 10.0}
    # Counts that do not add up, or three kinds of core: no guess.
    assert cluster_ranges(clusters, 12) is None
    assert cluster_ranges((*clusters, Cluster(2, "Other", 2)), 12) is None


def test_iostat_reads_the_last_report() -> None:
    (rate,) = parse_iostat(recorded("iostat_disk0_copy_eperitus.txt"))
    assert (rate.disk, rate.mb_per_s) == ("disk0", 156.26)
    two = (
        "  disk0   disk4\n KB/t tps MB/s KB/t tps MB/s\n"
        " 1.0 2 0.50 4.0 5 1.25\n 9.0 1 0.25 8.0 3 2.00\n"
    )
    assert [(r.disk, r.mb_per_s) for r in parse_iostat(two)] == [("disk0", 0.25), ("disk4", 2.0)]


def test_linux_thermal_zone_and_cpufreq_files() -> None:
    assert parse_millidegrees("45000\n") == 45.0
    assert parse_millidegrees("-274000") is None  # below absolute zero: not wired up
    assert parse_millidegrees("n/a") is None
    assert parse_khz("2400000\n") == 2400 and parse_khz("") is None


def test_busy_percent_clamps_a_counter_that_steps_back() -> None:
    before = {"user": 10.0, "system": 5.0, "idle": 80.0, "iowait": 5.0, "guest": 3.0}
    after = {"user": 19.0, "system": 6.0, "idle": 80.0, "iowait": 4.0, "guest": 9.0}
    # iowait went back by 1 s: a saturated core, not "0% busy"; guest is inside user already.
    assert busy_pct(before, after) == 100.0
    after_idle = {**after, "idle": 90.0}
    assert busy_pct(before, after_idle) == 50.0
    assert busy_pct(before, before) is None  # no time passed


@given(
    st.dictionaries(
        st.sampled_from(["user", "system", "idle", "iowait", "irq"]), st.floats(0, 1e6)
    ),
    st.dictionaries(
        st.sampled_from(["user", "system", "idle", "iowait", "irq"]), st.floats(0, 1e6)
    ),
)
def test_busy_percent_is_a_percent_or_none(
    before: dict[str, float], after: dict[str, float]
) -> None:
    busy = busy_pct(before, after)
    assert busy is None or 0.0 <= busy <= 100.0


@example("hw.perflevel0.logicalcpu: ²\n²")  # a digit to str.isdigit, not to int()
@given(st.text(max_size=400))
def test_every_parser_is_total(text: str) -> None:
    parse_pmset_therm(text).text()
    parse_perflevels(text)
    parse_iostat(text)
    parse_millidegrees(text)
    parse_khz(text)
