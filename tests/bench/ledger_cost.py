"""What the request ledger costs: `Recorder.record` with and without it, and a flush.

    python -m tests.bench.ledger_cost [--runs 7] [--requests 20000]

Two numbers matter (docs/performance.md, "Ledger cost"):
- on the request path, µs per `Recorder.record` call, with the ledger and without, with the
  JSON access log off and on (written through the serve log format to /dev/null, so the
  formatting is paid but no terminal is);
- off the request path, ms of worker-thread time to build and write 1000 rows in one
  transaction (`SqliteLedgerStore.write_pending`, the call `RequestLedger.flush` makes via
  asyncio.to_thread), on a ledger file that already holds 100,000 rows.
Each figure is the median of `--runs` runs. Not a test: timings go here, not into asserts.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from gateway.observe.ledger import RequestLedger, SqliteLedgerStore, ledger_row
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.recorder import Recorder, access_log
from gateway.observe.rolling import RollingRegistry


def _inputs(n: int) -> list[tuple[RequestLabels, RequestRecord]]:
    lanes = ("interactive", "batch", "heartbeat")
    return [
        (
            RequestLabels(
                f"req-{i:08d}-{'x' * 24}",
                "POST",
                "/v1/chat/completions",
                lanes[i % 3],
                "mini",
                "llama3.1:8b",
                client="alice",
                queue_s=0.0004 * (i % 7),
            ),
            RequestRecord(
                ttft_s=0.2 + (i % 50) / 1000,
                gap_max_s=0.03,
                gap_p95_s=0.02,
                duration_s=1.4,
                prompt_tokens=120,
                completion_tokens=256,
                tokens_estimated=False,
                chunks=257,
                status=200 if i % 20 else 429,
                error=None if i % 20 else "lane_queue_full",
            ),
        )
        for i in range(n)
    ]


def _record_us(recorder: Recorder, inputs: list[tuple[RequestLabels, RequestRecord]]) -> float:
    record = recorder.record
    start = time.perf_counter_ns()
    for i, (labels, rec) in enumerate(inputs):
        record(labels, rec, 1000.0 + i * 0.001)
    return (time.perf_counter_ns() - start) / len(inputs) / 1000


def append_us(runs: int, n: int, directory: Path) -> float:
    """Median µs per `RequestLedger.append` alone: the whole of the ledger's per-request work."""
    inputs = _inputs(n)
    store = SqliteLedgerStore(directory / "append.sqlite")
    times = []
    for _ in range(runs):
        ledger = RequestLedger(store, retention_days=14, max_buffered=n)
        append = ledger.append
        start = time.perf_counter_ns()
        for labels, rec in inputs:
            append(labels, rec)
        times.append((time.perf_counter_ns() - start) / n / 1000)
    store.close()
    return statistics.median(times)


def request_path(runs: int, n: int, directory: Path) -> dict[str, tuple[float, float, float]]:
    """Median µs per record call, {access log off/on: (without, with ledger, median of the
    paired per-run differences)}; the pairs make a noisy machine hit both sides alike."""
    inputs = _inputs(n)
    store = SqliteLedgerStore(directory / "path.sqlite")
    results: dict[str, tuple[float, float, float]] = {}
    for log_on in (False, True):
        without, with_ledger = [], []
        for _ in range(runs):  # interleaved, so drift hits both sides alike
            ledger = RequestLedger(store, retention_days=14, max_buffered=n)
            plain = Recorder(RollingRegistry(), access_log_enabled=log_on)
            led = Recorder(RollingRegistry(), access_log_enabled=log_on, ledger=ledger)
            without.append(_record_us(plain, inputs))
            with_ledger.append(_record_us(led, inputs))
        name = "access log on" if log_on else "access log off"
        added = [b - a for a, b in zip(without, with_ledger, strict=True)]
        results[name] = (
            statistics.median(without),
            statistics.median(with_ledger),
            statistics.median(added),
        )
    store.close()
    return results


def build_ms_per_1000(runs: int) -> float:
    """Median ms to turn 1000 pending entries into rows: the pure-Python part of a flush,
    which holds the GIL (SQLite's own work releases it)."""
    pending = [(labels, rec, 1.0) for labels, rec in _inputs(1000)]
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        [ledger_row(*item) for item in pending]
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def flush_ms_per_1000(runs: int, directory: Path, prefill: int = 100_000) -> float:
    """Median ms to build and write 1000 rows in one transaction, on a file with `prefill`
    rows."""
    store = SqliteLedgerStore(directory / "flush.sqlite")
    now = time.time()
    pending = [(labels, rec, now) for labels, rec in _inputs(1000)]
    for _ in range(prefill // 1000):
        store.write_pending(pending, None)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        store.write_pending(pending, None)
        times.append((time.perf_counter_ns() - start) / 1e6)
    store.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    # The access log as `lanegate serve` writes it (format included), into /dev/null.
    handler = logging.FileHandler("/dev/null")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    with tempfile.TemporaryDirectory() as tmp:
        path = request_path(args.runs, args.requests, Path(tmp))
        append = append_us(args.runs, args.requests, Path(tmp))
        flush = flush_ms_per_1000(args.runs, Path(tmp))
        build = build_ms_per_1000(args.runs)
    print(f"Recorder.record, µs per request (median of {args.runs} runs of {args.requests}):")
    for name, (without, with_ledger, added) in path.items():
        print(
            f"  {name:15} without ledger {without:6.2f}  with ledger {with_ledger:6.2f}  "
            f"ledger adds (median of paired differences) {added:5.2f}"
        )
    print(f"RequestLedger.append alone: {append:.2f} µs per request")
    print(f"flush: {flush:.2f} ms of worker-thread time per 1000 rows (median of {args.runs})")
    print(f"  of which building the rows (holds the GIL): {build:.2f} ms")


if __name__ == "__main__":
    main()
