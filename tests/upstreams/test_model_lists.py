"""Model and slot discovery parsers on recorded real responses and on garbage."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.upstreams import model_lists
from tests.conftest import DATA

# Ollama's documented /api/tags and /api/ps examples (docs/api.md), trimmed.
OLLAMA_TAGS = {
    "models": [
        {
            "name": "deepseek-r1:latest",
            "model": "deepseek-r1:latest",
            "modified_at": "2025-05-10T08:06:48.639712648-07:00",
            "size": 4683075271,
            "digest": "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163",
            "details": {
                "format": "gguf",
                "family": "qwen2",
                "parameter_size": "7.6B",
                "quantization_level": "Q4_K_M",
            },
        },
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        },
    ]
}
OLLAMA_PS = {
    "models": [
        {
            "name": "mistral:latest",
            "model": "mistral:latest",
            "size": 5137025024,
            "size_vram": 5137025024,
        }
    ]
}
# LM Studio's documented /api/v0/models example, trimmed.
LMSTUDIO = {
    "object": "list",
    "data": [
        {"id": "qwen2-vl-7b-instruct", "object": "model", "type": "vlm", "state": "not-loaded"},
        {
            "id": "meta-llama-3.1-8b-instruct",
            "object": "model",
            "type": "llm",
            "state": "loaded",
            "max_context_length": 131072,
        },
        {"id": "text-embedding-nomic-embed-text-v1.5", "type": "embeddings", "state": "not-loaded"},
    ],
}


def test_ollama_tags_and_resident() -> None:
    inventory = model_lists.ollama_tags(OLLAMA_TAGS)
    assert inventory.models == {"deepseek-r1:latest", "llama3.2:latest"}
    assert inventory.digests["llama3.2:latest"].startswith("a80c4f17")
    assert model_lists.ollama_resident(OLLAMA_PS) == {"mistral:latest"}


def test_lmstudio_loaded_state() -> None:
    inventory = model_lists.lmstudio_models(LMSTUDIO)
    assert len(inventory.models) == 3
    assert inventory.resident == {"meta-llama-3.1-8b-instruct"}


def test_llama_server_models_and_slots_recorded() -> None:
    models = json.loads((DATA / "responses" / "llama-server__v1_models.json").read_text())
    inventory = model_lists.openai_models(models, all_resident=True)
    assert inventory.models == {"models/tiny-llama.gguf"} == inventory.resident
    slots = json.loads((DATA / "responses" / "llama-server__slots_idle.json").read_text())
    assert model_lists.llamacpp_slots(slots) == 4


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(json_values)
def test_garbage_never_raises(obj: Any) -> None:
    model_lists.ollama_tags(obj)
    model_lists.ollama_resident(obj)
    model_lists.lmstudio_models(obj)
    model_lists.openai_models(obj)
    model_lists.llamacpp_slots(obj)
