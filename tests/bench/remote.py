"""The simulated M2 mini with the M4 Max remote pool: S7 (offload arms) and S9 (the demo's
first minute).

S7 runs S5's mixed load (tests/bench/mixed.py) against a local M2-mini simulator with an
M4 Max simulator as the remote pool, one arm after another:
- ``no_batch``: the chats and heartbeats alone, straight to the local simulator: the floor
  no scheduler of batch can go below (two chat users overlap each other, and heartbeats);
- ``direct``: straight to the local simulator, nothing in front (batch's reference);
- ``lanes_only`` / ``offload``: the demo policy's lanes, without and with a sustained-breach
  offload section (the arms S7 always ran);
- ``early_offload``: issue #17's policy: no hand caps (the lanes' priorities only, batch
  offloadable), the remote pool, and an empty ``offload: {}`` section, so the defaults apply:
  adaptive limits, and early offload (batch goes remote at once when it would slow a chat).
Each gateway arm first runs a few chats alone, as a machine does before batch starts. Reported
per arm: chat p95 over the phase and over the chats that began >= 5 s after batch started
(``settled``), each over the baseline p95; batch completed/s and its share of ``direct``'s;
and issue #17's two pass/fail rows for ``early_offload``.

S9 starts the demo as `make run` does (`lanegate demo`: both simulators and the gateway with
the packaged demo policy), drives S7's load at it for a minute with no warm-up (a new user's
first minute), and reads `/admin/status` (what the dashboard draws) at the end of the minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import isolation, loadgen, mixed
from tests.bench.figures import dashboard_view, ratio
from tests.bench.harness import percentile
from tests.bench.mixed import MixedLoad
from tests.support.processes import REPO, Service, free_port, start_lanegate

S7_ARMS = ("no_batch", "direct", "lanes_only", "offload", "early_offload")
MODEL = "llama3.1:8b"
CHAT_RATIO_GOAL = 2.0  # issue #17: chat p95 <= 2x baseline from 5 s after batch starts
DEMO_KEY = "bench-demo-admin"


def _simulator(name: str, profile: str, workdir: Path) -> Service:
    args = ["simulate", "--profile", profile]
    return start_lanegate(name, args, ready_path="/health", log_dir=workdir)


def early_offload_policy(local_url: str, remote_yaml: str) -> str:
    """Priorities only (no caps), batch offloadable, the remote pool, offload's defaults."""
    lanes = isolation.PRIORITIES_ONLY.replace(
        "queue_timeout: 120}", "queue_timeout: 120, offloadable: true}"
    )
    text = isolation.policy_text(local_url, "ollama", 4, lanes)
    local = "max_concurrency: 4}\n"
    signals = f"max_concurrency: 4, signals_url: '{local_url}/sim/signals'}}\n"
    return text.replace(local, signals + remote_yaml, 1) + "offload: {}\n"


def _policies(workdir: Path, local: str, remote: str, base_p50: float) -> dict[str, Path]:
    remote_yaml = (
        f"  - {{name: m4, pool: remote, kind: ollama, base_url: '{remote}', max_concurrency: 8}}\n"
    )
    sustained = (
        f"\noffload: {{baseline_ttft: {base_p50:.4f}, p95_ratio: 3, sustain: 3, "
        "recover: 30, sample_interval: 1, min_samples: 3}\n"
    )
    paths = {}
    for name, offload in (("lanes_only", ""), ("offload", sustained)):
        path = mixed.demo_lanes_policy(workdir / f"s7-{name}.yaml", local, 4, "ollama", remote_yaml)
        path.write_text(path.read_text() + offload)
        paths[name] = path
    paths["early_offload"] = workdir / "s7-early_offload.yaml"
    paths["early_offload"].write_text(early_offload_policy(local, remote_yaml))
    return paths


async def _gateway_arm(policy: Path, load: MixedLoad, workdir: Path) -> dict[str, Any]:
    gateway = mixed.start_gateway(policy, workdir)
    try:
        async with loadgen.session(1) as http:  # chats alone before batch, as in isolation.py
            url = gateway.url + mixed.CHAT
            await mixed.chats(http, url, load, isolation.WARM_CHATS, 0.1, user=8)
        data = await mixed.run_mixed(gateway.url, load)
        log = gateway.log()
    finally:
        gateway.stop()
    data["early_offloads"] = log.count("offload: early, lane batch goes remote")
    return data


async def s7_offload(workdir: Path, seconds: float) -> dict[str, Any]:
    local = _simulator("sim-m2-local", "m2-mini-16gb", workdir)
    remote = _simulator("sim-m4-remote", "m4-max-64gb", workdir)
    load = MixedLoad(model=MODEL, duration_s=seconds)
    result: dict[str, Any] = {"seconds_per_arm": seconds}
    try:
        base = await mixed.baseline(local.url, load, 20)
        base_p95 = percentile(base, 0.95)
        result["baseline_ttft_p95_ms"] = base_p95 * 1000
        policies = _policies(workdir, local.url, remote.url, percentile(base, 0.5))
        for arm in S7_ARMS:
            alone = {"batch_in_flight": 0} if arm == "no_batch" else {}
            own = mixed.fresh(load, **alone)
            if arm in ("no_batch", "direct"):
                data = await mixed.run_mixed(local.url, own)
            else:
                data = await _gateway_arm(policies[arm], own, workdir)
            result[arm] = data | chat_ratios(data, base_p95 * 1000)
            await asyncio.sleep(2)
    finally:
        remote.stop()
        local.stop()
    direct = result["direct"]["batch_per_s"]
    for arm in S7_ARMS:
        result[arm]["batch_share_of_direct"] = ratio(result[arm]["batch_per_s"], direct)
    result["criteria"] = criteria(result["early_offload"])
    # What batch adds to chats beyond the load's own floor (no batch at all): not the issue's
    # row, which is against the single-stream baseline, but what a scheduler of batch controls.
    floor = result["no_batch"]["settled_ttft_p95_ms"]
    for arm in S7_ARMS:
        result[arm]["settled_p95_over_no_batch"] = ratio(
            result[arm]["settled_ttft_p95_ms"], floor or 0
        )
    return result


def chat_ratios(data: dict[str, Any], base_p95_ms: float) -> dict[str, Any]:
    return {
        "interactive_p95_ratio": ratio(data["interactive_ttft_p95_ms"], base_p95_ms),
        "settled_p95_ratio": ratio(data["settled_ttft_p95_ms"], base_p95_ms),
    }


def criteria(arm: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #17's S7 rows for one arm (None: not measured)."""
    settled, share = arm.get("settled_p95_ratio"), arm.get("batch_share_of_direct")
    return {
        "chat_p95_within_2x_from_5s": None if settled is None else settled <= CHAT_RATIO_GOAL,
        "batch_at_least_direct": None if share is None else share >= 1.0,
    }


async def s9_demo(workdir: Path, seconds: float = 60.0) -> dict[str, Any]:
    """`lanegate demo` under S7's load for `seconds`, its dashboard read at the end."""
    port, sims = free_port(), (free_port(), free_port())
    log_path = workdir / "s9-demo.log"
    demo = _start_demo(port, sims, log_path)
    try:
        if not _ready(f"http://127.0.0.1:{port}/readyz", demo, 60):
            return {"error": "lanegate demo did not become ready", "log": _tail(log_path)}
        load = MixedLoad(model=MODEL, duration_s=seconds, remote_upstream="sim-m4max")
        base = await mixed.baseline(f"http://127.0.0.1:{sims[0]}", load, 20)  # the mini, direct
        base_p95_ms = percentile(base, 0.95) * 1000
        gateway = f"http://127.0.0.1:{port}"
        data, status = await asyncio.gather(
            mixed.run_mixed(gateway, load), _status_after(gateway, seconds)
        )
        preempted = isolation.preemption(
            await isolation.scrape(gateway), data["batch_generated_tokens"]
        )
    finally:
        _stop_demo(demo)
    view = dashboard_view(status)
    log = log_path.read_text(errors="replace")
    return {
        "seconds": seconds,
        "baseline_ttft_p95_ms": base_p95_ms,
        "client": data | chat_ratios(data, base_p95_ms),
        "dashboard": view,
        "dashboard_ttft_p95_ratio": ratio(view["ttft_p95_ms"], base_p95_ms),
        "early_offloads": log.count("offload: early, lane batch goes remote"),
        "limit_changes": log.count("adaptive limit: lane"),
        "preemption": preempted,  # the demo policy's batch is preemptible
    }


def _start_demo(port: int, sims: tuple[int, int], log_path: Path) -> subprocess.Popen[bytes]:
    """`make run`'s command (`lanegate demo --port PORT`), on free ports of our own."""
    env = {**os.environ, "LANEGATE_ADMIN_KEY": DEMO_KEY, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "gateway", "demo", "--port", str(port)]
    argv += ["--sim-ports", f"{sims[0]},{sims[1]}"]
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1),
        ):
            return True
        time.sleep(0.2)
    return False


async def _status_after(gateway: str, seconds: float) -> dict[str, Any]:
    """`/admin/status` (the dashboard's data) `seconds` from now, with the admin key."""
    await asyncio.sleep(seconds)
    headers = {"authorization": f"Bearer {DEMO_KEY}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(gateway + "/admin/status", headers=headers) as response,
    ):
        response.raise_for_status()
        document: dict[str, Any] = await response.json()
        return document


def _stop_demo(demo: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the demo stops its gateway and simulators itself (gateway/commands/demo.py)."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)
    try:
        demo.wait(timeout=60)
    except subprocess.TimeoutExpired:
        demo.kill()
        demo.wait()


def _tail(path: Path, lines: int = 20) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]
