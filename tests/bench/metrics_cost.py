"""What /metrics costs per request: `Recorder.record` with and without the tally, a scrape,
and the per-chunk measurement path (which the metrics must not slow down).

    python -m tests.bench.metrics_cost [--requests N] [--chunks N]

Prints microseconds per request (and per chunk); nothing is asserted (timing goes to
benchmarks, not tests). Numbers are quoted in docs/performance.md, "Metrics cost".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from gateway.observe.measurement import RequestLabels, RequestMeasurement, RequestRecord
from gateway.observe.recorder import Recorder
from gateway.observe.request_metrics import RequestTally
from gateway.observe.rolling import RollingRegistry
from gateway.serving.stream_parser import Api

CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}\n\n'
)


def streamed_record(chunks: int) -> RequestRecord:
    """A realistic record: `chunks` events ~20 ms apart with some jitter."""
    m = RequestMeasurement(Api.CHAT, 0.0)
    now = 0.25
    for i in range(chunks):
        m.on_chunk(CHUNK, now)
        now += 0.02 + 0.003 * ((i * 7919) % 11) / 10
    return m.finish(now, status=200)


def per_call_us(fn: Callable[[int], None], n: int, rounds: int = 9) -> float:
    """The fastest of several rounds (mean µs per call): the least disturbed by other load."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - start) / n * 1e6)
    return min(samples)


def paired_us(
    a: Callable[[int], None], b: Callable[[int], None], n: int, rounds: int = 15
) -> tuple[float, float]:
    """Like per_call_us for two variants, their rounds interleaved so both see the same load."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, samples in zip((a, b), times, strict=True):
            start = time.perf_counter()
            fn(n)
            samples.append((time.perf_counter() - start) / n * 1e6)
    return min(times[0]), min(times[1])


def record_loop(recorder: Recorder, record: RequestRecord) -> Callable[[int], None]:
    labels = [
        RequestLabels(f"req-{i}", "POST", "/v1/chat/completions", "chat", "mini", m, 0.002)
        for i, m in enumerate(("llama3.1:8b", "qwen2.5:7b", "gemma3:4b", "phi4"))
    ]

    def run(n: int) -> None:
        for i in range(n):
            recorder.record(labels[i & 3], record, 1000.0 + i * 1e-3)

    return run


def chunk_loop(chunks: int) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n // chunks):
            m = RequestMeasurement(Api.CHAT, 0.0)
            now = 0.25
            for _ in range(chunks):
                m.on_chunk(CHUNK, now)
                now += 0.02
            m.finish(now, status=200)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=200, help="chunks per streamed request")
    args = parser.parse_args()
    record = streamed_record(args.chunks)
    gap_buckets = record.gaps.bucket_count if record.gaps else 0
    plain = Recorder(RollingRegistry(), access_log_enabled=False)
    tally = RequestTally()
    metered = Recorder(RollingRegistry(), access_log_enabled=False, tally=tally)
    without, with_tally = paired_us(
        record_loop(plain, record), record_loop(metered, record), args.requests
    )
    observe = per_call_us(
        lambda n: [tally.observe("chat", "mini", "llama3", 0.002, record) for _ in range(n)],
        args.requests,
    )
    chunk = per_call_us(chunk_loop(args.chunks), args.requests * 5)
    library, library_gaps = _client_library_us(record, args.chunks, args.requests)
    print(f"streamed record: {args.chunks} chunks, {gap_buckets} occupied gap buckets")
    print(f"Recorder.record without metrics: {without:6.2f} µs/request")
    print(f"Recorder.record with metrics:    {with_tally:6.2f} µs/request")
    print(f"  difference:                    {with_tally - without:6.2f} µs/request")
    print(f"RequestTally.observe alone:      {observe:6.2f} µs/request")
    print(f"prometheus_client objects, same series without gaps: {library:6.2f} µs/request")
    print(f"  ... and each gap observed:     {library_gaps:6.2f} µs/request")
    print(f"measurement per chunk:           {chunk:6.3f} µs/chunk (scan + gap)")
    scrape_us = _scrape_us(tally)
    print(f"one scrape (exposition text):    {scrape_us:6.0f} µs")


def _client_library_us(record: RequestRecord, chunks: int, n: int) -> tuple[float, float]:
    """The straightforward alternative: prometheus_client Counter/Histogram per request."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from gateway.observe.request_metrics import GAP_BUCKETS, LATENCY_BUCKETS, QUEUE_BUCKETS

    registry = CollectorRegistry()
    pair = ["lane", "upstream"]
    requests = Counter("r", "", ["lane", "upstream", "family", "status"], registry=registry)
    tokens = Counter("t", "", [*pair, "kind"], registry=registry)
    ttft = Histogram("ttft", "", pair, buckets=LATENCY_BUCKETS, registry=registry)
    duration = Histogram("d", "", pair, buckets=LATENCY_BUCKETS, registry=registry)
    queue = Histogram("q", "", ["lane"], buckets=QUEUE_BUCKETS, registry=registry)
    gap = Histogram("g", "", pair, buckets=GAP_BUCKETS, registry=registry)
    gaps = [0.02] * (chunks - 2)

    def one(with_gaps: bool) -> None:
        requests.labels("chat", "mini", "llama", "2xx").inc()
        queue.labels("chat").observe(0.002)
        duration.labels("chat", "mini").observe(record.duration_s)
        ttft.labels("chat", "mini").observe(record.ttft_s or 0.0)
        tokens.labels("chat", "mini", "completion").inc(record.completion_tokens or 0)
        tokens.labels("chat", "mini", "prompt").inc(10)
        if with_gaps:
            series = gap.labels("chat", "mini")
            for value in gaps:
                series.observe(value)

    plain = per_call_us(lambda k: [one(False) for _ in range(k)], n)
    return plain, per_call_us(lambda k: [one(True) for _ in range(k)], n // 10)


def _scrape_us(tally: RequestTally) -> float:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.observe.metrics import request_families

    class Only:
        def collect(self):  # type: ignore[no-untyped-def]
            return request_families(tally)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Only())  # type: ignore[arg-type]
    return per_call_us(lambda n: [generate_latest(registry) for _ in range(n)], 200)


if __name__ == "__main__":
    main()
