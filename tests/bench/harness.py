"""Benchmark plumbing: processes under test, CPU/RSS accounting, interleaved rounds, stats.

Every comparison is measured direct and through the gateway *interleaved in the same run*
(A, B, A, B ...), and reported as the median over rounds of per-round differences and
ratios, so a noisy shared machine still gives a fair comparison.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.bench.loadgen import Sample
from tests.support.policies import write_policy
from tests.support.processes import REPO, Service, free_port, start_lanegate


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Responder:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def start_responder(*, ttft_ms: float, interval_ms: float, chunks: int) -> Responder:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tests.bench.responder",
        "--port",
        str(port),
        "--ttft-ms",
        str(ttft_ms),
        "--interval-ms",
        str(interval_ms),
        "--chunks",
        str(chunks),
    ]
    process = subprocess.Popen(argv, cwd=REPO)
    wait_port(port)
    return Responder(port, process)


def wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_gateway(
    upstream_url: str, workdir: Path, *, name: str = "gateway", env: dict[str, str] | None = None
) -> Service:
    policy = write_policy(
        workdir / f"{name}.yaml",
        [{"name": "bench", "kind": "openai", "base_url": upstream_url, "max_concurrency": 64}],
    )
    # Default logging (info): the JSON access log line per request is part of the cost measured.
    args = ["serve", "--policy", str(policy), "--host", "127.0.0.1"]
    return start_lanegate(
        name,
        args,
        ready_path="/healthz",
        log_dir=workdir,
        env={"LANEGATE_ACCESS_LOG": "true", **(env or {})},
    )


class CpuMeter:
    """CPU seconds used by each watched process (and this one) between start and stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.processes["loadgen"] = psutil.Process(os.getpid())

    def _times(self) -> dict[str, float]:
        return {name: sum(p.cpu_times()[:2]) for name, p in self.processes.items()}

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        result: dict[str, float] = {}
        before, started = self._times(), time.perf_counter()
        yield result
        after, wall = self._times(), time.perf_counter() - started
        result["wall_s"] = wall
        for name in before:
            result[f"{name}_cpu_s"] = after[name] - before[name]
            result[f"{name}_core_share"] = (after[name] - before[name]) / wall


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def summarize(samples: Sequence[Sample], wall: float) -> dict[str, float]:
    ok = [s for s in samples if s.status == 200]
    ttft = [s.ttft for s in ok if s.ttft is not None]
    e2e = [s.e2e for s in ok]
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "req_per_s": len(ok) / wall if wall else float("nan"),
        "ttft_p50_ms": percentile(ttft, 0.5) * 1000,
        "ttft_p99_ms": percentile(ttft, 0.99) * 1000,
        "e2e_p50_ms": percentile(e2e, 0.5) * 1000,
        "e2e_p99_ms": percentile(e2e, 0.99) * 1000,
    }


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
    }


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream responder {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://responder;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """nginx, the physical limit of a proxy here, if installed (Debian: /usr/sbin/nginx)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


def start_nginx(upstream: Responder, workdir: Path) -> Responder | None:
    """nginx as a plain reverse proxy (proxy_buffering off, pooled keep-alive) to `upstream`."""
    binary = nginx_binary()
    if binary is None:
        return None
    port = free_port()
    home = workdir / "nginx"
    home.mkdir(exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=home, upstream_port=upstream.port, port=port))
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(home)], cwd=home)
    proxy = Responder(port, process)
    wait_port(port)
    return proxy
