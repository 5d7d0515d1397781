"""Host-signal parsers against recorded real outputs (tests/data/host, see SOURCES.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.offload.host_signals import (
    DEFAULT_PAGE_SIZE,
    HostSignals,
    Pressure,
    parse_meminfo,
    parse_pressure_level,
    parse_psi_memory,
    parse_simulator_signals,
    parse_swapusage,
    parse_vm_stat,
)
from tests.support.paths import DATA

HOST = DATA / "host"
MIB = 1 << 20
GIB = 1 << 30


def recorded(name: str) -> str:
    return (HOST / name).read_text()


# --- sysctl vm.swapusage -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "used", "total"),
    [
        ("swapusage_px_issue80.txt", int(2743.5 * MIB), 4096 * MIB),
        ("swapusage_decimal_comma_p9k_pr1108.txt", int(379.25 * MIB), 1024 * MIB),
        ("swapusage_no_encrypted.txt", 635_311_226, 2048 * MIB),
        ("swapusage_no_swapfile.txt", 0, 0),
        ("swapusage_large.txt", int(21626.25 * MIB), 22528 * MIB),
        ("sysctl_multi_loaded.txt", 12_190_419_517, 13312 * MIB),
        ("swapusage_gigabyte_units.txt", 512 * MIB, 2 * GIB),
    ],
)
def test_swapusage_recorded(name: str, used: int, total: int) -> None:
    assert parse_swapusage(recorded(name)) == (used, total)


def test_swapusage_sysctl_n_drops_the_name() -> None:
    line = recorded("swapusage_px_issue80.txt").split(": ", 1)[1]
    assert parse_swapusage(line) == (int(2743.5 * MIB), 4096 * MIB)


def test_swapusage_very_large_and_kilobytes() -> None:
    text = "total = 65536.00M  used = 65535.99M  free = 0.01M  (encrypted)"
    assert parse_swapusage(text) == (int(65535.99 * MIB), 64 * GIB)
    assert parse_swapusage("total = 2048.00K  used = 1.50K  free = 2046.50K") == (1536, 2 * MIB)


def test_swapusage_decimal_is_exact() -> None:
    # 11625.69 MiB is not representable in binary floating point; Decimal keeps it exact.
    assert parse_swapusage("total = 1.00M  used = 0.01M") == (10485, MIB)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vm.swapusage:",
        "total = 2048.00M",
        "used = 1.00M",
        "total = M used = M",
        "sysctl: unknown oid",
    ],
)
def test_swapusage_unparseable_is_none(text: str) -> None:
    assert parse_swapusage(text) is None


# --- kern.memorystatus_vm_pressure_level ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1\n", Pressure.NORMAL),
        ("2", Pressure.WARN),
        ("4\n", Pressure.CRITICAL),
        ("kern.memorystatus_vm_pressure_level: 4\n", Pressure.CRITICAL),
        ("0", Pressure.UNKNOWN),
        ("3", Pressure.UNKNOWN),
        ("", Pressure.UNKNOWN),
        ("sysctl: unknown oid 'kern.memorystatus_vm_pressure_level'", Pressure.UNKNOWN),
    ],
)
def test_pressure_level(text: str, expected: Pressure) -> None:
    assert parse_pressure_level(text) is expected


def test_pressure_level_in_multi_name_output_uses_the_last_value() -> None:
    assert parse_pressure_level("kern.memorystatus_vm_pressure_level: 2") is Pressure.WARN


# --- vm_stat ---------------------------------------------------------------------------------


def test_vm_stat_intel_4096() -> None:
    stats = parse_vm_stat(recorded("vm_stat_intel_4096_wazuh22113.txt"))
    assert stats["page_size_bytes"] == 4096
    assert stats["pages_free"] == 6127229 * 4096
    assert stats["pages_wired_down"] == 715958 * 4096
    assert stats["file_backed_pages"] == 1080348 * 4096
    assert stats["translation_faults"] == 11477162  # quoted label, an event count
    assert stats["pageins"] == 280307
    assert stats["swapins"] == 0
    assert stats["swapouts"] == 0
    assert len(stats) == 23


def test_vm_stat_apple_silicon_16384() -> None:
    stats = parse_vm_stat(recorded("vm_stat_apple_silicon_16384_sweepformac.txt"))
    assert stats["page_size_bytes"] == 16384
    assert stats["pages_free"] == 123456 * 16384
    assert stats["pages_occupied_by_compressor"] == 45678 * 16384
    assert stats["anonymous_pages"] == 678901 * 16384
    assert stats["compressions"] == 12345
    assert stats["swapins"] == 123
    assert stats["swapouts"] == 45


def test_vm_stat_without_header_assumes_4096() -> None:
    stats = parse_vm_stat("Pages free:   12345.\nSwapouts:  7.\n")
    assert stats == {
        "pages_free": 12345 * DEFAULT_PAGE_SIZE,
        "swapouts": 7,
        "page_size_bytes": 4096,
    }


def test_vm_stat_zero_page_size_falls_back() -> None:
    stats = parse_vm_stat("Mach Virtual Memory Statistics: (page size of 0 bytes)\nPages free: 2.")
    assert stats["pages_free"] == 2 * DEFAULT_PAGE_SIZE


@pytest.mark.parametrize("text", ["", "vm_stat: command not found", "Pages free: lots."])
def test_vm_stat_garbage_is_empty(text: str) -> None:
    assert parse_vm_stat(text) == {}


# --- /proc/meminfo ---------------------------------------------------------------------------


def test_meminfo_without_swap() -> None:
    signals = parse_meminfo(recorded("meminfo_no_swap_procfs_stats9.txt"))
    assert signals == HostSignals(
        swap_used_bytes=0,
        swap_total_bytes=0,
        pressure=Pressure.UNKNOWN,
        memory_total_bytes=1019732 * 1024,
        memory_available_bytes=710280 * 1024,
        source="meminfo",
    )


def test_meminfo_with_swap_single_spaced() -> None:
    signals = parse_meminfo(recorded("meminfo_with_swap_squeezed_rpicheck107.txt"))
    assert signals.swap_total_bytes == 102396 * 1024
    assert signals.swap_used_bytes == 4 * 1024
    assert signals.memory_available_bytes == 884628 * 1024


def test_meminfo_old_kernel_without_memavailable() -> None:
    signals = parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n")
    assert signals.memory_total_bytes == 2048 * 1024
    assert signals.memory_available_bytes is None
    assert signals.swap_total_bytes is None
    assert signals.swap_used_bytes is None


def test_meminfo_garbage() -> None:
    assert parse_meminfo("not meminfo") == HostSignals(
        None, None, Pressure.UNKNOWN, source="meminfo"
    )


# --- /proc/pressure/memory -------------------------------------------------------------------


def test_psi_heavy_stall_is_critical() -> None:
    assert parse_psi_memory(recorded("psi_memory_heavy_procfs40.txt")) is Pressure.CRITICAL


def test_psi_idle_is_normal() -> None:
    assert parse_psi_memory(recorded("psi_memory_idle_stub.txt")) is Pressure.NORMAL


def test_psi_some_only_file_below_threshold_is_normal() -> None:
    assert parse_psi_memory(recorded("psi_cpu_some_only_atop72.txt")) is Pressure.NORMAL


@pytest.mark.parametrize(
    ("some", "full", "expected"),
    [
        (9.99, 0.0, Pressure.NORMAL),
        (10.0, 0.0, Pressure.WARN),
        (45.0, 9.99, Pressure.WARN),
        (45.0, 10.0, Pressure.CRITICAL),
    ],
)
def test_psi_thresholds(some: float, full: float, expected: Pressure) -> None:
    text = (
        f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=1\n"
        f"full avg10={full:.2f} avg60=0.00 avg300=0.00 total=1\n"
    )
    assert parse_psi_memory(text) is expected


def test_psi_ignores_avg60_spikes() -> None:
    text = "some avg10=1.00 avg60=90.00 avg300=90.00 total=5\n"
    assert parse_psi_memory(text) is Pressure.NORMAL


@pytest.mark.parametrize("text", ["", "cat: /proc/pressure/memory: No such file", "some avg10=nan"])
def test_psi_garbage_is_unknown(text: str) -> None:
    assert parse_psi_memory(text) is Pressure.UNKNOWN


# --- live smoke checks on this Linux machine -------------------------------------------------


def test_live_proc_meminfo() -> None:
    path = Path("/proc/meminfo")
    if not path.exists():
        pytest.skip("no /proc/meminfo on this host")
    signals = parse_meminfo(path.read_text())
    assert signals.memory_total_bytes is not None and signals.memory_total_bytes > 0
    assert signals.memory_available_bytes is not None
    assert 0 <= signals.memory_available_bytes <= signals.memory_total_bytes
    assert signals.swap_total_bytes is not None and signals.swap_used_bytes is not None
    assert 0 <= signals.swap_used_bytes <= signals.swap_total_bytes


def test_live_proc_pressure_memory() -> None:
    path = Path("/proc/pressure/memory")
    try:
        text = path.read_text()
    except OSError:
        pytest.skip("PSI not available on this kernel")
    assert parse_psi_memory(text) is not Pressure.UNKNOWN


# --- simulator / agent JSON ------------------------------------------------------------------


def test_simulator_signals_full_payload() -> None:
    payload = {
        "swap_used_bytes": 3 * GIB,
        "swap_total_bytes": 4 * GIB,
        "pressure_level": 2,
        "memory_used_bytes": 20 * GIB,
        "memory_total_bytes": 24 * GIB,
        "active": 1,
        "queued": 0,
    }
    assert parse_simulator_signals(payload) == HostSignals(
        swap_used_bytes=3 * GIB,
        swap_total_bytes=4 * GIB,
        pressure=Pressure.WARN,
        memory_total_bytes=24 * GIB,
        memory_available_bytes=4 * GIB,
        source="simulator",
    )


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (1, Pressure.NORMAL),
        (4, Pressure.CRITICAL),
        (3, Pressure.UNKNOWN),
        (True, Pressure.UNKNOWN),
        ("critical", Pressure.CRITICAL),
        ("WARN", Pressure.WARN),
        ("4", Pressure.CRITICAL),
        (None, Pressure.UNKNOWN),
        (2.0, Pressure.UNKNOWN),
    ],
)
def test_simulator_pressure_forms(level: object, expected: Pressure) -> None:
    assert parse_simulator_signals({"pressure_level": level}).pressure is expected


def test_simulator_agent_fields_and_bad_types() -> None:
    payload = {
        "swap_used_bytes": -1,
        "swap_total_bytes": "4096",
        "memory_total_bytes": 100,
        "memory_used_bytes": 150,
        "source": "agent:mini-2",
    }
    signals = parse_simulator_signals(payload)
    assert signals.swap_used_bytes is None
    assert signals.swap_total_bytes is None
    assert signals.memory_available_bytes == 0
    assert signals.source == "agent:mini-2"
    explicit = parse_simulator_signals({"memory_available_bytes": 7, "memory_used_bytes": 1})
    assert explicit.memory_available_bytes == 7


def test_simulator_not_a_mapping() -> None:
    bad: Any = ["not", "a", "dict"]
    assert parse_simulator_signals(bad).pressure is Pressure.UNKNOWN


# --- never crash on garbage ------------------------------------------------------------------

_LINES = st.sampled_from(
    [
        "vm.swapusage: total = ",
        "used = ",
        "page size of ",
        "Pages free: ",
        "some avg10=",
        "full avg10=",
        "SwapTotal: ",
        " kB",
        "M  ",
        ".",
        ",",
        "\n",
        ":",
        '"',
    ]
)
_TEXT = st.lists(st.one_of(st.text(max_size=12), _LINES, st.integers(0, 10**25).map(str))).map(
    "".join
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_KEYS = st.sampled_from(
    [
        "swap_used_bytes",
        "swap_total_bytes",
        "pressure_level",
        "memory_used_bytes",
        "memory_total_bytes",
        "memory_available_bytes",
        "source",
    ]
)


@given(_TEXT)
def test_text_parsers_never_raise(text: str) -> None:
    swap = parse_swapusage(text)
    assert swap is None or (swap[0] >= 0 and swap[1] >= 0)
    assert isinstance(parse_pressure_level(text), Pressure)
    assert all(value >= 0 for value in parse_vm_stat(text).values())
    assert isinstance(parse_meminfo(text), HostSignals)
    assert isinstance(parse_psi_memory(text), Pressure)


@given(st.dictionaries(_KEYS | st.text(max_size=8), _JSON))
def test_simulator_parser_never_raises(obj: dict[str, Any]) -> None:
    signals = parse_simulator_signals(obj)
    for value in (signals.swap_used_bytes, signals.swap_total_bytes, signals.memory_total_bytes):
        assert value is None or value >= 0
