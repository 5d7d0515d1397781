"""`lanegate init`: what each local server's answers mean, and the policy written for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy import load_policy, load_policy_text
from gateway.policy.starter import Found, identify, lane_caps, render
from tests.support.paths import DATA, REPO
from tests.support.processes import free_port, running, start_simulator
from tests.support.scripted_upstream import Script, ScriptedUpstream

RESPONSES = DATA / "responses"
SLOTS = json.loads((RESPONSES / "llama-server__slots_idle.json").read_text())
LLAMA_MODELS = json.loads((RESPONSES / "llama-server__v1_models.json").read_text())


def test_llama_server_is_told_by_its_slots_and_reports_them() -> None:
    found = identify("port8080", "http://x", {"/slots": SLOTS, "/v1/models": LLAMA_MODELS})
    assert found == Found("llamacpp", "http://x", 4, ("models/tiny-llama.gguf",))


def test_llama_server_without_slots_still_lists_models_ollama_style() -> None:
    found = identify("port8080", "http://x", {"/slots": None, "/v1/models": LLAMA_MODELS})
    assert found is not None and found.kind == "llamacpp" and found.slots is None


def test_mlx_lm_answers_only_the_openai_list() -> None:
    listing = {"object": "list", "data": [{"id": "mlx-community/Qwen3-4B-4bit"}]}
    found = identify("port8080", "http://x", {"/slots": None, "/v1/models": listing})
    assert found == Found("mlx", "http://x", None, ("mlx-community/Qwen3-4B-4bit",))


def test_ollama_and_lm_studio_by_their_own_endpoints() -> None:
    tags = {"models": [{"name": "llama3.1:8b", "digest": "ab"}]}
    ollama = identify("ollama", "u", {"/api/version": {"version": "0.12.0"}, "/api/tags": tags})
    assert ollama == Found("ollama", "u", None, ("llama3.1:8b",))
    listing = {"data": [{"id": "qwen3-8b", "state": "loaded"}]}
    assert identify("lmstudio", "u", {"/api/v0/models": listing}) == Found(
        "lmstudio", "u", None, ("qwen3-8b",)
    )


@pytest.mark.parametrize("answer", [None, [], "text", {"version": 3}, {"error": "nope"}])
def test_odd_answers_are_nobody(answer: object) -> None:
    for probe, paths in (
        ("ollama", ["/api/version"]),
        ("lmstudio", ["/api/v0/models"]),
        ("port8080", ["/slots", "/v1/models"]),
    ):
        assert identify(probe, "u", dict.fromkeys(paths, answer)) is None


@given(st.integers(min_value=1, max_value=512))
def test_lanes_fit_any_slot_count(slots: int) -> None:
    interactive, reserved, batch = lane_caps(slots)
    assert interactive == slots and reserved <= 1 and batch >= 1
    assert batch <= max(1, slots - reserved)


servers = st.builds(
    Found,
    kind=st.sampled_from(["ollama", "lmstudio", "llamacpp", "mlx"]),
    base_url=st.sampled_from(["http://127.0.0.1:11434", "http://127.0.0.1:8080"]),
    slots=st.none() | st.integers(min_value=1, max_value=64),
    models=st.lists(st.text("abc:.-/0123456789", min_size=1, max_size=20), max_size=12).map(tuple),
)


@given(st.lists(servers, max_size=3, unique_by=lambda s: s.kind))
def test_every_starter_policy_loads_as_serve_would_load_it(found: list[Found]) -> None:
    text = render(found, {"ollama": "http://127.0.0.1:11434"}, "/home/u/.lanegate/policy.yaml")
    policy = load_policy_text(text, "starter")
    assert {u.kind.value for u in policy.upstreams} == {s.kind for s in found} or (
        not found and [u.kind.value for u in policy.upstreams] == ["ollama"]
    )
    assert all(u.pool == "local" for u in policy.upstreams)


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
