"""`lanegate init`'s starter policy (pure): which server answered, from recorded answers, and
lanes that fit any slot count in a policy that loads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy import load_policy_text
from gateway.policy.starter import Found, identify, lane_caps, render
from tests.support.paths import DATA

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
