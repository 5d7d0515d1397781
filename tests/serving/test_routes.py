"""Route table: what is relayed, with which error shape; anything else is not."""

from __future__ import annotations

import pytest

from gateway.errors import ErrorShape, shape_for_path
from gateway.serving.routes import (
    MANAGEMENT_PATHS,
    RELAY_ROUTES,
    is_relay_path,
    management_refusal,
    match_route,
)
from gateway.serving.stream_parser import Api


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
        ("POST", "/api/embeddings", "ollama_embeddings"),
        ("POST", "/v1/messages", "messages"),
        ("POST", "/v1/messages/count_tokens", "messages_count_tokens"),
        ("POST", "/v1/rerank", "rerank"),
        ("POST", "/v1/reranking", "reranking"),
        ("POST", "/rerank", "rerank_root"),
    ],
)
def test_relayed_routes(method: str, path: str, name: str) -> None:
    route = match_route(method, path)
    assert route is not None and route.name == name
    expected = ErrorShape.OLLAMA if path.startswith("/api/") or path == "/" else ErrorShape.OPENAI
    if path.startswith("/v1/messages"):
        expected = ErrorShape.ANTHROPIC
    assert route.shape is expected
    assert shape_for_path(path) is expected or path == "/"


@pytest.mark.parametrize(
    ("name", "family", "inference", "api"),
    [
        ("messages", "anthropic", True, Api.MESSAGES),
        ("messages_count_tokens", "anthropic", False, None),  # no slot, no budget
        ("rerank", "rerank", True, None),  # measured whole, like embeddings
        ("rerank_root", "rerank", True, None),
        ("ollama_embeddings", "ollama", True, None),
        ("chat", "openai", True, Api.CHAT),
        ("ollama_tags", "ollama", False, None),
    ],
)
def test_families_and_measurement(name: str, family: str, inference: bool, api: Api) -> None:
    route = next(r for r in RELAY_ROUTES if r.name == name)
    assert (route.family, route.inference, route.api) == (family, inference, api)


@pytest.mark.parametrize("path", sorted(MANAGEMENT_PATHS))
def test_model_management_gets_its_own_answer(path: str) -> None:
    assert match_route("POST", path) is None and not is_relay_path(path)
    message = management_refusal("POST", path)
    assert message is not None and f"POST {path}" in message
    assert f"ollama {MANAGEMENT_PATHS[path]}" in message and "host" in message
    assert management_refusal("POST", "/api/chat") is None


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
        if route.inference:  # llama-server reranks with its one model: no name needed
            assert (route.needs_model or route.rerank) and route.method == "POST"
    native = {r.name for r in RELAY_ROUTES if r.stream_default}
    assert native == {"ollama_chat", "ollama_generate"}
