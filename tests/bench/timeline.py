"""Where S1's added TTFT goes: a syscall timeline of direct, lanegate and nginx requests.

`perf trace` records the read/write syscalls of the load generator, the proxy and the
responder while S1's request (one stream at a time, upstream TTFT 20 ms) runs direct,
through lanegate and through nginx. For each request the timeline gives, on the request side:
the client's write → the proxy's read (the kernel waking the proxy), → the proxy's write
upstream (the proxy's own work: for lanegate uvicorn, then lanegate's code) → the upstream's
read; and on the way back: the upstream's first chunk → the proxy's read → its write → the
client's read. Direct requests have neither hop. Medians over all requests.

    sudo python -m tests.bench.timeline [--requests 30]   # needs perf (linux-perf)

The proxy's own time per request is also what a profile inside it measures; this adds the
kernel's part, which a proxy in C (nginx) pays the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bench import harness, loadgen
from tests.bench.run import CHAT, _body

_CALL = re.compile(
    r"^\s*([\d.]+) \(\s*([\d.]*)\s*(?:ms)?\):\s+\S+/(\d+)\s+"
    r"(?:\.\.\. \[continued\]: )?(\w+)\(.*?\)\)?\s+=\s+(-?\d+)"
)
_WRITES = ("write", "writev", "sendto", "sendmsg")
_READS = ("read", "readv", "recvfrom", "recvmsg")


@dataclass(frozen=True, slots=True)
class Call:
    start_ms: float
    end_ms: float
    who: str
    name: str
    size: int


def parse(text: str, names: dict[int, str]) -> list[Call]:
    """perf trace's lines → calls of the named processes (a call split in two counts once)."""
    calls = []
    for line in text.splitlines():
        match = _CALL.match(line)
        if match is None:  # an unfinished call: its "[continued]" line has the duration
            continue
        start, duration, pid, name, size = match.groups()
        who = names.get(int(pid))
        if who is not None and (name in _WRITES or name in _READS):
            begin = float(start)
            calls.append(Call(begin, begin + float(duration or 0), who, name, int(size)))
    return sorted(calls, key=lambda c: c.start_ms)


def _next(calls: list[Call], after: int, who: str, names: tuple[str, ...], least: int = 1) -> int:
    for index in range(after + 1, len(calls)):
        call = calls[index]
        if call.who == who and call.name in names and call.size >= least:
            return index
    raise LookupError(f"no {names} by {who} after call {after}")


def spans(
    calls: list[Call], request_bytes: int, chunk_bytes: int
) -> dict[str, list[dict[str, float]]]:
    """Per request, by path taken: the hops of the request and of its first chunk (ms)."""
    rows: dict[str, list[dict[str, float]]] = {}
    index = -1
    while True:
        try:
            sent = _next(calls, index, "client", _WRITES, request_bytes)
            upstream_read = _next(calls, sent, "responder", _READS, request_bytes - 16)
            first_chunk = _next(calls, upstream_read, "responder", _WRITES, chunk_bytes)
            received = _next(calls, first_chunk, "client", _READS)
        except LookupError:
            return rows
        hops = [c for c in calls[sent + 1 : upstream_read] if c.who == "proxy" and c.size >= 100]
        back = [c for c in calls[first_chunk + 1 : received] if c.who == "proxy"]
        row = {
            "request": calls[upstream_read].end_ms - calls[sent].start_ms,
            "first_chunk": calls[received].end_ms - calls[first_chunk].start_ms,
        }
        path = "direct"
        if hops and back:
            path = "proxied"
            in_read, in_write = hops[0], next(c for c in hops if c.name in _WRITES)
            out_read, out_write = back[0], next(c for c in back if c.name in _WRITES)
            row |= {
                "wake_proxy": in_read.end_ms - calls[sent].start_ms,
                "proxy_request_work": in_write.start_ms - in_read.end_ms,
                "wake_upstream": calls[upstream_read].end_ms - in_write.start_ms,
                "wake_proxy_chunk": out_read.end_ms - calls[first_chunk].start_ms,
                "proxy_chunk_work": out_write.start_ms - out_read.end_ms,
                "wake_client": calls[received].end_ms - out_write.start_ms,
            }
        rows.setdefault(path, []).append(row)
        index = received


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


async def _run(requests: int, workdir: Path) -> dict[str, dict[str, float]]:
    upstream = harness.start_responder(ttft_ms=20, interval_ms=5, chunks=4)
    gateway = harness.start_gateway(upstream.url, workdir, name="timeline")
    nginx = harness.start_nginx(upstream, workdir)
    proxies = {"lanegate": (gateway.url, gateway.process.pid)}
    if nginx is not None:
        proxies["nginx"] = (nginx.url, _child(nginx.process.pid))
    body = _body(True)
    result: dict[str, dict[str, float]] = {}
    try:
        async with loadgen.session(1) as http:
            for url, _ in [(upstream.url, 0), *proxies.values()]:
                await loadgen.sequential(http, url + CHAT, body, True, 10)  # warm-up
            for label, (url, pid) in [("direct", (upstream.url, 0)), *proxies.items()]:
                names = {os.getpid(): "client", upstream.process.pid: "responder"}
                if pid:
                    names[pid] = "proxy"
                out = workdir / f"{label}.trace"
                trace = _start_trace(out, names)
                await asyncio.sleep(1.5)  # perf attaches
                await loadgen.sequential(http, url + CHAT, body, True, requests)
                await asyncio.sleep(0.3)
                trace.send_signal(signal.SIGINT)
                trace.wait(10)
                rows = spans(parse(out.read_text(), names), len(body) + 100, 100)
                result[label] = medians(rows.get("proxied" if pid else "direct", []))
    finally:
        for service in (gateway, nginx, upstream):
            if service is not None:
                service.stop()
    return result


def _child(pid: int) -> int:
    """nginx's worker (the process that relays), from its master's pid."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=True)
    return int(found.stdout.split()[0])


def _start_trace(out: Path, names: dict[int, str]) -> subprocess.Popen[bytes]:
    pids = ",".join(str(pid) for pid in names)
    events = "read,write,readv,writev,recvfrom,sendto,recvmsg,sendmsg"
    argv = ["perf", "trace", "-o", str(out), "-p", pids, "-e", events]
    return subprocess.Popen(argv, stderr=subprocess.DEVNULL)


def report(result: dict[str, dict[str, float]]) -> str:
    direct = result["direct"]
    keys = [
        "wake_proxy",
        "proxy_request_work",
        "wake_upstream",
        "wake_proxy_chunk",
        "proxy_chunk_work",
        "wake_client",
    ]
    proxies = [name for name in result if name != "direct"]
    lines = [
        "| span (median, ms) | " + " | ".join(proxies) + " |",
        "|---" * (len(proxies) + 1) + "|",
    ]
    lines += [
        f"| {key} | " + " | ".join(f"{result[p][key]:.3f}" for p in proxies) + " |" for key in keys
    ]
    for side in ("request", "first_chunk"):
        added = " | ".join(f"{result[p][side] - direct[side]:.3f}" for p in proxies)
        lines.append(f"| added on the {side.replace('_', ' ')} side | {added} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        raise SystemExit("needs perf (apt install linux-perf) and root")
    with tempfile.TemporaryDirectory() as workdir:
        print(report(asyncio.run(_run(args.requests, Path(workdir)))))


if __name__ == "__main__":
    main()
