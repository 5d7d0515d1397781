"""`lanegate init`: what each local server's answers mean, and the policy written for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.policy import load_policy
from tests.support.paths import DATA, REPO
from tests.support.processes import free_port, running, start_simulator
from tests.support.scripted_upstream import Script, ScriptedUpstream

RESPONSES = DATA / "responses"
SLOTS = json.loads((RESPONSES / "llama-server__slots_idle.json").read_text())
LLAMA_MODELS = json.loads((RESPONSES / "llama-server__v1_models.json").read_text())


def _init(home: Path, *probes: str) -> subprocess.CompletedProcess[str]:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    argv = ["init", "--probe", f"lmstudio={closed}", "--probe", f"port8080={closed}", *probes]
    return subprocess.run(
        [sys.executable, "-m", "gateway", *argv],
        cwd=REPO,
        env={"LANEGATE_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_finds_an_ollama_and_writes_a_policy_serve_loads(
    tmp_path: Path, output_dir: Path
) -> None:
    sim = start_simulator("init-sim", output_dir)
    with running(sim):
        done = _init(tmp_path, "--probe", f"ollama={sim.url}")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "policy.yaml"
    policy = load_policy(written)
    assert [(u.kind.value, u.base_url) for u in policy.upstreams] == [("ollama", sim.url)]
    assert "llama3.1:8b" in written.read_text()  # the simulator's models, in a comment
    assert written.stat().st_mode & 0o077 == 0


def test_init_keeps_an_existing_policy_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("mine\n")
    closed = f"ollama=http://127.0.0.1:{free_port()}"
    refused = _init(tmp_path, "--probe", closed)
    assert refused.returncode == 1 and "exists" in refused.stderr
    assert (tmp_path / "policy.yaml").read_text() == "mine\n"
    forced = _init(tmp_path, "--probe", closed, "--force")
    assert forced.returncode == 0 and "Nothing answered" in (tmp_path / "policy.yaml").read_text()


def test_a_llama_server_on_8080_gets_its_own_slot_count(tmp_path: Path) -> None:
    def answer(request: object) -> Script:
        path = getattr(request, "path", "")
        body = {"/slots": SLOTS, "/v1/models": LLAMA_MODELS}.get(path)
        if body is None:
            return Script(chunks=[b'{"error": "not found"}'], status=404)
        return Script(chunks=[json.dumps(body).encode()], content_type="application/json")

    closed = f"ollama=http://127.0.0.1:{free_port()}"
    with ScriptedUpstream(answer) as upstream:
        done = _init(tmp_path, "--probe", closed, "--probe", f"port8080={upstream.url}")
    assert done.returncode == 0, done.stderr
    policy = load_policy(tmp_path / "policy.yaml")
    [llama] = policy.upstreams
    assert (llama.kind.value, llama.max_concurrency) == ("llamacpp", 4)


def test_a_bad_probe_flag_is_refused(tmp_path: Path) -> None:
    done = _init(tmp_path, "--probe", "vllm=http://x")
    assert done.returncode == 2 and "KIND=http" in done.stderr


def test_serve_without_a_policy_points_at_init(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LANEGATE_")},
            "LANEGATE_HOME": str(tmp_path / "home"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"no policy at {tmp_path / 'home' / 'policy.yaml'}" in done.stderr
    assert "lanegate init" in done.stderr
