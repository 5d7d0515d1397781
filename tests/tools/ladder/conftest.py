"""One simulator with a knee at 8 (4 slots) for every ladder test that runs the command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import Service
from tests.tools.ladder.cli import knee_simulator


@pytest.fixture(scope="session")
def knee_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from knee_simulator(tmp_path_factory)
