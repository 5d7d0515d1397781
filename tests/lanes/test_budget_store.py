"""The budget spend file: owner-only, and spend survives a reopen."""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.lanes.budget_store import SqliteSpendStore


def test_spend_file_is_owner_only_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "state" / "budgets.sqlite"
    store = SqliteSpendStore(path)
    store.write([("lane", "batch", "minute", 10, 1234)])
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reopened = SqliteSpendStore(path)
    try:
        assert reopened.load(now=0.0) == [("lane", "batch", "minute", 10, 1234)]
    finally:
        reopened.close()
