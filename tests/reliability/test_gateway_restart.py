"""The gateway itself SIGKILLed during traffic, then restarted on the same port and state:
budget spend settled before the last flush is still there (the promise: at most the last
second of settlements plus the reservations in flight are lost), and every SQLite file in
the state directory (budgets, and the request ledger once merged) passes integrity_check.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import LANES
from tests.support.gateway_state import BudgetProbe
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, start_gateway
from tests.support.threads import Worker, check_all

pytestmark = pytest.mark.faults

STREAM = {
    "model": "m",
    "stream": True,
    "max_tokens": 40,
    "messages": [{"role": "user", "content": "keep going"}],
}
MAX_PER_REQUEST = 40 + 100  # max_tokens + a generous prompt estimate


def _traffic(url: str, stop: threading.Event, started: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            started.append(1)
            try:
                with http.stream(
                    "POST", "/v1/chat/completions", json=STREAM, headers={"x-lane": "work"}
                ) as response:
                    for _ in response.iter_raw():
                        pass
            except httpx.HTTPError:
                return  # the gateway was killed under us


def _integrity(state: Path, scratch: Path) -> dict[str, str]:
    """integrity_check of each database, on a copy (with its WAL) so the check's own
    recovery does not touch what the restarted gateway will open."""
    results = {}
    for database in sorted(state.glob("*.sqlite")):
        copy = scratch / database.name
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(database) + suffix)
            if source.exists():
                shutil.copy(source, Path(str(copy) + suffix))
        with sqlite3.connect(copy) as db:
            results[database.name] = db.execute("PRAGMA integrity_check").fetchone()[0]
    return results


def test_sigkill_keeps_settled_spend_and_valid_databases(
    sim: Service, output_dir: Path, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml", [upstream_entry("sim", sim.url)], LANES)
    state = tmp_path / "state"
    first = start_gateway("gw-killed", policy, output_dir, state=state)
    probe = BudgetProbe("work")
    try:
        for _ in range(5):
            probe.run(first)
        remaining, spent = probe.run(first)  # settled: used = L - remaining - e + spent
        time.sleep(1.5)  # one flush interval (1 s) and a margin: all of that is on disk
        stop = threading.Event()
        started: list[int] = []
        workers = [Worker(lambda: _traffic(first.url, stop, started)) for _ in range(6)]
        for worker in workers:
            worker.start()
        time.sleep(1.2)  # streams in flight, settlements since the last flush
        first.stop(signal.SIGKILL)
        stop.set()
        check_all(workers, 30)
    finally:
        first.stop(signal.SIGKILL)
    scratch = tmp_path / "copy"
    scratch.mkdir()
    checks = _integrity(state, scratch)
    assert "budgets.sqlite" in checks and set(checks.values()) == {"ok"}, checks
    second = start_gateway(
        "gw-killed-2", policy, output_dir, state=state, port=first.port
    )  # a real restart
    try:
        remaining_after, _ = probe.run(second)
    finally:
        second.stop()
    # Persisted spend minus what was settled before the pause: never negative (nothing
    # flushed was lost), at most what the killed traffic could have spent.
    kept_since = remaining - remaining_after - spent
    assert 0 <= kept_since <= len(started) * MAX_PER_REQUEST, (kept_since, len(started))
    assert remaining_after < remaining
