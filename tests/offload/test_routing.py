"""Offload end to end: a simulated mini is pushed past its memory knee by batch load; new
batch requests move to the remote simulator within sustain + a sampling interval, interactive
stays local, and batch returns after `recover` once the load is gone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.support.processes import Service, start_gateway, start_simulator
from tests.support.scripted_upstream import Script, ScriptedUpstream
from tests.support.threads import Worker, check_all

# A mini whose KV cache overflows its RAM budget after ~100 tokens in flight: the knee.
PROFILES = """
profiles:
  tight-mini:
    mode: batching
    seed: 1
    slots: 8
    max_queue: 100
    decode_tps: 300
    prefill_tps: 20000
    batch_alpha: 0.6
    default_max_tokens: 16
    memory_total_bytes: 16GiB
    base_memory_bytes: 4GiB
    weights_bytes: 4GiB
    kv_bytes_per_token: 1048576
    ram_budget_bytes: 8.1GiB
    swap_floor_bytes: 1GiB
    swap_slowdown_per_gib: 0.05
    critical_swap_bytes: 100GiB
    warn_fraction: 0.999
    models:
      - name: llama3.1:8b
"""
ADMIN_ENV = {"T_ADMIN_KEY": "admin-secret"}
CHUNK = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
HANGING = Script(chunks=[CHUNK], after_chunks="hang")  # a stream that holds its slot
QUICK = Script(chunks=[CHUNK, b"data: [DONE]\n\n"])
PROMPT = "Summarise this report. " * 100  # ~2,300 characters, ~600 tokens of KV each


def test_batch_moves_to_remote_and_back(output_dir: Path, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES)
    mini = start_simulator(
        "sim-tight", output_dir, "--profiles", str(profiles), "--profile", "tight-mini"
    )
    remote = start_simulator("sim-remote", output_dir, "--profile", "fast")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
upstreams:
  - {{name: mini, kind: ollama, base_url: '{mini.url}', max_concurrency: 8,
      signals_url: '{mini.url}/sim/signals'}}
  - {{name: m4, kind: ollama, pool: remote, base_url: '{remote.url}', max_concurrency: 8}}
admin_key: env:T_ADMIN_KEY
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 8, reserved: 2}}
  - {{name: batch, priority: 10, max_concurrency: 6, offloadable: true, queue_timeout: 60}}
classify: {{default_lane: interactive, anonymous_lanes: [interactive, batch]}}
offload: {{swap_growth_gb: 0.05, pressure_level: critical, sustain: 1, recover: 2,
           sample_interval: 0.25, min_samples: 100000}}
# The sustained-breach state machine alone: early offload (with adaptive limits) would keep
# batch remote for chat_idle after the test's one chat (tests/offload/test_early.py).
slo: {{adaptive_limits: false}}
""")
    gateway = start_gateway("gw-offload", policy, output_dir, env=ADMIN_ENV)
    batch_body = {"model": "llama3.1:8b", "max_tokens": 48, "prompt": PROMPT, "stream": False}
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def batch_worker() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            while not stop.is_set():
                response = http.post(
                    "/v1/completions", json=batch_body, headers={"x-lane": "batch"}
                )
                assert response.status_code == 200, response.text
                seen.append((time.monotonic(), response.headers["x-lanegate-upstream"]))

    admin = {"authorization": "Bearer admin-secret"}
    workers = [Worker(batch_worker, name=f"batch-{i}") for i in range(6)]
    try:
        _drive(gateway, workers, seen, stop, admin, batch_body)
    finally:
        stop.set()
        gateway.stop()
        remote.stop()
        mini.stop()


def _drive(
    gateway: Service,
    workers: list[Worker],
    seen: list[tuple[float, str]],
    stop: threading.Event,
    admin: dict[str, str],
    batch_body: dict[str, object],
) -> None:
    """Load until batch moves, check interactive stays, unload until batch comes home."""
    try:
        assert httpx.get(f"{gateway.url}/admin/offload", headers=admin).json()["state"] == "local"
        started = time.monotonic()
        for worker in workers:
            worker.start()
        while time.monotonic() - started < 8 and not any(u == "m4" for _, u in seen):
            for worker in workers:
                worker.raise_failure()  # a refused batch request fails here, with its reason
            time.sleep(0.1)
        moved = [t for t, u in seen if u == "m4"]
        assert moved, "batch never moved to the remote pool"
        assert moved[0] - started < 1 + 0.25 + 3  # sustain + one interval + the knee building
        chat = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            timeout=30,
            json={
                "model": "llama3.1:8b",
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert chat.headers["x-lanegate-upstream"] == "mini"  # interactive never moves
        status = httpx.get(f"{gateway.url}/admin/offload", headers=admin).json()
        assert status["mode"] == "auto" and status["reason"]
        moved_line = next(line for line in gateway.log().splitlines() if "now offloading" in line)
        assert "swap" in moved_line  # the log says which metric, how much, for how long
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    check_all(workers, 0)  # every batch request the workers sent was answered 200
    # Load gone: the mini's swap drains, and after `recover` batch comes home.
    deadline = time.monotonic() + 10
    upstream = "m4"
    while time.monotonic() < deadline and upstream != "mini":
        time.sleep(0.5)
        response = httpx.post(
            f"{gateway.url}/v1/completions",
            timeout=30,
            headers={"x-lane": "batch"},
            json={**batch_body, "prompt": "hi", "max_tokens": 2},
        )
        upstream = response.headers["x-lanegate-upstream"]
    assert upstream == "mini"
    assert "offload: now offloading" in gateway.log()
    assert "offload: now local" in gateway.log()


def test_offloaded_requests_hold_remote_slots_not_local_ones(
    output_dir: Path, tmp_path: Path
) -> None:
    """Two batch streams run on the remote pool; the mini's two slots stay free for chat."""
    with (
        ScriptedUpstream(lambda request: QUICK) as mini,
        ScriptedUpstream(lambda request: HANGING) as m4,
    ):
        gateway = _two_pools("gw-remote-slots", mini, m4, 2, tmp_path, output_dir)
        admin = {"authorization": "Bearer admin-secret"}
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            forced = httpx.post(
                f"{gateway.url}/admin/offload", json={"mode": "force-offload"}, headers=admin
            )
            assert forced.json()["state"] == "offloading"
            with httpx.Client(base_url=gateway.url, timeout=10) as http:
                streams, readers = [], []
                for _ in range(2):  # both batch streams start on the remote pool and stay open
                    stream = http.stream(
                        "POST", "/v1/chat/completions", json=body, headers={"x-lane": "batch"}
                    )
                    response = stream.__enter__()
                    streams.append(stream)
                    assert response.headers["x-lanegate-upstream"] == "m4"
                    readers.append(response.iter_raw())  # kept: a dropped one closes the stream
                    next(readers[-1])
                # Had they held the mini's two slots, chat would wait 2 s and get a 429.
                for _ in range(2):
                    with httpx.Client(base_url=gateway.url, timeout=10) as chat:
                        answer = chat.post("/v1/chat/completions", json=body)
                    assert answer.status_code == 200, answer.text
                    assert answer.headers["x-lanegate-upstream"] == "mini"
                for stream in streams:
                    stream.__exit__(None, None, None)
        finally:
            gateway.stop()


def test_request_queued_locally_before_the_move_goes_remote_and_frees_its_local_slot(
    output_dir: Path, tmp_path: Path
) -> None:
    with (
        ScriptedUpstream(lambda request: HANGING if b"hold" in request.body else QUICK) as mini,
        ScriptedUpstream(lambda request: HANGING) as m4,
    ):
        gateway = _two_pools("gw-hop", mini, m4, 1, tmp_path, output_dir)

        def chat(text: str) -> dict[str, object]:
            return {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}

        batch_upstream: list[str] = []
        batch_started = threading.Event()
        release_batch = threading.Event()

        def batch() -> None:
            with (
                httpx.Client(base_url=gateway.url, timeout=20) as http,
                http.stream(
                    "POST", "/v1/chat/completions", json=chat("go"), headers={"x-lane": "batch"}
                ) as response,
            ):
                assert response.status_code == 200, response.read()
                batch_upstream.append(response.headers["x-lanegate-upstream"])
                batch_started.set()
                release_batch.wait(20)

        try:
            with httpx.Client(base_url=gateway.url, timeout=20) as http:
                with http.stream("POST", "/v1/chat/completions", json=chat("hold")) as held:
                    assert held.headers["x-lanegate-upstream"] == "mini"
                    worker = Worker(batch, name="batch")
                    worker.start()  # queues: the mini's one slot is taken
                    time.sleep(0.3)
                    assert not batch_started.is_set()
                    worker.raise_failure()
                    admin = {"authorization": "Bearer admin-secret"}
                    http.post("/admin/offload", json={"mode": "force-offload"}, headers=admin)
                # The chat ended: the batch waiter takes the local slot, hops to m4, frees it.
                started = batch_started.wait(10)
                worker.raise_failure()
                assert started
                assert batch_upstream == ["m4"]
                answer = http.post("/v1/chat/completions", json=chat("hi again"))
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-lanegate-upstream"] == "mini"
        finally:
            release_batch.set()
            gateway.stop()
        worker.check(20)


def _two_pools(
    name: str,
    mini: ScriptedUpstream,
    m4: ScriptedUpstream,
    slots: int,
    tmp_path: Path,
    output_dir: Path,
) -> Service:
    """A gateway over a mini and a remote m4 of `slots` slots each; chat waits 2 s at most."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
upstreams:
  - {{name: mini, kind: openai, base_url: '{mini.url}', max_concurrency: {slots}}}
  - {{name: m4, kind: openai, pool: remote, base_url: '{m4.url}', max_concurrency: {slots},
      timeouts: {{idle: 60}}}}
admin_key: env:T_ADMIN_KEY
lanes:
  - {{name: interactive, priority: 100, max_concurrency: {slots}, queue_timeout: 2}}
  - {{name: batch, priority: 10, max_concurrency: {slots}, offloadable: true, queue_timeout: 10}}
classify: {{default_lane: interactive, anonymous_lanes: [interactive, batch]}}
offload: {{sample_interval: 0.25}}
# Moves by the admin's mode only: early offload (with adaptive limits) would send batch remote
# at once beside the held chat, before it could queue locally (tests/offload/test_early.py).
slo: {{adaptive_limits: false}}
""")
    return start_gateway(name, policy, output_dir, env=ADMIN_ENV)
