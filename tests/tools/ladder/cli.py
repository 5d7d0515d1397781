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
