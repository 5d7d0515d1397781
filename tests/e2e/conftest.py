"""Fixtures for the end-to-end suite: a real llama.cpp `llama-server` behind a real gateway.

The binary is built once from the llama-cpp-python sdist on PyPI and cached outside the clone
(`tests/engine/build_llama_server.sh`, ~4-5 min on 2 cores the first time, milliseconds
after). If it cannot be built because a tool is missing, every e2e test is skipped with a
message naming the tool; any other build failure is an error, never a silent skip.

Two engines, each with its own gateway in front (the gateway sends every request to its
first upstream, so one gateway per engine), both on one compute thread (see
`calibration.THREADS`: two threads on two shared cores collapse under any neighbour):
- `small` (over 1,000 tok/s decode): fidelity tests, where speed keeps the suite short;
- `large` (~60 tok/s decode): streams long enough to disconnect from or kill mid-way.
The test modules mark themselves `e2e`, with a per-test timeout that excludes fixture setup,
so a first build is not cut short by pytest-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.calibration import THREADS
from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model
from tests.support.loop_server import LoopServer
from tests.support.policies import write_policy
from tests.support.processes import Service, free_port, start_lanegate

SLOTS = 4


def missing_build_tools() -> list[str]:
    """What the llama-server build needs and this machine lacks (cmake is apt-installed when
    we are root on Debian/Ubuntu, so it only counts as missing elsewhere)."""
    missing = []
    can_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if shutil.which("cmake") is None and not can_apt:
        missing.append("cmake (>= 3.18)")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        missing.append("a C++17 compiler (g++)")
    return missing


@pytest.fixture(scope="session")
def llama_binary() -> Path:
    """The cached llama-server, built now if needed; skips (loudly) if it cannot be built."""
    try:
        return ensure_llama_server()
    except RuntimeError:
        missing = missing_build_tools()
        if not missing:
            raise  # the build script's stderr, above, says why
        pytest.skip(
            "e2e: cannot build llama.cpp's llama-server: missing "
            + ", ".join(missing)
            + " (run `make system-deps` as root, or install them)"
        )


class Engine:
    """A llama-server on a fixed loopback port that a test may kill and start again.

    The port stays the same across restarts, so the gateway's policy keeps pointing at it.
    """

    def __init__(self, binary: Path, size: str, log_dir: Path, *, ctx: int) -> None:
        self.binary = binary
        self.model = ensure_model(size)
        self.size = size
        self.ctx = ctx
        self.log_dir = log_dir
        self.port = free_port()
        self.starts = 0
        self.server: LlamaServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alias(self) -> str:
        return self.model.stem

    def start(self) -> Engine:
        self.starts += 1
        log = self.log_dir / f"llama-server-{self.size}-{self.port}-{self.starts}.log"
        server = LlamaServer(
            self.binary,
            self.model,
            port=self.port,
            parallel=SLOTS,
            ctx=self.ctx,
            threads=THREADS,
            log_path=log,
        )
        self.server = server.start()
        return self

    def kill(self) -> None:
        """SIGKILL: llama-server ignores SIGTERM while a stream is open (it does not drain)."""
        server, self.server = self.server, None
        if server is not None and server.proc is not None:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=10)
            server.stop()

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def slots(self) -> list[dict[str, Any]]:
        response = httpx.get(self.base_url + "/slots", timeout=5)
        response.raise_for_status()
        slots: list[dict[str, Any]] = response.json()
        return slots

    def busy_slots(self) -> int:
        return sum(1 for slot in self.slots() if slot.get("is_processing"))

    def wait_busy(self, count: int, timeout: float = 5.0) -> float:
        """Seconds until exactly `count` slots are processing; raises on timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.busy_slots() == count:
                return time.monotonic() - start
            time.sleep(0.005)
        raise AssertionError(f"{self.busy_slots()} slots busy after {timeout}s, wanted {count}")


def start_gateway(
    name: str, base_url: str, directory: Path, log_dir: Path, env: dict[str, str] | None = None
) -> Service:
    policy = write_policy(
        directory / f"policy-{name}.yaml",
        [
            {
                "name": name,
                "kind": "llamacpp",
                "base_url": base_url,
                "max_concurrency": SLOTS,
                "timeouts": {"connect": 2, "first_byte": 30, "idle": 10},
            }
        ],
    )
    return start_lanegate(
        f"gateway-e2e-{name}",
        ["serve", "--policy", str(policy), "--host", "127.0.0.1"],
        ready_path="/healthz",
        log_dir=log_dir,
        env=env,
    )


class ClosingUpstream(LoopServer):
    """llama-server's connection handling after a stream, made deterministic: each request
    gets a short SSE stream whose headers promise keep-alive, then the connection is closed
    `close_after_s` later without reading anything more. llama-server (cpp-httplib) closes
    0.01-3 ms after its last chunk; the delay here makes a client that reuses the connection
    lose that race every time instead of now and then."""

    def __init__(self, close_after_s: float = 0.1) -> None:
        super().__init__()
        self.close_after_s = close_after_s

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(_CLOSING_RESPONSE)
            await writer.drain()
            await asyncio.sleep(self.close_after_s)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_CLOSING_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Keep-Alive: timeout=5, max=100\r\n\r\n"
    + _chunk(b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n')
    + _chunk(b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)


@pytest.fixture(scope="session")
def small_engine(llama_binary: Path, output_dir: Path) -> Iterator[Engine]:
    engine = Engine(llama_binary, "small", output_dir, ctx=SLOTS * 1024).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def large_engine(llama_binary: Path, output_dir: Path) -> Iterator[Engine]:
    engine = Engine(llama_binary, "large", output_dir, ctx=SLOTS * 1024).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def small_gateway(
    small_engine: Engine, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("e2e")
    service = start_gateway("llama-small", small_engine.base_url, directory, output_dir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def large_gateway(
    large_engine: Engine, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("e2e")
    service = start_gateway("llama-large", large_engine.base_url, directory, output_dir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def closing_upstream() -> Iterator[ClosingUpstream]:
    with ClosingUpstream() as upstream:
        yield upstream


def access_record(gateway: Service, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The gateway's access-log line for one request (written once the response is done)."""
    deadline = time.monotonic() + timeout
    needle = f'"request_id":"{request_id}"'
    while time.monotonic() < deadline:
        for line in gateway.log().splitlines():
            if needle in line and "{" in line:
                record: dict[str, Any] = json.loads(line[line.index("{") :])
                return record
        time.sleep(0.02)
    raise AssertionError(f"no access-log line for {request_id}:\n{gateway.log()[-2000:]}")
