"""The gateway's own OpenAPI 3.1 document: every relay route and the control plane. Pure.

The request body schemas are documentation, minimal but real (required fields and types of
the OpenAI and Ollama APIs as lanegate reads them). The hot path does not validate with them:
it checks only what it needs (`request_body.parse_request`) and relays the rest unchanged, so
an upstream stays the judge of its own fields. The document exists for clients, and so that
a schema fuzzer (schemathesis, tests/reliability/test_hostile_input.py) has something to
generate from. Errors are described in the three shapes the gateway answers in (OpenAI,
Ollama, Anthropic).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import ErrorShape
from gateway.serving.routes import RELAY_ROUTES, Route

Schema = dict[str, Any]

_MESSAGES: Schema = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {"type": ["string", "array", "null"]},
        },
    },
}
_MODEL: Schema = {"type": "string", "minLength": 1, "description": "model name, or a lane alias"}
_STREAM: Schema = {"type": "boolean"}
_TOKENS: Schema = {"type": "integer", "minimum": 1}
_TEXTS: Schema = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_TEXT: Schema = {"type": "string"}
_ANTHROPIC_MESSAGES: Schema = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "enum": ["user", "assistant"]},
            "content": {"type": ["string", "array"]},
        },
    },
}
_OLLAMA_OPTIONS: Schema = {
    "type": "object",
    "properties": {"num_predict": {"type": "integer"}, "temperature": {"type": "number"}},
}


def _body(required: list[str], properties: Schema) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


BODIES: dict[str, Schema] = {
    "ChatCompletionRequest": _body(
        ["model", "messages"],
        {
            "model": _MODEL,
            "messages": _MESSAGES,
            "stream": _STREAM,
            "max_tokens": _TOKENS,
            "max_completion_tokens": _TOKENS,
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
        },
    ),
    "CompletionRequest": _body(
        ["model", "prompt"],
        {"model": _MODEL, "prompt": _TEXTS, "stream": _STREAM, "max_tokens": _TOKENS},
    ),
    "EmbeddingRequest": _body(["model", "input"], {"model": _MODEL, "input": _TEXTS}),
    "ResponseRequest": _body(
        ["model", "input"],
        {
            "model": _MODEL,
            "input": {"oneOf": [{"type": "string"}, _MESSAGES]},
            "stream": _STREAM,
            "max_output_tokens": _TOKENS,
        },
    ),
    "OllamaChatRequest": _body(
        ["model", "messages"],
        {"model": _MODEL, "messages": _MESSAGES, "stream": _STREAM, "options": _OLLAMA_OPTIONS},
    ),
    "OllamaGenerateRequest": _body(
        ["model", "prompt"],
        {
            "model": _MODEL,
            "prompt": {"type": "string"},
            "stream": _STREAM,
            "options": _OLLAMA_OPTIONS,
        },
    ),
    "OllamaEmbedRequest": _body(["model", "input"], {"model": _MODEL, "input": _TEXTS}),
    "OllamaShowRequest": _body(["model"], {"model": _MODEL}),
    "OllamaEmbeddingsRequest": _body(["model", "prompt"], {"model": _MODEL, "prompt": _TEXT}),
    "MessagesRequest": _body(
        ["model", "max_tokens", "messages"],
        {
            "model": _MODEL,
            "max_tokens": _TOKENS,
            "messages": _ANTHROPIC_MESSAGES,
            "system": {"type": ["string", "array"]},
            "tools": {"type": "array", "items": {"type": "object"}},
            "stream": _STREAM,
        },
    ),
    "CountTokensRequest": _body(
        ["model", "messages"], {"model": _MODEL, "messages": _ANTHROPIC_MESSAGES}
    ),
    "RerankRequest": _body(
        ["query", "documents"],
        {
            "model": _MODEL,
            "query": _TEXT,
            "documents": {"type": "array", "minItems": 1, "items": _TEXT},
            "top_n": _TOKENS,
        },
    ),
}

# Which body each POST route takes (by route name).
ROUTE_BODIES = {
    "chat": "ChatCompletionRequest",
    "completions": "CompletionRequest",
    "embeddings": "EmbeddingRequest",
    "responses": "ResponseRequest",
    "ollama_chat": "OllamaChatRequest",
    "ollama_generate": "OllamaGenerateRequest",
    "ollama_embed": "OllamaEmbedRequest",
    "ollama_show": "OllamaShowRequest",
    "ollama_embeddings": "OllamaEmbeddingsRequest",
    "messages": "MessagesRequest",
    "messages_count_tokens": "CountTokensRequest",
    "rerank": "RerankRequest",
    "reranking": "RerankRequest",
    "rerank_root": "RerankRequest",
}

ERRORS: dict[str, Schema] = {
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code", "param"],
                "properties": {
                    "message": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "code": {"type": ["string", "null"]},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
    "OllamaError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "minLength": 1}},
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}
_ERROR_SCHEMAS = {
    ErrorShape.OPENAI: "OpenAIError",
    ErrorShape.OLLAMA: "OllamaError",
    ErrorShape.ANTHROPIC: "AnthropicError",
}

# Statuses the gateway itself may answer on a relay route, and why.
_GATEWAY_STATUSES = {
    "400": "invalid body (not JSON, no model, `stream` not a boolean, budget never fits)",
    "401": "missing or unknown API key",
    "403": "lane or model not allowed for this client",
    "404": "unknown model or path, or no upstream serves the API (`apis` in the policy)",
    "413": "body over LANEGATE_MAX_BODY_BYTES",
    "429": "lane queue full or timed out, or token budget spent (with Retry-After)",
    "502": "upstream unreachable or failed (x-lanegate-upstream names it when known)",
    "503": "no upstream available, draining, or shed (with Retry-After)",
    "504": "upstream sent no first byte in time",
}


def openapi_document(version: str) -> Schema:
    """The OpenAPI 3.1 document for this gateway version."""
    paths: dict[str, Schema] = {}
    for route in RELAY_ROUTES:
        path = route.path + "{model}" if route.prefix else route.path
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    paths.update(_control_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lanegate",
            "version": version,
            "description": "A lane-aware gateway in front of local LLM servers: the OpenAI API "
            "under /v1 and Ollama's under /api, relayed to the policy's upstreams.",
        },
        "paths": paths,
        "components": {
            "schemas": {**BODIES, **ERRORS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Open gateways (no clients in the policy) take requests without a key.
        "security": [{}, {"bearer": []}],
    }


def _operation(route: Route) -> Schema:
    operation: Schema = {
        "operationId": route.name,
        "summary": f"{route.method} {route.path} relayed to an upstream",
        "responses": _responses(route.shape, streams=route.api is not None),
    }
    if route.prefix:
        operation["parameters"] = [
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    body = ROUTE_BODIES.get(route.name)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _responses(shape: ErrorShape, *, streams: bool) -> Schema:
    content: Schema = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
        content["application/x-ndjson"] = {"schema": {"type": "string"}}
    error = _ref(_ERROR_SCHEMAS[shape])
    responses: Schema = {"200": {"description": "the upstream's answer", "content": content}}
    for status, why in _GATEWAY_STATUSES.items():
        responses[status] = {
            "description": why,
            "content": {"application/json": {"schema": error}},
        }
    return responses


def _control_paths() -> dict[str, Schema]:
    ok: Schema = {"application/json": {"schema": {"type": "object"}}}
    error = {"application/json": {"schema": _ref("OpenAIError")}}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "security": [{}],
                "responses": {"200": {"description": "the process is up", "content": ok}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "security": [{}],
                "responses": {
                    "200": {"description": "an upstream answers", "content": ok},
                    "503": {"description": "no upstream answers", "content": ok},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [{}],
                "responses": {"200": {"description": "this document", "content": ok}},
            }
        },
        "/admin/offload": {
            "get": {
                "operationId": "offload_state",
                "security": [{"bearer": []}],
                "responses": {
                    "200": {"description": "the offload state", "content": ok},
                    "401": {"description": "no or wrong admin key", "content": error},
                    "403": {"description": "a client key", "content": error},
                    "404": {"description": "offload not configured", "content": error},
                },
            }
        },
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}
