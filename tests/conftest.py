"""Shared fixtures: output directory for logs, and lanegate processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO

# Real recorded responses (copied from the team's shared samples; sources in streams/SOURCES.md).
DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def output_dir() -> Iterator[Path]:
    path = REPO / "test-output"
    path.mkdir(exist_ok=True)
    yield path
