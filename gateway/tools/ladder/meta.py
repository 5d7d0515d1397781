"""Facts about the run that the report carries: tool version and git revision, the host."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

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


def host_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
    }


def _memory_bytes() -> int | None:
    """Physical memory, without psutil (the `ladder` extra): sysconf on macOS and Linux."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None
