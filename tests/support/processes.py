"""Start real lanegate processes (gateway, simulator) on free loopback ports, for tests.

`start_simulator` and `start_gateway` are the two everyone needs; `start_lanegate` starts any
other subcommand (agent, ladder...). Each waits until the process answers on its ready path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO
from tests.support.policies import write_policy as write_policy  # moved; re-exported

# A quick simulator: 5 ms to the first token, then one token every 5 ms.
FAST_SIM = ("--profile", "fast", "--ttft-ms", "5", "--chunk-interval-ms", "5")
AGENT_KEY = "agent-secret"  # the key of the `agent` fixture's signals


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    policy: Path | None = None  # the policy file a gateway serves

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_lanegate(
    name: str,
    args: list[str],
    *,
    ready_path: str,
    port: int | None = None,
    log_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> Service:
    port = port or free_port()
    log_path = log_dir / f"{name}-{port}.log"
    state = log_dir / f"state-{name}-{port}"
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LANEGATE_STATE_DIR": str(state),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args, "--port", str(port)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    service = Service(name, port, process, log_path)
    wait_ready(service, ready_path, timeout)
    return service


def wait_ready(service: Service, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited early:\n{service.log()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(service.url + path, timeout=1) as response,
        ):
            if response.status < 500:
                return
        time.sleep(0.05)
    service.stop(signal.SIGKILL)
    raise RuntimeError(f"{service.name} not ready after {timeout}s:\n{service.log()}")


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()


def start_simulator(name: str, log_dir: Path, *args: str, port: int | None = None) -> Service:
    """`lanegate simulate ARGS`, ready once `/health` answers."""
    return start_lanegate(
        name, ["simulate", *args], ready_path="/health", log_dir=log_dir, port=port
    )


def start_gateway(
    name: str,
    policy: Path,
    log_dir: Path,
    *,
    env: dict[str, str] | None = None,
    state: Path | None = None,
    port: int | None = None,
    ready_path: str = "/healthz",
) -> Service:
    """`lanegate serve --policy POLICY` on loopback; `state` is its LANEGATE_STATE_DIR (by
    default a fresh folder under `log_dir`)."""
    full_env = {**(env or {}), **({"LANEGATE_STATE_DIR": str(state)} if state else {})}
    args = ["serve", "--policy", str(policy), "--host", "127.0.0.1"]
    service = start_lanegate(
        name, args, ready_path=ready_path, port=port, log_dir=log_dir, env=full_env
    )
    service.policy = policy
    return service
