"""The request ledger: one SQLite row per finished request, written in batches off the path.

`RequestLedger.append` (called from `Recorder.record`, on the event loop) only appends a tuple
(the request's frozen labels and record, and the wall-clock time) to a bounded in-memory
buffer. Once a second, and on shutdown, the buffer is swapped out, turned into rows
and written in one transaction from a worker thread; once an hour (and at start) rows older than
the retention are deleted in the same worker call. A lock keeps the store to one call at a
time (a write cancelled on shutdown still finishes in its thread before the final flush).
A disk that stops answering cannot grow memory without limit: past `max_buffered` rows the
oldest are dropped and counted, and the count is logged as a warning.

What a row holds is listed in `ledger_report.COLUMNS`: names, numbers and codes. A row is
built from `RequestLabels` and `RequestRecord`, which never carry bodies, prompts,
completions or keys, so none of them can reach the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.observe.ledger_report import COLUMNS, LedgerRow, retention_cutoff
from gateway.ops.periodic import Periodic

if TYPE_CHECKING:
    from gateway.observe.measurement import RequestLabels, RequestRecord

log = logging.getLogger("lanegate.ledger")

LEDGER_FILE = "ledger.sqlite"
FLUSH_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 3600.0
# ~0.5 KB a row in memory: 50 000 rows is ~25 MB, over ten seconds of the benchmark's peak
# rate, which is far more than a healthy disk needs between two flushes.
MAX_BUFFERED = 50_000
# Error codes are identifiers; anything else (an upstream's free-text message) is stored as
# this, so that no text an upstream echoed from a prompt can land in the file.
_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
OTHER_ERROR = "upstream_error"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts REAL NOT NULL, request_id TEXT NOT NULL, client TEXT, lane TEXT NOT NULL, model TEXT,
    upstream TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, error TEXT,
    queue_ms REAL, ttft_ms REAL, gap_max_ms REAL, duration_ms REAL NOT NULL,
    prompt_tokens INTEGER, completion_tokens INTEGER, trace_id TEXT,
    preemptions INTEGER NOT NULL DEFAULT 0, preempted_ms REAL NOT NULL DEFAULT 0,
    preempted_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""
# What the request path appends: the row is built from it at flush time, off the event loop.
Pending = tuple["RequestLabels", "RequestRecord", float]
_INSERT = f"INSERT INTO requests VALUES ({', '.join('?' * len(COLUMNS))})"
# What binding a value SQLite cannot store raises (none of them is an sqlite3.Error).
_UNBINDABLE = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError)


def error_code(error: str | None) -> str | None:
    """The code part of a record's error: `ConnectError: ...` → `ConnectError`."""
    if error is None:
        return None
    head = error.split(":", 1)[0].strip()[:64]
    return head if head and set(head) <= _CODE_CHARS else OTHER_ERROR


def ledger_row(labels: RequestLabels, record: RequestRecord, ts: float) -> LedgerRow:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return (
        ts,
        labels.request_id,
        labels.client,
        labels.lane,
        labels.model,
        labels.upstream,
        labels.path,
        record.status,
        error_code(record.error),
        ms(labels.queue_s),
        ms(record.ttft_s),
        ms(record.gap_max_s),
        round(record.duration_s * 1000, 3),
        record.prompt_tokens,
        record.completion_tokens,
        labels.trace_id,
        labels.preemptions,
        round(labels.preempted_s * 1000, 3),
        labels.preempted_tokens,
    )


class SqliteLedgerStore:
    """The ledger file, written from worker threads one call at a time (a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # A write cancelled on shutdown goes on in its thread: the final flush must wait.
        self._lock = threading.Lock()
        # Who called which lane when is nobody else's business on a shared Mac; SQLite gives
        # the -wal and -shm files the database file's mode.
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        _add_missing_columns(self._db)

    def write(self, rows: Sequence[LedgerRow], prune_before: float | None = None) -> int:
        """Insert `rows` and, if given, delete rows older than `prune_before`; rows deleted."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            if rows:
                self._db.executemany(_INSERT, rows)
            if prune_before is None:
                return 0
            return self._db.execute("DELETE FROM requests WHERE ts < ?", (prune_before,)).rowcount

    def write_pending(
        self, pending: Sequence[Pending], prune_before: float | None
    ) -> tuple[int, int]:
        """`write`, building the rows here (in the worker thread) rather than per request;
        (rows pruned, rows dropped because SQLite cannot store them)."""
        rows = [ledger_row(*item) for item in pending]
        try:
            return self.write(rows, prune_before), 0
        except sqlite3.Error:
            raise
        except _UNBINDABLE:  # one row SQLite cannot bind (an int over 2**63): keep the others
            return self._write_each(rows, prune_before)

    def _write_each(self, rows: Sequence[LedgerRow], prune_before: float | None) -> tuple[int, int]:
        dropped = 0
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for row in rows:
                try:
                    self._db.execute(_INSERT, row)
                except _UNBINDABLE:  # refused before the statement ran: nothing half-written
                    dropped += 1
            pruned = 0
            if prune_before is not None:
                cursor = self._db.execute("DELETE FROM requests WHERE ts < ?", (prune_before,))
                pruned = cursor.rowcount
        return pruned, dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A ledger written before a column existed gets it (NULL in its old rows)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    added = {
        "trace_id": "TEXT",
        "preemptions": "INTEGER NOT NULL DEFAULT 0",
        "preempted_ms": "REAL NOT NULL DEFAULT 0",
        "preempted_tokens": "INTEGER NOT NULL DEFAULT 0",
    }
    for name, kind in added.items():
        if name not in present:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def read_rows(path: Path, since: float) -> list[LedgerRow]:
    """Rows that finished at or after `since`, oldest first; safe while a gateway writes (WAL)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        cursor = db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE ts >= ? ORDER BY ts", (since,)
        )
        return [tuple(row) for row in cursor]
    finally:
        db.close()


class RequestLedger:
    """The gateway's ledger service: the buffer, the flush loop and the retention."""

    def __init__(
        self,
        store: SqliteLedgerStore,
        *,
        retention_days: float,
        wall_clock: Callable[[], float] = time.time,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.wall_clock = wall_clock
        # (labels, record, finished at): frozen objects, turned into rows in the worker thread.
        self._buffer: deque[Pending] = deque(maxlen=max_buffered)
        self.dropped = 0  # rows lost to a full buffer since start; logged as they happen
        self._dropped_logged = 0
        self._next_prune = 0.0
        self._flusher = Periodic(self.flush_logged, FLUSH_INTERVAL_S)

    # -- the request path --------------------------------------------------------------------
    def append(self, labels: RequestLabels, record: RequestRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # deque drops the oldest itself
        self._buffer.append((labels, record, self.wall_clock()))

    # -- off the request path ----------------------------------------------------------------
    async def start(self) -> None:
        await self.flush()  # prunes at once: the first prune is due at start
        self._flusher.start()

    async def stop(self) -> None:
        await self._flusher.stop()
        try:
            await self.flush()
        finally:
            await asyncio.to_thread(self.store.close)

    async def flush(self) -> None:
        """Write the buffered rows (and prune if an hour has passed) in one worker call."""
        rows = list(self._buffer)
        self._buffer.clear()
        now = self.wall_clock()
        prune = retention_cutoff(now, self.retention_days) if now >= self._next_prune else None
        if not rows and prune is None:
            return
        try:
            pruned, unstorable = await asyncio.to_thread(self.store.write_pending, rows, prune)
        except sqlite3.Error:
            self._requeue(rows)  # the transaction rolled back: nothing of it was written
            raise
        if unstorable:
            self.dropped += unstorable
            log.error(
                "ledger: dropped %d row(s) SQLite cannot store (a value out of range)", unstorable
            )
        if prune is not None:
            self._next_prune = now + PRUNE_INTERVAL_S
            if pruned:
                log.info("ledger: deleted %d rows older than %g days", pruned, self.retention_days)

    def _requeue(self, rows: Iterable[Pending]) -> None:
        """Put unwritten rows back in front of newer ones; the oldest go if they don't fit."""
        newer = list(self._buffer)
        self._buffer.clear()
        for row in [*rows, *newer]:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(row)

    async def flush_logged(self) -> None:
        """One flush whatever happens: any failure is logged (with its traceback), never the
        end of the writer; rows of a failed SQLite transaction are retried next time."""
        try:
            await self.flush()
        except Exception:
            log.exception("ledger: could not write %s; will retry", self.store.path)
        if self.dropped > self._dropped_logged:
            log.warning(
                "ledger: dropped %d rows (%d since start): the disk is not keeping up with "
                "%s, so the oldest unwritten rows were discarded",
                self.dropped - self._dropped_logged,
                self.dropped,
                self.store.path,
            )
            self._dropped_logged = self.dropped
