"""A real simulator (uvicorn, uvloop, httptools) on an ephemeral loopback port, for tests.

Each server runs in a background thread with its own event loop, so tests drive it with real
sockets and real SDKs; TestClient would buffer whole bodies and hide TTFT and disconnects.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from gateway.tools.simulator.engine import GIB, ModelSpec, Profile
from gateway.tools.simulator.server import create_app

MODELS = (
    ModelSpec("llama3:8b", quantization_level="Q4_0", size_bytes=4_661_224_676),
    ModelSpec(
        "nomic-embed-text:latest",
        family="nomic-bert",
        parameter_size="137M",
        quantization_level="F16",
        size_bytes=274_302_450,
        capabilities=("embedding",),
    ),
)

# Fast enough for a quick suite, slow enough that a queued request visibly waits: with two
# streams decoding, one step takes 2**0.5 / 150 s, about 9.4 ms.
BATCHING = Profile(
    name="test-batching",
    mode="batching",
    models=MODELS,
    seed=11,
    slots=2,
    max_queue=3,
    decode_tps=150.0,
    prefill_tps=20_000.0,
    batch_alpha=0.5,
    default_max_tokens=8,
    embedding_dim=16,
    ram_budget_bytes=15 * GIB,
)

FIXED = Profile(
    name="test-fixed",
    mode="fixed",
    models=(ModelSpec("sim-fast"),),
    accept_any_model=True,
    seed=3,
    ttft_ms=30.0,
    chunk_interval_ms=2.0,
    default_max_tokens=6,
    embedding_dim=8,
)


class SimServer:
    """One simulator app served by uvicorn in a daemon thread."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(profile),
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("simulator did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/sim/stats").json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.url + "/sim/reset").raise_for_status()


@contextlib.contextmanager
def running(profile: Profile) -> Iterator[SimServer]:
    server = SimServer(profile)
    server.start()
    try:
        yield server
    finally:
        server.stop()
