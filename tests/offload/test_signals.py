"""The host-signal shell: sources fed recorded outputs, real /proc, a real simulator, a sampler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.offload.host_signals import HostSignals, Pressure, parse_meminfo, parse_psi_memory
from gateway.offload.signals import (
    PRESSURE_ARGV,
    SWAPUSAGE_ARGV,
    HttpSource,
    LinuxSource,
    MacSource,
    SignalReadError,
    SignalSampler,
    UnsupportedSource,
    default_source,
    run_command,
)
from tests.conftest import DATA
from tests.support.clock import FakeClock
from tests.support.processes import free_port, start_simulator

HOST = DATA / "host"
MIB = 1 << 20


def recorded_runner(outputs: dict[tuple[str, ...], str]):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, ...]] = []

    async def runner(argv: Sequence[str]) -> str:
        calls.append(tuple(argv))
        return outputs[tuple(argv)]

    runner.calls = calls  # type: ignore[attr-defined]
    return runner


def proc_text(path: str) -> str | None:
    """A live /proc file's text (read synchronously: the tests compare against it)."""
    file = Path(path)
    return file.read_text() if file.exists() else None


def mac(swap_file: str, pressure: str) -> MacSource:
    swap = (HOST / swap_file).read_text()
    return MacSource(runner=recorded_runner({SWAPUSAGE_ARGV: swap, PRESSURE_ARGV: pressure}))


# --- MacSource, on recorded real outputs -------------------------------------------------


async def test_mac_normal_reading() -> None:
    source = mac("swapusage_px_issue80.txt", "1\n")
    signals = await source.read()
    assert signals.swap_total_bytes == 4096 * MIB
    assert signals.swap_used_bytes == int(2743.5 * MIB)
    assert signals.pressure is Pressure.NORMAL
    assert signals.source == "macos"
    assert source.last_error is None


async def test_mac_no_swapfile_yet_is_zero_not_unknown() -> None:
    source = mac("swapusage_no_swapfile.txt", "2\n")
    signals = await source.read()
    assert (signals.swap_used_bytes, signals.swap_total_bytes) == (0, 0)
    assert signals.pressure is Pressure.WARN
    assert source.last_error is None


async def test_mac_runs_the_documented_commands_only() -> None:
    runner = recorded_runner(
        {SWAPUSAGE_ARGV: (HOST / "swapusage_large.txt").read_text(), PRESSURE_ARGV: "4"}
    )
    signals = await MacSource(runner=runner).read()
    assert signals.pressure is Pressure.CRITICAL
    assert sorted(runner.calls) == sorted([SWAPUSAGE_ARGV, PRESSURE_ARGV])
    assert not any("memory_pressure" in " ".join(argv) for argv in runner.calls)


async def test_mac_garbage_is_unknown_with_error() -> None:
    source = MacSource(
        runner=recorded_runner({SWAPUSAGE_ARGV: "sysctl: unknown oid", PRESSURE_ARGV: "banana"})
    )
    signals = await source.read()
    assert signals == HostSignals(None, None, Pressure.UNKNOWN, source="macos")
    assert source.last_error is not None
    assert "vm.swapusage" in source.last_error and "banana" in source.last_error


async def test_mac_runner_that_raises_never_raises() -> None:
    async def broken(argv: Sequence[str]) -> str:
        raise FileNotFoundError(2, "No such file", argv[0])

    source = MacSource(runner=broken)
    signals = await source.read()
    assert signals.pressure is Pressure.UNKNOWN and signals.swap_total_bytes is None
    assert source.last_error is not None and "FileNotFoundError" in source.last_error


async def test_mac_runner_that_hangs_times_out() -> None:
    async def hangs(argv: Sequence[str]) -> str:
        await asyncio.sleep(30)
        return ""

    source = MacSource(runner=hangs, timeout_s=0.05)
    signals = await asyncio.wait_for(source.read(), 2)
    assert signals.pressure is Pressure.UNKNOWN
    assert source.last_error is not None and "timed out" in source.last_error


async def test_mac_with_memory_uses_vm_stat_page_size() -> None:
    vm_stat = (HOST / "vm_stat_apple_silicon_16384_sweepformac.txt").read_text()
    runner = recorded_runner(
        {
            SWAPUSAGE_ARGV: (HOST / "swapusage_px_issue80.txt").read_text(),
            PRESSURE_ARGV: "1",
            ("/usr/sbin/sysctl", "-n", "hw.memsize"): "17179869184\n",
            ("/usr/bin/vm_stat",): vm_stat,
        }
    )
    source = MacSource(runner=runner, with_memory=True)
    signals = await source.read()
    assert signals.memory_total_bytes == 16 << 30
    assert signals.memory_available_bytes is not None
    assert signals.memory_available_bytes % 16384 == 0
    assert source.last_error is None


async def test_default_runner_runs_real_commands() -> None:
    assert (await run_command(["/bin/echo", "1"])).strip() == "1"
    with pytest.raises(SignalReadError, match="exited"):
        await run_command(["/bin/sh", "-c", "echo nope >&2; exit 3"])


async def test_default_runner_killed_on_timeout() -> None:
    source = MacSource(runner=lambda argv: run_command(["/bin/sleep", "30"]), timeout_s=0.2)
    signals = await asyncio.wait_for(source.read(), 5)
    assert signals.pressure is Pressure.UNKNOWN and "timed out" in (source.last_error or "")


# --- LinuxSource --------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")
async def test_linux_reads_this_machines_proc() -> None:
    source = LinuxSource()
    signals = await source.read()
    expected = parse_meminfo(proc_text("/proc/meminfo") or "")
    assert signals.swap_total_bytes == expected.swap_total_bytes
    assert signals.memory_total_bytes == expected.memory_total_bytes
    assert signals.source == "linux"
    psi = proc_text("/proc/pressure/memory")
    if psi is not None:
        assert signals.pressure is parse_psi_memory(psi)
        assert source.last_error is None


async def test_linux_on_temp_files(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    psi = tmp_path / "psi"
    recorded = (HOST / "meminfo_with_swap_squeezed_rpicheck107.txt").read_text()
    meminfo.write_text(recorded)
    psi.write_text((HOST / "psi_memory_heavy_procfs40.txt").read_text())
    source = LinuxSource(meminfo_path=meminfo, psi_path=psi)
    signals = await source.read()
    assert signals.swap_total_bytes == parse_meminfo(recorded).swap_total_bytes == 102396 * 1024
    assert signals.swap_used_bytes == 4096
    assert signals.pressure is Pressure.CRITICAL
    assert source.last_error is None


async def test_linux_missing_files_are_unknown_with_error(tmp_path: Path) -> None:
    source = LinuxSource(meminfo_path=tmp_path / "none", psi_path=tmp_path / "nopsi")
    signals = await source.read()
    assert signals.pressure is Pressure.UNKNOWN and signals.swap_total_bytes is None
    assert "cannot read" in (source.last_error or "")


async def test_default_source_per_platform() -> None:
    assert isinstance(default_source("darwin"), MacSource)
    assert isinstance(default_source("linux"), LinuxSource)
    other = default_source("win32")
    assert isinstance(other, UnsupportedSource)
    assert (await other.read()).pressure is Pressure.UNKNOWN
    assert "win32" in (other.last_error or "")


# --- HttpSource ---------------------------------------------------------------------------


async def test_http_source_reads_a_real_simulator(tmp_path: Path) -> None:
    sim = start_simulator("sim", tmp_path, "--profile", "fast")
    source = HttpSource(f"{sim.url}/sim/signals")
    try:
        signals = await source.read()
    finally:
        await source.aclose()
        sim.stop()
    assert source.last_error is None
    assert signals.pressure is not Pressure.UNKNOWN
    assert signals.swap_total_bytes is not None and signals.memory_total_bytes is not None


async def test_http_source_dead_port_is_unknown() -> None:
    source = HttpSource(f"http://127.0.0.1:{free_port()}/signals", timeout_s=1)
    try:
        signals = await source.read()
    finally:
        await source.aclose()
    assert signals.pressure is Pressure.UNKNOWN and signals.swap_used_bytes is None
    assert source.last_error is not None and "ConnectError" in source.last_error


# --- SignalSampler ------------------------------------------------------------------------


class CountingSource:
    def __init__(self, fail_every: int = 0) -> None:
        self.calls = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.fail_every = fail_every
        self.last_error: str | None = None
        self.closed = False

    async def read(self) -> HostSignals:
        self.calls += 1
        if self.calls >= self.target:
            self.reached.set()
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("boom")
        return HostSignals(self.calls * MIB, 1024 * MIB, Pressure.NORMAL, source="count")

    async def aclose(self) -> None:
        self.closed = True


async def wait_for_calls(source: CountingSource, n: int) -> None:
    source.target = n
    if source.calls < n:
        source.reached.clear()
        await asyncio.wait_for(source.reached.wait(), 5)


async def test_sampler_updates_latest_and_bounds_history() -> None:
    source = CountingSource()
    sampler = SignalSampler(
        source, interval_s=0.01, clock=FakeClock(1000.0, tick=1.0), history_size=5
    )
    await sampler.start()
    assert sampler.latest.swap_used_bytes == MIB  # first sample taken before start returns
    await wait_for_calls(source, 12)
    assert sampler.running
    assert len(sampler.history) == 5
    assert sampler.sampled_at > 1000.0 and sampler.error is None
    assert sampler.latest.swap_used_bytes is not None and sampler.latest.swap_used_bytes > MIB
    # one MiB per sample, one clock second per sample
    assert sampler.swap_trend_bytes_per_s() == MIB
    await sampler.stop()
    assert not sampler.running and source.closed
    calls = source.calls
    await asyncio.sleep(0.05)
    assert source.calls == calls  # the task really ended


async def test_sampler_survives_a_raising_source(caplog: pytest.LogCaptureFixture) -> None:
    source = CountingSource(fail_every=2)
    sampler = SignalSampler(source, interval_s=0.01, clock=FakeClock(1000.0, tick=1.0))
    with caplog.at_level(logging.INFO, logger="lanegate.host_signals"):
        await sampler.start()
        await wait_for_calls(source, 10)
        assert sampler.running
        await sampler.stop()
    assert source.calls >= 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "boom" in warnings[0].getMessage()  # once per distinct error
    assert any(p is Pressure.UNKNOWN for _, _, p in sampler.history)


async def test_sampler_reports_source_error_text() -> None:
    sampler = SignalSampler(UnsupportedSource("plan9"), interval_s=10)
    await sampler.start()
    try:
        assert sampler.latest.pressure is Pressure.UNKNOWN
        assert sampler.error is not None and "plan9" in sampler.error
    finally:
        await sampler.stop()


async def test_sampler_times_out_a_hung_source() -> None:
    class Hung(CountingSource):
        async def read(self) -> HostSignals:
            await asyncio.sleep(30)
            raise AssertionError

    sampler = SignalSampler(Hung(), interval_s=10, read_timeout_s=0.05)
    signals = await sampler.sample_once()
    assert signals.pressure is Pressure.UNKNOWN and "timed out" in (sampler.error or "")
