"""Fixtures for the simulator tests: shared servers from `sim_harness`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.tools.simulator.sim_harness import BATCHING, FIXED, SimServer, running


@pytest.fixture(scope="module")
def batching_sim() -> Iterator[SimServer]:
    with running(BATCHING) as server:
        yield server


@pytest.fixture(scope="module")
def fixed_sim() -> Iterator[SimServer]:
    with running(FIXED) as server:
        yield server


@pytest.fixture()
def sim(batching_sim: SimServer) -> SimServer:
    """The shared batching simulator, counters reset and idle."""
    deadline = time.monotonic() + 5
    while batching_sim.stats()["active"] or batching_sim.stats()["queued"]:
        assert time.monotonic() < deadline, "simulator did not go idle"
        time.sleep(0.01)
    batching_sim.reset()
    return batching_sim
