"""The gateway's OpenAPI document (pure): every relay route is in it with the error shape its
path answers in, and every reference in it resolves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gateway.ops.openapi import openapi_document
from gateway.serving.routes import RELAY_ROUTES


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_relay_route_is_documented_once() -> None:
    paths = openapi_document("9.9.9")["paths"]
    for route in RELAY_ROUTES:
        path = route.path + "{model}" if route.prefix else route.path
        operation = paths[path][route.method.lower()]
        assert operation["operationId"] == route.name
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert {"/healthz", "/readyz", "/openapi.json", "/admin/offload"} <= set(paths)


def test_errors_are_described_in_the_shape_the_path_answers_in() -> None:
    paths = openapi_document("1")["paths"]
    ollama = paths["/api/chat"]["post"]["responses"]["429"]
    openai = paths["/v1/chat/completions"]["post"]["responses"]["429"]
    schema = "content", "application/json", "schema", "$ref"
    assert _get(ollama, schema) == "#/components/schemas/OllamaError"
    assert _get(openai, schema) == "#/components/schemas/OpenAIError"
    streamed = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in streamed


def test_every_reference_resolves_and_the_document_is_json() -> None:
    document = openapi_document("2.0.0")
    assert document["openapi"].startswith("3.1") and document["info"]["version"] == "2.0.0"
    schemas = document["components"]["schemas"]
    refs = set(_refs(document))
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    assert json.loads(json.dumps(document)) == document


def _get(node: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        node = node[key]
    return node
