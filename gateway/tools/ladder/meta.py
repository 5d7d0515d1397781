"""Facts about the run that the report carries: tool version and git revision, the host, its
OS build and machine model (so `ladder compare` can tell like from unlike)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from gateway import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[2]


def git_revision(package_dir: Path = PACKAGE_DIR) -> str | None:
    """`git describe --always --dirty` of the checkout lanegate runs from; None if none.

    Only a checkout whose root holds the package itself counts (`.git` beside `gateway/`):
    an installed lanegate sits in site-packages, and a venv inside some other repository
    must not report that repository's revision."""
    directory = package_dir.parent
    if not (directory / ".git").exists():  # a directory, or a file in a git worktree
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    return None


def tool_info() -> dict[str, Any]:
    return {"name": "lanegate", "version": __version__, "git_revision": git_revision()}


def host_info(sys_root: Path = Path("/sys")) -> dict[str, Any]:
    return {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "os_build": os_build(),
        "machine_sku": machine_sku(sys_root),
        # psutil reports per-process disk I/O on Linux, not on macOS: "top disk" is then empty.
        "process_io": hasattr(psutil.Process, "io_counters"),
    }


def os_build() -> str:
    """macOS: `sw_vers -buildVersion` (24F74: changes with every update, unlike "15.5");
    elsewhere the kernel release and build string."""
    if sys.platform == "darwin":
        built = _command(["/usr/bin/sw_vers", "-buildVersion"])
        if built:
            return built
    return f"{platform.release()} {platform.version()}".strip()


def machine_sku(sys_root: Path = Path("/sys")) -> str:
    """macOS: `sysctl -n hw.model` (Mac14,10); Linux: DMI vendor and product, when readable."""
    if sys.platform == "darwin":
        model = _command(["/usr/sbin/sysctl", "-n", "hw.model"])
        if model:
            return model
    dmi = sys_root / "class" / "dmi" / "id"
    parts = []
    for name in ("sys_vendor", "product_name"):
        with contextlib.suppress(OSError):
            parts.append((dmi / name).read_text().strip())
    return " ".join(p for p in parts if p) or platform.machine() or "unknown"


def _command(argv: Sequence[str]) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=5, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    return None
