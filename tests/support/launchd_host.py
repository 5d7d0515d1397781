"""A `lanegate service` host for tests: launchctl and plutil recorded, a real simulator as the
policy's local upstream (install probes it), and a policy written under the fake home."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.commands import service
from tests.support.processes import Service, start_lanegate, write_policy

UID = 501
SIM: list[Service] = []  # the module's simulator: the local upstream every install probes


@pytest.fixture(scope="module", autouse=True)
def simulator(output_dir: Path) -> Iterator[Service]:
    sim = start_lanegate("launchd-sim", ["simulate"], ready_path="/health", log_dir=output_dir)
    SIM.append(sim)
    yield sim
    SIM.remove(sim)
    sim.stop()


def write_home_policy(home: Path, base_url: str | None = None, slots: int = 4) -> Path:
    """A policy whose one local upstream is `base_url` (default: the module's simulator)."""
    path = home / ".lanegate" / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    upstream = {"name": "mini", "pool": "local", "kind": "ollama", "max_concurrency": slots}
    return write_policy(path, [{**upstream, "base_url": base_url or SIM[0].url}])


class Recorder:
    def __init__(self, codes: dict[str, list[int]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.codes = codes or {}

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        queue = self.codes.get(argv[1] if argv[0] == "launchctl" else argv[0], [])
        return (queue.pop(0) if queue else 0), ""


def host_for(tmp_path: Path, runner: Recorder, platform: str = "darwin", euid: int = UID) -> Any:
    if not (tmp_path / ".lanegate" / "policy.yaml").exists():
        write_home_policy(tmp_path)
    return service.Host(
        platform=platform,
        uid=UID,
        euid=euid,
        home=str(tmp_path),
        user="ann",
        home_of=lambda _user: str(tmp_path),
        run=runner,
        sleep=lambda _s: None,
        out=io.StringIO(),
        err=io.StringIO(),
    )


def service_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["service", *argv])
