"""Read the host's memory signals off the request path: the shell around `host_signals`.

Owns running `sysctl`/`vm_stat` on macOS, reading `/proc` on Linux, fetching a simulator's or
a `lanegate agent`'s JSON over HTTP, and sampling one of those on a timer. Parsing is left to
the pure parsers in `host_signals`; policy (what pressure means for admission) lives elsewhere.

Nothing here may crash or block the gateway: every source has a timeout, and a source that
fails reports `Pressure.UNKNOWN` / None values with the error text in `last_error`, which the
sampler logs once per distinct error rather than on every sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # httpx is imported when an HttpSource is made: most gateways need none
    import httpx

from gateway.errors import ConfigError
from gateway.offload.host_signals import (
    HostSignals,
    Pressure,
    parse_meminfo,
    parse_pressure_level,
    parse_psi_memory,
    parse_simulator_signals,
    parse_swapusage,
    parse_vm_stat,
)
from gateway.ops.periodic import Periodic

log = logging.getLogger("lanegate.host_signals")

Runner = Callable[[Sequence[str]], Awaitable[str]]
Clock = Callable[[], float]

SWAPUSAGE_ARGV = ("/usr/sbin/sysctl", "-n", "vm.swapusage")
PRESSURE_ARGV = ("/usr/sbin/sysctl", "-n", "kern.memorystatus_vm_pressure_level")
MEMSIZE_ARGV = ("/usr/sbin/sysctl", "-n", "hw.memsize")
VM_STAT_ARGV = ("/usr/bin/vm_stat",)
COMMAND_TIMEOUT_S = 2.0
_SHOWN_OUTPUT = 80  # characters of unparseable output quoted in an error


class SignalReadError(ConfigError):
    """A command or file that should have produced host signals did not."""


class SignalSource(Protocol):
    """Where one host's signals come from. `read` never raises for an expected failure: it
    returns UNKNOWN/None values and sets `last_error` (None after a clean read)."""

    last_error: str | None

    async def read(self) -> HostSignals: ...

    async def aclose(self) -> None: ...


class _LocalSource:
    """Sources that hold no connection: nothing to close."""

    last_error: str | None = None

    async def aclose(self) -> None:
        return None


def unknown(source: str) -> HostSignals:
    return HostSignals(None, None, Pressure.UNKNOWN, source=source)


async def run_command(argv: Sequence[str]) -> str:
    """Run `argv`, return its stdout; raise SignalReadError on a non-zero exit.

    No timeout of its own: the caller wraps it in one, and the process is killed if the
    wait is cancelled, so a hung `sysctl` never outlives its read.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip()[:200]
        raise SignalReadError(f"`{' '.join(argv)}` exited {proc.returncode}: {detail}")
    return out.decode(errors="replace")


class MacSource(_LocalSource):
    """macOS: `sysctl` for swap and the kernel's pressure level; optionally total memory and
    `vm_stat` for available memory. Never runs `memory_pressure` (it can apply pressure)."""

    def __init__(
        self,
        *,
        runner: Runner = run_command,
        timeout_s: float = COMMAND_TIMEOUT_S,
        with_memory: bool = False,
    ) -> None:
        self.runner = runner
        self.timeout_s = timeout_s
        self.with_memory = with_memory
        self.last_error: str | None = None

    async def read(self) -> HostSignals:
        argvs: list[tuple[str, ...]] = [SWAPUSAGE_ARGV, PRESSURE_ARGV]
        if self.with_memory:
            argvs += [MEMSIZE_ARGV, VM_STAT_ARGV]
        results = await asyncio.gather(*(self._run(argv) for argv in argvs))
        errors = [error for _, error in results if error]
        texts = [text for text, _ in results]
        swap = parse_swapusage(texts[0]) if texts[0] is not None else None
        if texts[0] is not None and swap is None:
            errors.append(_unparseable(SWAPUSAGE_ARGV, texts[0]))
        pressure = parse_pressure_level(texts[1]) if texts[1] is not None else Pressure.UNKNOWN
        if texts[1] is not None and pressure is Pressure.UNKNOWN:
            errors.append(_unparseable(PRESSURE_ARGV, texts[1]))
        total, available = _mac_memory(texts[2:]) if self.with_memory else (None, None)
        self.last_error = "; ".join(errors) or None
        used, swap_total = swap if swap else (None, None)
        return HostSignals(used, swap_total, pressure, total, available, source="macos")

    async def _run(self, argv: Sequence[str]) -> tuple[str | None, str | None]:
        try:
            return await asyncio.wait_for(self.runner(argv), self.timeout_s), None
        except TimeoutError:
            return None, f"`{' '.join(argv)}` timed out after {self.timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - an injected runner may raise anything
            return None, f"`{' '.join(argv)}` failed: {_describe(exc)}"


def _mac_memory(texts: Sequence[str | None]) -> tuple[int | None, int | None]:
    memsize, vm_stat = texts
    total = int(memsize.strip()) if memsize and memsize.strip().isdigit() else None
    stats = parse_vm_stat(vm_stat) if vm_stat else {}
    # What Activity Monitor would hand out without swapping: free, inactive and purgeable pages.
    parts = [stats.get(key) for key in ("pages_free", "pages_inactive", "pages_purgeable")]
    available = sum(p for p in parts if p is not None) if parts[0] is not None else None
    return total, available


class LinuxSource(_LocalSource):
    """Linux: `/proc/meminfo` for swap and memory, `/proc/pressure/memory` (PSI) for pressure."""

    def __init__(
        self,
        *,
        meminfo_path: Path = Path("/proc/meminfo"),
        psi_path: Path = Path("/proc/pressure/memory"),
    ) -> None:
        self.meminfo_path = meminfo_path
        self.psi_path = psi_path
        self.last_error: str | None = None

    async def read(self) -> HostSignals:
        meminfo, meminfo_error = await _read_file(self.meminfo_path)
        psi, psi_error = await _read_file(self.psi_path)
        errors = [e for e in (meminfo_error, psi_error) if e]
        base = parse_meminfo(meminfo) if meminfo is not None else unknown("linux")
        if meminfo is not None and base.swap_total_bytes is None:
            errors.append(f"no swap fields in {self.meminfo_path}")
        pressure = parse_psi_memory(psi) if psi is not None else Pressure.UNKNOWN
        if psi is not None and pressure is Pressure.UNKNOWN:
            errors.append(f"unparseable {self.psi_path}: {psi[:_SHOWN_OUTPUT]!r}")
        self.last_error = "; ".join(errors) or None
        return dataclasses.replace(base, pressure=pressure, source="linux")


async def _read_file(path: Path) -> tuple[str | None, str | None]:
    try:
        return await asyncio.to_thread(path.read_text, errors="replace"), None
    except OSError as exc:
        return None, f"cannot read {path}: {_describe(exc)}"


class HttpSource:
    """A remote host's signals: a simulator's `/sim/signals` or a `lanegate agent`'s
    `/signals`, fetched with a short timeout and an optional bearer key."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        timeout_s: float = COMMAND_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(timeout=timeout_s, headers=headers, transport=transport)
        self.last_error: str | None = None

    async def read(self) -> HostSignals:
        import httpx

        try:
            response = await self.client.get(self.url)
            if response.status_code != 200:
                raise SignalReadError(f"HTTP {response.status_code}: {response.text[:200]}")
            body = response.json()
        except (httpx.HTTPError, SignalReadError, ValueError) as exc:
            self.last_error = f"GET {self.url} failed: {_describe(exc)}"
            return unknown("http")
        if not isinstance(body, dict):
            self.last_error = f"GET {self.url}: expected a JSON object, got {type(body).__name__}"
            return unknown("http")
        remote_error = body.get("error")
        self.last_error = f"remote: {remote_error}" if isinstance(remote_error, str) else None
        return parse_simulator_signals(body)

    async def aclose(self) -> None:
        await self.client.aclose()


class UnsupportedSource(_LocalSource):
    """A platform with no reader: always UNKNOWN, with the reason."""

    def __init__(self, platform: str) -> None:
        self.last_error: str | None = (
            f"no host-signal reader for platform {platform!r}; memory pressure is unknown"
        )

    async def read(self) -> HostSignals:
        return unknown("unsupported")


def default_source(platform: str = sys.platform) -> SignalSource:
    if platform == "darwin":
        return MacSource(with_memory=True)
    if platform.startswith("linux"):
        return LinuxSource()
    return UnsupportedSource(platform)


def _unparseable(argv: Sequence[str], text: str) -> str:
    return f"unparseable output of `{' '.join(argv)}`: {text.strip()[:_SHOWN_OUTPUT]!r}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


Sample = tuple[float, int | None, Pressure]


class SignalSampler:
    """Samples a source every `interval_s` in a background task (start()/stop() from the
    app's lifespan) and keeps the latest reading plus a bounded history for a swap trend."""

    def __init__(
        self,
        source: SignalSource,
        *,
        interval_s: float = 2.0,
        clock: Clock = time.time,
        history_size: int = 150,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.clock = clock
        self.read_timeout_s = read_timeout_s
        self.latest: HostSignals = unknown("not sampled yet")
        self.sampled_at: float = 0.0
        self.error: str | None = None
        self.history: deque[Sample] = deque(maxlen=history_size)
        self._logged: set[str] = set()
        self._periodic = Periodic(self._step, interval_s)
        self._running = False

    async def sample_once(self) -> HostSignals:
        try:
            signals = await asyncio.wait_for(self.source.read(), self.read_timeout_s)
            error = self.source.last_error
        except TimeoutError:
            signals, error = unknown("timeout"), f"read timed out after {self.read_timeout_s:g}s"
        except Exception as exc:  # noqa: BLE001 - outermost boundary: the loop must survive
            signals, error = unknown("error"), f"reader crashed: {_describe(exc)}"
        self._note(error)
        self.latest, self.error, self.sampled_at = signals, error, self.clock()
        self.history.append((self.sampled_at, signals.swap_used_bytes, signals.pressure))
        return signals

    def _note(self, error: str | None) -> None:
        if error is None:
            if self.error is not None:
                log.info("host signals recovered")
            return
        if error not in self._logged:
            if len(self._logged) >= 64:  # bounded: a reader with ever-new messages
                self._logged.clear()
            self._logged.add(error)
            log.warning("host signals unavailable: %s", error)

    async def start(self) -> None:
        """Take one sample now (so the first answer is real), then keep sampling."""
        if self._running:
            return
        await self.sample_once()
        self._periodic.start()
        self._running = True

    async def _step(self) -> None:
        await self.sample_once()

    async def stop(self) -> None:
        await self._periodic.stop()
        self._running = False
        await self.source.aclose()

    @property
    def running(self) -> bool:
        return self._running

    def swap_trend_bytes_per_s(self) -> float | None:
        """Swap growth over the history window (bytes/s), or None with under two readings."""
        known = [(at, used) for at, used, _ in self.history if used is not None]
        if len(known) < 2 or known[-1][0] <= known[0][0]:
            return None
        return (known[-1][1] - known[0][1]) / (known[-1][0] - known[0][0])
