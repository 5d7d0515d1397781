"""The host probe on this machine (psutil, /sys) and on a Mac (recorded sysctl and pmset)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest

from gateway.tools.ladder.host_probe import PMSET_THERM, SYSCTL_HW, HostProbe, HostReading
from gateway.tools.ladder.signals import SignalRecorder

DATA = Path(__file__).resolve().parents[2] / "data" / "host"


def fake_sys(root: Path, temps: dict[str, str], freqs: dict[int, tuple[str, str]]) -> Path:
    for zone, temp in temps.items():
        (root / "class" / "thermal" / zone).mkdir(parents=True)
        (root / "class" / "thermal" / zone / "temp").write_text(temp)
    for cpu, (cur, top) in freqs.items():
        freq = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_cur_freq").write_text(cur)
        (freq / "scaling_max_freq").write_text(top)
    return root


async def test_linux_reads_cores_disk_zones_cpufreq_and_the_busiest_processes(
    tmp_path: Path,
) -> None:
    root = fake_sys(
        tmp_path,
        {"thermal_zone0": "45000\n", "thermal_zone1": "71500\n", "thermal_zone2": "garbage"},
        {0: ("1200000\n", "2400000\n"), 1: ("2400000\n", "2400000\n")},
    )
    probe = HostProbe(platform="linux", sys_root=root)
    await probe.start()
    burner = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        await probe.read()  # the burner is known from here on
        await asyncio.sleep(0.5)  # let it burn: a busy-looping process tops any CPU list
        reading = await probe.read()
    finally:
        burner.kill()
        await burner.wait()
    cores = reading.cpu_cores.split(";")
    assert len(cores) == psutil.cpu_count() and all(0 <= float(c) <= 100 for c in cores)
    assert reading.cpu_busy_pct is not None and reading.cpu_clusters == ""  # no clusters here
    assert reading.heat.text == "71.5 C" and reading.heat.temp_max_c == 71.5
    assert reading.heat.cpufreq_pct == 50  # cpu0 at half its maximum frequency
    assert reading.heat.speed_limit_pct is None  # a Mac's limit, not a frequency
    assert reading.disk_read_bps is not None and reading.disk_read_bps >= 0
    (mine,) = [use for use in reading.top if use.pid == burner.pid]
    assert not mine.name.endswith("(this ladder)")
    assert mine.cpu_s > 0 and mine.disk_bytes is not None  # Linux reports process I/O
    assert probe.errors == {}


async def test_no_thermal_zones_says_not_present(tmp_path: Path) -> None:
    probe = HostProbe(platform="linux", sys_root=tmp_path)
    await probe.start()
    reading = await probe.read()
    assert (reading.heat.text, reading.heat.cpufreq_pct) == ("not present", None)


class MacCpuTimes(NamedTuple):
    """psutil's scputimes on macOS: these four fields only."""

    user: float
    nice: float
    system: float
    idle: float


def cpu_times(busy: list[float] | None) -> list[MacCpuTimes]:
    """Counters after 100 s at these busy percentages (all zero at the start: busy=None)."""
    if busy is None:
        return [MacCpuTimes(0.0, 0.0, 0.0, 0.0)] * 10
    return [MacCpuTimes(user=b, nice=0.0, system=0.0, idle=100.0 - b) for b in busy]


def mac_runner(therm: str, topology: str) -> tuple[list[tuple[str, ...]], object]:
    calls: list[tuple[str, ...]] = []

    async def run(argv: Sequence[str]) -> str:
        calls.append(tuple(argv))
        if tuple(argv) == SYSCTL_HW:
            return (DATA / topology).read_text()
        if tuple(argv) == PMSET_THERM:
            return (DATA / therm).read_text()
        raise AssertionError(f"unexpected command {argv}")

    return calls, run


@pytest.mark.parametrize(
    ("therm", "text", "level", "limit"),
    [
        ("pmset_therm_apple_silicon_stats749.txt", "nominal", 0, None),
        ("pmset_therm_warning_level_pmset_c.txt", "warning 2, speed 62%", 2, 62),
        ("pmset_thermlog_throttled_menumeters158.txt", "speed 28%", 1, 28),
    ],
)
async def test_a_mac_reads_pmset_and_splits_cores_into_clusters(
    therm: str, text: str, level: int, limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, run = mac_runner(therm, "sysctl_perflevel_names_m1pro.txt")
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 10)
    # Efficiency cores first, as a Mac numbers them: busy 100% and 80%, the rest 10%.
    busy = [100.0, 80.0] + [10.0] * 8
    reads = iter([None, busy])
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: cpu_times(next(reads)))
    probe = HostProbe(runner=run, platform="darwin")  # type: ignore[arg-type]
    await probe.start()
    reading = await probe.read()
    assert [c.name for c in probe.clusters] == ["Performance", "Efficiency"]
    assert reading.cpu_clusters == "Efficiency=90.0 Performance=10.0"
    heat = reading.heat
    assert (heat.text, heat.level, heat.speed_limit_pct) == (text, level, limit)
    assert calls.count(SYSCTL_HW) == 1  # the topology is read once, pmset at every sample


async def test_a_read_within_one_clock_tick_waits_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two reads inside one tick of the kernel's CPU clock have no figure to give; the one
    after covers the whole span since the last figure, not just the time since the blank."""
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 10)
    # Within the tick only core 0's counter moved (10 s busy); then all are at 50 s of 100.
    ticked = [MacCpuTimes(10.0, 0.0, 0.0, 0.0), *cpu_times(None)[1:]]
    reads = iter([cpu_times(None), ticked, cpu_times([50.0] * 10)])
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: next(reads))
    probe = HostProbe(platform="linux")
    await probe.start()
    blank = await probe.read()  # no counter moved since start
    assert blank.cpu_busy_pct is None and blank.cpu_cores == ""
    after = await probe.read()
    # Core 0 over the whole span: 50 of 100 s (from the blank read on: 40 of 90 s, 44.4%).
    assert after.cpu_busy_pct == 50.0 and after.cpu_cores == ";".join(["50.0"] * 10)


async def test_a_failing_command_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(argv: Sequence[str]) -> str:
        raise OSError("no such file: pmset")

    probe = HostProbe(runner=broken, platform="darwin")
    await probe.start()
    reading = await probe.read()
    assert reading.heat.text == "unknown" and reading.heat.level is None
    assert "no such file" in probe.errors["thermal"] and "topology" in probe.errors


async def test_a_sample_that_raises_is_counted_and_sampling_goes_on(tmp_path: Path) -> None:
    fourth = asyncio.Event()

    class Flaky(HostProbe):
        calls = 0

        async def read(self) -> HostReading:
            self.calls += 1
            if self.calls == 4:
                fourth.set()
            if self.calls == 2:
                raise ValueError("odd output")
            return await super().read()

    clock = iter(float(i) for i in range(1000))
    probe = Flaky(platform="linux", sys_root=tmp_path)
    recorder = SignalRecorder(lambda: next(clock), probe=probe, interval_s=0.01)
    await recorder.start()
    await asyncio.wait_for(fourth.wait(), 30)
    await recorder.stop()
    assert (recorder.failures, recorder.failure) == (1, "ValueError: odd output")
    # Samples 1 and 3 were recorded before the 4th began (sampling is sequential).
    assert len(recorder.rows) >= 2
