"""Which paths the gateway relays, and what each one means. Pure: a lookup over data.

Nothing is passed through blindly: a path not listed here is a 404 in the API's error shape.
The stream format of a route is decided by the upstream's response content type, not here;
`api` only tells the measurement which events carry generated output. `family` is the API a
route belongs to: an upstream serves the families its policy entry lists (`UpstreamSpec.apis`).
Ollama's model management paths are not relayed; they get their own answer
(`management_refusal`), not a 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import ErrorShape, NotFound
from gateway.policy.spec import ANTHROPIC_API, OLLAMA_API, OPENAI_API, RERANK_API, UpstreamSpec
from gateway.serving.stream_parser import Api


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: str
    path: str
    shape: ErrorShape
    api: Api | None = None  # None: no generated output to measure (metadata, embeddings)
    needs_model: bool = False
    inference: bool = False  # takes an upstream slot
    stream_default: bool = False  # Ollama's native API streams unless told not to
    prefix: bool = False  # path continues with a parameter (`/v1/models/{model}`)
    rerank: bool = False  # llama.cpp's rerank API (its own family, not the shape's)

    @property
    def family(self) -> str:
        """The API family it belongs to, i.e. which upstreams serve it."""
        return RERANK_API if self.rerank else _SHAPE_FAMILIES[self.shape]


_OPENAI = ErrorShape.OPENAI
_OLLAMA = ErrorShape.OLLAMA
_ANTHROPIC = ErrorShape.ANTHROPIC
_SHAPE_FAMILIES = {_OPENAI: OPENAI_API, _OLLAMA: OLLAMA_API, _ANTHROPIC: ANTHROPIC_API}

_RR = (("rerank", "/v1/rerank"), ("reranking", "/v1/reranking"), ("rerank_root", "/rerank"))

RELAY_ROUTES: tuple[Route, ...] = (
    Route("chat", "POST", "/v1/chat/completions", _OPENAI, Api.CHAT, True, True),
    Route("completions", "POST", "/v1/completions", _OPENAI, Api.COMPLETIONS, True, True),
    Route("embeddings", "POST", "/v1/embeddings", _OPENAI, None, True, True),
    Route("responses", "POST", "/v1/responses", _OPENAI, Api.RESPONSES, True, True),
    Route("models", "GET", "/v1/models", _OPENAI),
    Route("model", "GET", "/v1/models/", _OPENAI, prefix=True),
    Route("messages", "POST", "/v1/messages", _ANTHROPIC, Api.MESSAGES, True, True),
    # Counting tokens takes no generation slot (llama-server tokenizes on the HTTP thread).
    Route("messages_count_tokens", "POST", "/v1/messages/count_tokens", _ANTHROPIC, None, True),
    # Reranking runs the model (a slot on llama-server) and answers once: measured like
    # embeddings. llama.cpp's aliases are relayed to the same path name the client used.
    *(Route(name, "POST", path, _OPENAI, None, False, True, rerank=True) for name, path in _RR),
    Route("ollama_chat", "POST", "/api/chat", _OLLAMA, Api.OLLAMA_CHAT, True, True, True),
    Route(
        "ollama_generate",
        "POST",
        "/api/generate",
        _OLLAMA,
        Api.OLLAMA_GENERATE,
        True,
        True,
        True,
    ),
    Route("ollama_embed", "POST", "/api/embed", _OLLAMA, None, True, True),
    # The legacy single-prompt embeddings (the `ollama` library's `embeddings()`).
    Route("ollama_embeddings", "POST", "/api/embeddings", _OLLAMA, None, True, True),
    Route("ollama_show", "POST", "/api/show", _OLLAMA, None, True),
    Route("ollama_tags", "GET", "/api/tags", _OLLAMA),
    Route("ollama_ps", "GET", "/api/ps", _OLLAMA),
    Route("ollama_version", "GET", "/api/version", _OLLAMA),
    Route("ollama_root", "GET", "/", _OLLAMA),
    Route("ollama_root_head", "HEAD", "/", _OLLAMA),
)

# Ollama's model management: pulling, pushing, creating, copying and deleting models changes
# what every lane and client of the host shares (disk, which models exist), so it stays on the
# host's own port, for its operator; through the gateway it gets this answer on any method.
MANAGEMENT_PATHS = {
    "/api/pull": "pull",
    "/api/push": "push",
    "/api/create": "create",
    "/api/copy": "copy",
    "/api/delete": "delete",
}

_EXACT = {(r.method, r.path): r for r in RELAY_ROUTES if not r.prefix}
_PREFIXED = tuple(r for r in RELAY_ROUTES if r.prefix)
RELAY_PATHS = frozenset(r.path for r in RELAY_ROUTES)


def match_route(method: str, path: str) -> Route | None:
    """The relay route for this request, or None (not a relayed path, or wrong method)."""
    route = _EXACT.get((method, path))
    if route is not None:
        return route
    for candidate in _PREFIXED:
        if (
            method == candidate.method
            and path.startswith(candidate.path)
            and len(path) > len(candidate.path)
            and not _has_dot_segment(path)
        ):
            return candidate
    return None


def _has_dot_segment(path: str) -> bool:
    # `/v1/models/../../api/pull` would reach another upstream path once the upstream
    # normalises it: a parameter is a name, never a way out of its prefix.
    return "." in path and any(part in (".", "..") for part in path.split("/"))


def is_relay_path(path: str) -> bool:
    """True for paths the relay owns with any method (to answer 405, not 404)."""
    if path in RELAY_PATHS:
        return True
    return any(path.startswith(r.path) for r in _PREFIXED) and not _has_dot_segment(path)


def management_refusal(method: str, path: str) -> str | None:
    """The answer to a model management call (any method), or None for other paths."""
    verb = MANAGEMENT_PATHS.get(path)
    if verb is None:
        return None
    return (
        f"lanegate does not relay {method} {path}: model management ({verb}) changes what "
        "every client of this host shares, so it is done on the host itself, not through "
        f"the gateway; ask the operator, or run `ollama {verb} ...` on the host (its own "
        "port, 11434 by default, is not exposed to clients)"
    )


# APIs that older servers of a kind may lack: their bare 404 page is explained, not relayed.
NEWER_APIS = frozenset({ANTHROPIC_API, RERANK_API})


def not_served(route: Route, spec: UpstreamSpec, status: int) -> NotFound:
    """A bare 404 from an upstream for an API a server of its kind may lack, explained."""
    return NotFound(
        f"upstream {spec.name} (kind {spec.kind.value}) has no {route.method} {route.path} "
        f"(it answered {status} without an API error): it does not serve the {route.family} "
        "API (Ollama before 0.14 has no Messages API; only llama.cpp's server reranks). "
        f"Upgrade it, or ask the operator to leave `{route.family}` out of its `apis`",
        code="api_not_served",
    )
