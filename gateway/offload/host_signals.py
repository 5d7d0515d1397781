"""Pure parsers for host memory signals: text in, plain values out.

Owns the knowledge of what `sysctl vm.swapusage`, `kern.memorystatus_vm_pressure_level`,
`vm_stat`, Linux `/proc/meminfo`, `/proc/pressure/memory` and the simulator's `/sim/signals`
JSON look like. It must not run commands, read files or know the time: the shell reader does
that and hands the text here, so every format quirk is testable from recorded output.

Every parser is total: garbage yields None, `Pressure.UNKNOWN` or an empty dict, never an
exception, because a monitor that crashes on one odd line is worse than one that says
"unknown" and lets the gateway fall back to its conservative default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any


class Pressure(Enum):
    """Host memory pressure, in macOS's three levels plus "we could not tell"."""

    NORMAL = "normal"
    WARN = "warn"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class HostSignals:
    """One reading of a host's memory state; None means "not reported", never zero."""

    swap_used_bytes: int | None
    swap_total_bytes: int | None
    pressure: Pressure
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    source: str = ""


# `kern.memorystatus_vm_pressure_level` values (xnu's kVMPressure* constants).
_MACOS_LEVELS = {"1": Pressure.NORMAL, "2": Pressure.WARN, "4": Pressure.CRITICAL}
_UNIT_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

# Some locales print a decimal comma ("1024,00M"), hence `[.,]`. ASCII digits only: `\d` would
# accept other scripts' digits, which no real sysctl prints.
_SWAP_FIELD = re.compile(r"\b(total|used)\s*=\s*([0-9]{1,30}(?:[.,][0-9]{1,30})?)\s*([KMG])")
_PAGE_SIZE = re.compile(r"page size of ([0-9]{1,12}) bytes")
_VM_STAT_ROW = re.compile(r'^\s*"?([A-Za-z][A-Za-z -]*?)"?:\s*([0-9]{1,30})\.?\s*$')
_MEMINFO_ROW = re.compile(r"^([A-Za-z0-9_()]+):\s*([0-9]{1,30})(?:\s*(kB))?\s*$")
_PSI_AVG10 = re.compile(r"(?:^|\s)avg10=([0-9]{1,10}(?:\.[0-9]{1,10})?)(?:\s|$)")

DEFAULT_PAGE_SIZE = 4096
"""Intel Macs use 4 KiB pages; used only when `vm_stat`'s header is missing."""

PSI_SOME_WARN_AVG10 = 10.0
"""`some avg10` at or above this (percent of the last 10 s in which at least one task stalled
on memory) means WARN: the host is reclaiming hard enough to slow someone down."""

PSI_FULL_CRITICAL_AVG10 = 10.0
"""`full avg10` at or above this means CRITICAL: for a tenth of the last 10 s *every* runnable
task stalled on memory at once, which is thrashing, the analogue of macOS's critical level.
The same number as WARN on purpose: `full` is always <= `some`, so one threshold on two
signals already gives an ordered pair."""


def parse_swapusage(text: str) -> tuple[int, int] | None:
    """Return `(used, total)` swap bytes from `sysctl [-n] vm.swapusage`, or None.

    Total may be 0 (macOS creates swapfiles lazily, so a fresh boot has none yet).
    """
    line = next((ln for ln in text.splitlines() if "vm.swapusage" in ln), text)
    found: dict[str, int] = {}
    for match in _SWAP_FIELD.finditer(line):
        key, number, unit = match.groups()
        if key not in found:
            found[key] = _scaled(number, _UNIT_BYTES[unit])
    if "used" not in found or "total" not in found:
        return None
    return found["used"], found["total"]


def _scaled(number: str, unit: int) -> int:
    # Decimal, not float: "11625.69M" must become the same integer on every platform.
    try:
        return int(Decimal(number.replace(",", ".")) * unit)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return 0


def parse_pressure_level(text: str) -> Pressure:
    """Map `sysctl [-n] kern.memorystatus_vm_pressure_level` output to a Pressure."""
    value = text.rsplit(":", 1)[-1].strip()
    return _MACOS_LEVELS.get(value, Pressure.UNKNOWN)


def parse_vm_stat(text: str) -> dict[str, int]:
    """Parse `vm_stat` into snake_case keys.

    Rows whose label mentions pages ("Pages free", "File-backed pages") are quantities of
    memory and come back in bytes, using the header's page size (16 KiB on Apple Silicon,
    4 KiB on Intel: hard-coding either is the classic bug). Event counters ("Swapins",
    "Pageins", "Translation faults", "Compressions") stay raw counts. `page_size_bytes` is
    included whenever anything was parsed.
    """
    header = _PAGE_SIZE.search(text)
    page_size = int(header.group(1)) if header else 0
    if page_size <= 0:
        page_size = DEFAULT_PAGE_SIZE
    result: dict[str, int] = {}
    for line in text.splitlines():
        match = _VM_STAT_ROW.match(line)
        if match is None:
            continue
        label, count = match.group(1).strip(), int(match.group(2))
        key = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        is_pages = "pages" in key.split("_")
        result[key] = count * page_size if is_pages else count
    if result or header:
        result["page_size_bytes"] = page_size
    return result


def parse_meminfo(text: str) -> HostSignals:
    """Read swap and memory totals from Linux `/proc/meminfo` (values in kB).

    Pressure is UNKNOWN: meminfo holds amounts, not stalls; combine with `parse_psi_memory`.
    `MemAvailable` is missing before Linux 3.14 and is then reported as None rather than
    guessed from MemFree, which undercounts reclaimable cache.
    """
    fields: dict[str, int] = {}
    for line in text.splitlines():
        match = _MEMINFO_ROW.match(line.strip())
        if match is not None and match.group(1) not in fields:
            fields[match.group(1)] = int(match.group(2)) * (1024 if match.group(3) else 1)
    swap_total = fields.get("SwapTotal")
    swap_free = fields.get("SwapFree")
    swap_used = None
    if swap_total is not None and swap_free is not None:
        swap_used = max(0, swap_total - swap_free)
    return HostSignals(
        swap_used_bytes=swap_used,
        swap_total_bytes=swap_total,
        pressure=Pressure.UNKNOWN,
        memory_total_bytes=fields.get("MemTotal"),
        memory_available_bytes=fields.get("MemAvailable"),
        source="meminfo",
    )


def parse_psi_memory(text: str) -> Pressure:
    """Classify Linux `/proc/pressure/memory` by its 10-second averages.

    See PSI_FULL_CRITICAL_AVG10 and PSI_SOME_WARN_AVG10. avg10 reacts within seconds, which
    is the horizon an admission decision cares about; avg60/avg300 lag a burst by minutes.
    """
    averages: dict[str, float] = {}
    for line in text.splitlines():
        words = line.split(None, 1)
        if len(words) != 2 or words[0] not in ("some", "full") or words[0] in averages:
            continue
        match = _PSI_AVG10.search(words[1])
        if match is not None:
            averages[words[0]] = float(match.group(1))
    if not averages:
        return Pressure.UNKNOWN
    if averages.get("full", 0.0) >= PSI_FULL_CRITICAL_AVG10:
        return Pressure.CRITICAL
    if averages.get("some", 0.0) >= PSI_SOME_WARN_AVG10:
        return Pressure.WARN
    return Pressure.NORMAL


def parse_simulator_signals(obj: Mapping[str, Any]) -> HostSignals:
    """Read the simulator's `/sim/signals` JSON (and later `lanegate agent` answers).

    `pressure_level` is the macOS number (1/2/4); a Pressure name ("warn") is accepted too so
    an agent on Linux can report PSI's verdict. Available memory is `memory_available_bytes`
    if given, else total minus `memory_used_bytes`. Wrongly typed or negative numbers are
    treated as absent rather than trusted.
    """
    if not isinstance(obj, Mapping):
        return HostSignals(None, None, Pressure.UNKNOWN, source="simulator")
    total = _count(obj.get("memory_total_bytes"))
    available = _count(obj.get("memory_available_bytes"))
    used = _count(obj.get("memory_used_bytes"))
    if available is None and total is not None and used is not None:
        available = max(0, total - used)
    source = obj.get("source")
    return HostSignals(
        swap_used_bytes=_count(obj.get("swap_used_bytes")),
        swap_total_bytes=_count(obj.get("swap_total_bytes")),
        pressure=_pressure_value(obj.get("pressure_level")),
        memory_total_bytes=total,
        memory_available_bytes=available,
        source=source if isinstance(source, str) and source else "simulator",
    )


def _count(value: object) -> int | None:
    # bool is an int subclass; `true` bytes is a bug upstream, not a count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _pressure_value(value: object) -> Pressure:
    if isinstance(value, bool):
        return Pressure.UNKNOWN
    if isinstance(value, int):
        return _MACOS_LEVELS.get(str(value), Pressure.UNKNOWN)
    if isinstance(value, str):
        named = {p.value: p for p in Pressure}
        return named.get(value.strip().lower(), parse_pressure_level(value))
    return Pressure.UNKNOWN
