"""Running `lanegate ladder` as a user does: a subprocess, its files, against the simulator."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.processes import REPO, Service, running, start_simulator

MODEL = "llama3:8b"
FAST = ["--max-tokens", "16", "--prompt-tokens", "64", "--sample-interval", "0.5"]


def knee_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("sim")
    with running(start_simulator("sim-knee", logs, "--profile", "knee-demo")) as service:
        yield service


def ladder_cmd(base_url: str, out: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "gateway", "ladder", "--base-url", base_url, "--model", MODEL,
        "--out", str(out), *FAST, *args,
    ]  # fmt: skip


def run_ladder(
    base_url: str, out: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ladder_cmd(base_url, out, *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        env=None if env is None else dict(env),
    )


def ladder_verb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "ladder", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def check_cpu_figures(signals: list[dict[str, str]]) -> None:
    """Every sample of signals.csv has the CPU busy figure and one per core, except that the
    first (milliseconds after the probe primed) and the last (whenever the run ended) may fall
    within one tick of the kernel's CPU clock and have none to give."""
    assert len(signals) > 2, signals
    cores = len(signals[1]["cpu_cores"].split(";"))
    for index, sample in enumerate(signals):
        if index in (0, len(signals) - 1) and sample["cpu_busy_pct"] == "":
            assert sample["cpu_cores"] == "", sample
            continue
        assert 0 <= float(sample["cpu_busy_pct"]) <= 100, sample
        assert len(sample["cpu_cores"].split(";")) == cores, sample
