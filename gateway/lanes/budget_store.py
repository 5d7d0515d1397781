"""Budget spend that survives restarts: the ledger's settled totals in SQLite, and the loop
that writes them off the request path.

Reservations and settlements happen in memory (`budgets.BudgetLedger`, pure); once a second
(and on shutdown) the windows whose totals changed are upserted in one transaction from a
worker thread. A hard kill therefore loses at most the last second of settlements plus the
reservations in flight — the bound stated in docs/policy.md. `SpendStore` is the small
interface a shared backend (Redis) implements too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from gateway.lanes.budgets import (
    WINDOW_SECONDS,
    BudgetLedger,
    Refusal,
    Reservation,
    ScopeKey,
    SpendRow,
)
from gateway.ops.periodic import Periodic
from gateway.policy.spec import Budget, ClientSpec, LaneSpec
from gateway.shared.plan import SharedReservation

log = logging.getLogger("lanegate.budgets")

FLUSH_INTERVAL_S = 1.0


class SpendStore(Protocol):
    def load(self, now: float) -> list[SpendRowTuple]: ...

    def write(self, rows: Sequence[SpendRowTuple]) -> None: ...

    def close(self) -> None: ...


# (scope kind, scope name, window, index, tokens): what one row of spend holds.
SpendRowTuple = tuple[str, str, str, int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    scope_kind TEXT NOT NULL, scope_name TEXT NOT NULL, window TEXT NOT NULL,
    idx INTEGER NOT NULL, tokens INTEGER NOT NULL, window_end REAL NOT NULL,
    PRIMARY KEY (scope_kind, scope_name, window, idx)
) WITHOUT ROWID
"""


class SqliteSpendStore:
    """One SQLite file under the state directory; used from one worker thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        os.chmod(path, 0o600)  # owner only, like the ledger (SQLite copies it to -wal/-shm)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def load(self, now: float) -> list[SpendRowTuple]:
        self._db.execute("DELETE FROM spend WHERE window_end <= ?", (now,))
        cursor = self._db.execute("SELECT scope_kind, scope_name, window, idx, tokens FROM spend")
        return [tuple(row) for row in cursor]

    def write(self, rows: Sequence[SpendRowTuple]) -> None:
        values = [(*row, (row[3] + 1) * WINDOW_SECONDS[row[2]]) for row in rows]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET tokens = excluded.tokens",
                values,
            )

    def close(self) -> None:
        self._db.close()


Held = Reservation | SharedReservation | None  # what a request holds until it settles


class BudgetService(Protocol):
    """Token budgets as the request flow sees them: this gateway's (`Budgets`), or shared by
    all gateways through Redis (`shared.budgets.SharedBudgets`); the flow has no branch."""

    async def hold(self, lane: LaneSpec, client: ClientSpec | None, tokens: int) -> Held | Refusal:
        """Reserve `tokens` against the lane's and client's budgets (None: no budget)."""
        ...

    def settle(self, reservation: Held, actual_tokens: int) -> None: ...

    def release(self, reservation: Held) -> None: ...

    def headers(
        self, lane: LaneSpec, client: ClientSpec | None, reservation: Held
    ) -> list[tuple[bytes, bytes]]:
        """The x-ratelimit-*-tokens headers for an admitted request."""
        ...


class Budgets:
    """The gateway's budget service: the pure ledger, a wall clock, and persistence."""

    def __init__(self, store: SpendStore | None, *, wall_clock: Callable[[], float] = time.time):
        self.ledger = BudgetLedger()
        self.store = store
        self.wall_clock = wall_clock
        # A failed flush is logged with its traceback and run again by Periodic, like every
        # background step (no wrapper of its own).
        self._flusher = Periodic(self.flush, FLUSH_INTERVAL_S, name="budget spend flush")

    async def start(self) -> None:
        if self.store is None:
            return
        rows = await asyncio.to_thread(self.store.load, self.wall_clock())
        self.ledger.load(
            (
                SpendRow((kind, name), window, idx, tokens)
                for kind, name, window, idx, tokens in rows
            ),
            self.wall_clock(),
        )
        self._flusher.start()

    async def stop(self) -> None:
        await self._flusher.stop()
        if self.store is not None:
            await self.flush()
            self.store.close()

    async def flush(self) -> None:
        rows = self.ledger.drain_settled()
        if rows and self.store is not None:
            tuples = [(r.scope[0], r.scope[1], r.window, r.index, r.tokens) for r in rows]
            await asyncio.to_thread(self.store.write, tuples)

    # -- the request path --------------------------------------------------------------------
    def reserve(
        self, lane: LaneSpec, client: ClientSpec | None, tokens: int
    ) -> Reservation | Refusal | None:
        """Reserve against the lane's and client's budgets; None when neither has a budget."""
        scopes = _scopes(lane, client)
        if not scopes:
            return None
        return self.ledger.reserve(scopes, tokens, self.wall_clock())

    async def hold(self, lane: LaneSpec, client: ClientSpec | None, tokens: int) -> Held | Refusal:
        return self.reserve(lane, client, tokens)

    def settle(self, reservation: Held, actual_tokens: int) -> None:
        if isinstance(reservation, Reservation):
            self.ledger.settle(reservation, actual_tokens, self.wall_clock())

    def release(self, reservation: Held) -> None:
        if isinstance(reservation, Reservation):
            self.ledger.release(reservation)

    def headers(
        self, lane: LaneSpec, client: ClientSpec | None, reservation: Held
    ) -> list[tuple[bytes, bytes]]:
        return self.rate_limit_headers(lane, client)

    def rate_limit_headers(
        self, lane: LaneSpec, client: ClientSpec | None
    ) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-*-tokens headers for the tightest window that applies."""
        now = self.wall_clock()
        states = [
            state
            for scope, budget in _scopes(lane, client)
            for state in self.ledger.remaining(scope, budget, now)
        ]
        if not states:
            return []
        tightest = min(states, key=lambda s: s.remaining)
        return [
            (b"x-ratelimit-limit-tokens", str(tightest.limit).encode()),
            (b"x-ratelimit-remaining-tokens", str(tightest.remaining).encode()),
            (b"x-ratelimit-reset-tokens", _duration(tightest.reset_s).encode()),
        ]


def _scopes(lane: LaneSpec, client: ClientSpec | None) -> list[tuple[ScopeKey, Budget]]:
    scopes: list[tuple[ScopeKey, Budget]] = []
    if lane.budget.limits():
        scopes.append((("lane", lane.name), lane.budget))
    if client is not None and client.budget.limits():
        scopes.append((("client", client.name), client.budget))
    return scopes


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`."""
    whole = max(0, int(seconds + 0.999))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
