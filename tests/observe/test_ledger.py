"""The ledger service on a real SQLite file: batches, retention with an injected clock,
the bounded buffer, what a row holds, and the access log's fields."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.observe.ledger import (
    OTHER_ERROR,
    RequestLedger,
    SqliteLedgerStore,
    error_code,
    ledger_row,
    read_rows,
)
from gateway.observe.ledger_report import COLUMNS
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.recorder import Recorder
from gateway.observe.rolling import RollingRegistry
from tests.support.clock import FakeClock

DAY = 86400.0


def labels(request_id: str = "r1", **kw: object) -> RequestLabels:
    base: dict[str, object] = {
        "request_id": request_id,
        "method": "POST",
        "path": "/v1/chat/completions",
        "lane": "interactive",
        "upstream": "mini",
        "model": "llama3",
        "client": "alice",
        "queue_s": 0.0125,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    return RequestLabels(**{**base, **kw})


def record(status: int = 200, error: str | None = None) -> RequestRecord:
    return RequestRecord(
        ttft_s=0.25,
        gap_max_s=0.04,
        gap_p95_s=0.03,
        duration_s=1.5,
        prompt_tokens=12,
        completion_tokens=34,
        tokens_estimated=False,
        chunks=40,
        status=status,
        error=error,
    )


def ledger(tmp_path: Path, clock: FakeClock, **kw: object) -> RequestLedger:
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite")
    return RequestLedger(store, retention_days=14, wall_clock=clock, **kw)


def test_row_holds_names_numbers_and_codes() -> None:
    row = dict(zip(COLUMNS, ledger_row(labels(), record(), 1700000000.0), strict=True))
    assert row == {
        "ts": 1700000000.0,
        "request_id": "r1",
        "client": "alice",
        "lane": "interactive",
        "model": "llama3",
        "upstream": "mini",
        "path": "/v1/chat/completions",
        "status": 200,
        "error": None,
        "queue_ms": 12.5,
        "ttft_ms": 250.0,
        "gap_max_ms": 40.0,
        "duration_ms": 1500.0,
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "preemptions": 0,
        "preempted_ms": 0.0,
        "preempted_tokens": 0,
    }


def test_row_holds_what_preemption_threw_away() -> None:
    preempted = labels(preemptions=2, preempted_s=1.25, preempted_tokens=40)
    row = dict(zip(COLUMNS, ledger_row(preempted, record(), 1.0), strict=True))
    assert (row["preemptions"], row["preempted_ms"], row["preempted_tokens"]) == (2, 1250.0, 40)


def test_a_ledger_from_before_trace_ids_gains_the_columns(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "ledger.sqlite")
    before = COLUMNS[: COLUMNS.index("trace_id")]  # the first columns a ledger ever had
    old.execute(f"CREATE TABLE requests ({', '.join(before)})")
    old.execute(f"INSERT INTO requests VALUES ({', '.join('?' * len(before))})", (1,) * 15)
    old.commit()
    old.close()
    store = SqliteLedgerStore(tmp_path / "ledger.sqlite")
    store.write([ledger_row(labels("new", preemptions=1), record(), 2.0)])
    store.close()
    rows = read_rows(tmp_path / "ledger.sqlite", 0)
    trace, preemptions = COLUMNS.index("trace_id"), COLUMNS.index("preemptions")
    assert [row[trace] for row in rows] == [None, "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert [row[preemptions] for row in rows] == [0, 1]  # old rows: never preempted


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (None, None),
        ("lane_queue_full", "lane_queue_full"),
        ("client_disconnected", "client_disconnected"),
        ("ConnectError: [Errno 111] Connection refused", "ConnectError"),
        # an upstream's free text (which could quote a prompt) is not kept
        ("the prompt 'tell me a secret' is too long", OTHER_ERROR),
        ("x" * 200, "x" * 64),
    ],
)
def test_error_codes(error: str | None, code: str | None) -> None:
    assert error_code(error) == code


async def test_rows_are_written_in_batches_and_readable(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY)
    service = ledger(tmp_path, clock)
    await service.start()
    for i in range(3):
        service.append(labels(f"r{i}"), record())
    assert read_rows(tmp_path / "ledger.sqlite", 0) == []  # nothing written until a flush
    await service.flush()
    rows = read_rows(tmp_path / "ledger.sqlite", 0)
    assert [r[1] for r in rows] == ["r0", "r1", "r2"]
    service.append(labels("last"), record(429, "lane_queue_full"))
    await service.stop()  # the final flush
    rows = read_rows(tmp_path / "ledger.sqlite", 0)
    assert rows[-1][1:] == ledger_row(labels("last"), record(429, "lane_queue_full"), 0)[1:]
    mode = stat.S_IMODE((tmp_path / "ledger.sqlite").stat().st_mode)
    assert mode == 0o600


async def test_retention_prunes_at_start_and_once_an_hour(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY)
    first = ledger(tmp_path, clock)
    await first.start()
    for name, age_days in (("20d", 20), ("15d", 15), ("almost", 14 - 0.25 / 24), ("1d", 1)):
        clock.now = 100 * DAY - age_days * DAY
        first.append(labels(name), record())
    await first.stop()
    clock.now = 100 * DAY
    path = tmp_path / "ledger.sqlite"
    assert len(read_rows(path, 0)) == 4  # a clock in the past pruned nothing

    second = ledger(tmp_path, clock)
    await second.start()  # prunes at start: 20 and 15 days are past 14
    assert [r[1] for r in read_rows(path, 0)] == ["almost", "1d"]

    clock.now = 100 * DAY + 1800  # "almost" is now past 14 days, but the next prune is at +1 h
    await second.flush()
    assert [r[1] for r in read_rows(path, 0)] == ["almost", "1d"]
    clock.now = 100 * DAY + 3600
    await second.flush()
    assert [r[1] for r in read_rows(path, 0)] == ["1d"]
    await second.stop()


async def test_full_buffer_drops_the_oldest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(100 * DAY)
    service = ledger(tmp_path, clock, max_buffered=5)
    for i in range(8):
        service.append(labels(f"r{i}"), record())
    assert service.dropped == 3
    with caplog.at_level(logging.WARNING, "lanegate.ledger"):
        await service.flush_logged()
    assert "dropped 3 rows" in caplog.text
    assert [r[1] for r in read_rows(tmp_path / "ledger.sqlite", 0)] == [
        f"r{i}" for i in range(3, 8)
    ]
    await service.stop()


async def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY)
    service = ledger(tmp_path, clock, max_buffered=4)
    await service.start()
    service.append(labels("a"), record())
    service.append(labels("b"), record())
    # Another process holds the write lock: the flush fails and must not lose a and b.
    blocker = sqlite3.connect(tmp_path / "ledger.sqlite", timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    service.store._db.execute("PRAGMA busy_timeout=0")
    await service.flush_logged()
    for name in "cde":
        service.append(labels(name), record())
    assert service.dropped == 1  # a + b back in front of c, d, e: the oldest (a) goes
    blocker.rollback()
    blocker.close()
    await service.flush()
    assert [r[1] for r in read_rows(tmp_path / "ledger.sqlite", 0)] == ["b", "c", "d", "e"]
    await service.stop()


def test_recorder_feeds_the_ledger_and_logs_client_and_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = ledger(tmp_path, FakeClock(100 * DAY))
    recorder = Recorder(RollingRegistry(), access_log_enabled=True, ledger=service)
    with caplog.at_level(logging.INFO, "lanegate.access"):
        recorder.record(labels(), record(), now=5.0)
    assert service._buffer[0][0] == labels()
    line = json.loads(caplog.records[-1].getMessage())
    assert line["client"] == "alice" and line["queue_ms"] == 12.5
    assert line["status"] == 200 and line["ttft_ms"] == 250.0
    service.store.close()
