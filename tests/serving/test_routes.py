"""Route table: what is relayed, with which error shape; anything else is not."""

from __future__ import annotations

import pytest

from gateway.errors import ErrorShape
from gateway.serving.routes import RELAY_ROUTES, is_relay_path, match_route


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/chat/completions", "chat"),
        ("POST", "/v1/completions", "completions"),
        ("POST", "/v1/embeddings", "embeddings"),
        ("POST", "/v1/responses", "responses"),
        ("GET", "/v1/models", "models"),
        ("GET", "/v1/models/llama3.1:8b", "model"),
        ("GET", "/v1/models/models/tiny-llama.gguf", "model"),  # llama.cpp ids have slashes
        ("POST", "/api/chat", "ollama_chat"),
        ("POST", "/api/generate", "ollama_generate"),
        ("POST", "/api/embed", "ollama_embed"),
        ("POST", "/api/show", "ollama_show"),
        ("GET", "/api/tags", "ollama_tags"),
        ("GET", "/api/ps", "ollama_ps"),
        ("GET", "/api/version", "ollama_version"),
        ("GET", "/", "ollama_root"),
        ("HEAD", "/", "ollama_root_head"),
    ],
)
def test_relayed_routes(method: str, path: str, name: str) -> None:
    route = match_route(method, path)
    assert route is not None and route.name == name
    expected = ErrorShape.OLLAMA if path.startswith("/api/") or path == "/" else ErrorShape.OPENAI
    assert route.shape is expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/"),
        ("POST", "/api/pull"),  # model management is not passed through
        ("DELETE", "/api/delete"),
        ("GET", "/v1/files"),
        ("GET", "/healthz"),
        ("POST", "/v1/chat/completions/"),
        ("GET", "/v1/models/../../api/pull"),  # an upstream would resolve the dots
        ("GET", "/v1/models/./x"),
        ("GET", "/v1/models/a/.."),
    ],
)
def test_everything_else_is_not_relayed(method: str, path: str) -> None:
    assert match_route(method, path) is None


def test_wrong_method_on_a_relay_path_is_recognised() -> None:
    assert is_relay_path("/v1/chat/completions")
    assert is_relay_path("/v1/models/x")
    assert not is_relay_path("/v1/nope")
    assert not is_relay_path("/v1/models/../x")  # a 404 like any unknown path
    assert match_route("GET", "/v1/models/org/model.v1..gguf") is not None  # dots inside: fine


def test_inference_routes_need_a_model() -> None:
    for route in RELAY_ROUTES:
        if route.inference:
            assert route.needs_model and route.method == "POST"
    native = {r.name for r in RELAY_ROUTES if r.stream_default}
    assert native == {"ollama_chat", "ollama_generate"}
