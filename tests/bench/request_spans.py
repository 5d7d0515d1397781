"""Where a gateway process spends one request before it writes upstream, span by span.

Runs `lanegate serve` with timestamps wrapped around the request path (uvicorn's
`data_received`, the app call, body read, classification, admission, the upstream request
build and its write), sends S1's request (one stream at a time, upstream TTFT 20 ms, so the
process sleeps between requests as in S1) and prints the median of each span. The wrappers
cost a little themselves, so the spans are upper bounds; `tests.bench.timeline` measures the
same work from outside, with `perf`.

    python -m tests.bench.request_spans [--requests 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import harness, loadgen
from tests.bench.run import CHAT, _body
from tests.support.policies import write_policy
from tests.support.processes import REPO, free_port

SPANS = (
    ("bytes_in", "app_called", "uvicorn: bytes read → httptools parse → scope, task → app"),
    ("app_called", "body_read", "route, request id, auth, body read and JSON parse"),
    ("body_read", "classified", "classify"),
    ("classified", "admitted", "budget reserve + lane gate admission"),
    ("admitted", "building", "admission headers, upstream pick, measurement, timer"),
    ("building", "writing", "request bytes built, pooled connection taken → write"),
    ("bytes_in", "writing", "total"),
)


def _instrument(out: Path) -> None:
    """Wrap the request path of this process's gateway with timestamps (the `--serve` side)."""
    import gateway.app as app
    import gateway.ops.http_protocol as protocol
    import gateway.serving.flow as flow
    import gateway.serving.relay as relay
    import gateway.upstreams.http11 as upstream

    clock = time.perf_counter
    rows: list[dict[str, float]] = []
    now: dict[str, float] = {}

    def after(owner: Any, name: str, mark: str, *, before: bool = False) -> None:
        inner: Callable[..., Any] = getattr(owner, name)
        if asyncio.iscoroutinefunction(inner):

            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                if before:
                    now[mark] = clock()
                result = await inner(*args, **kwargs)
                if not before:
                    now[mark] = clock()
                return result

            setattr(owner, name, wrapped_async)
            return

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if before:
                now[mark] = clock()
            result = inner(*args, **kwargs)
            if not before:
                now[mark] = clock()
            return result

        setattr(owner, name, wrapped)

    received = protocol.LimitedHttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if len(data) > 200:  # a request, not a stray byte
            now.clear()
            now["bytes_in"] = clock()
        received(self, data)

    protocol.LimitedHttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]
    call = app.Gateway.__call__

    async def called(self: Any, scope: Any, receive: Any, send: Any) -> None:
        # Its own signature: uvicorn tells an ASGI 3 app from a factory by it.
        now["app_called"] = clock()
        await call(self, scope, receive, send)

    app.Gateway.__call__ = called  # type: ignore[method-assign]
    after(relay.Relay, "read", "body_read")
    after(flow.RequestFlow, "_lane", "classified")
    after(flow.RequestFlow, "_admit", "admitted")
    after(upstream.LeanUpstream, "_request", "building", before=True)
    exchange = upstream.LeanUpstream._exchange

    async def write(self: Any, *args: Any) -> Any:
        now["writing"] = clock()
        if "bytes_in" in now:
            rows.append(dict(now))
        return await exchange(self, *args)

    upstream.LeanUpstream._exchange = write  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, lambda *_: out.write_text(json.dumps(rows)))


async def _drive(requests: int, workdir: Path) -> list[dict[str, float]]:
    responder = harness.start_responder(ttft_ms=20, interval_ms=5, chunks=4)
    upstream = {"name": "bench", "kind": "openai", "base_url": responder.url, "max_concurrency": 64}
    policy = write_policy(workdir / "policy.yaml", [upstream])
    port, out = free_port(), workdir / "spans.json"
    gateway = _start_instrumented(policy, port, out)
    try:
        harness.wait_port(port)
        url = f"http://127.0.0.1:{port}{CHAT}"
        async with loadgen.session(1) as http:
            await loadgen.sequential(http, url, _body(True), True, 20)  # warm-up
            await loadgen.sequential(http, url, _body(True), True, requests)
        gateway.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.5)
        rows: list[dict[str, float]] = json.loads(out.read_text())
    finally:
        gateway.terminate()
        gateway.wait(10)
        responder.stop()
    return rows[20:]


def _start_instrumented(policy: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.bench.request_spans", "--serve", str(out), "--"]
    argv += ["serve", "--policy", str(policy), "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "LANEGATE_ACCESS_LOG": "true"}
    return subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.DEVNULL)


def report(rows: list[dict[str, float]]) -> str:
    lines = ["| span | median µs | p90 µs |", "|---|---|---|"]
    for start, end, what in SPANS:
        values = sorted((row[end] - row[start]) * 1e6 for row in rows)
        p90 = values[int(0.9 * (len(values) - 1))]
        lines.append(f"| {what} | {statistics.median(values):.0f} | {p90:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the gateway's side
    parser.add_argument("lanegate_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        from gateway.cli import main as lanegate

        _instrument(args.serve)
        sys.argv = ["lanegate", *args.lanegate_args]
        lanegate()
        return
    with tempfile.TemporaryDirectory() as workdir:
        print(report(asyncio.run(_drive(args.requests, Path(workdir)))))


if __name__ == "__main__":
    main()
