"""Facts about the run that the report carries: tool version and git revision, the host."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from gateway import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[2]


def git_revision(directory: Path = PACKAGE_DIR) -> str | None:
    """`git describe --always --dirty` of the checkout lanegate runs from; None if none."""
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


def host_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
    }
