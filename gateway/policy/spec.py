"""Frozen plain objects the core reads. No pydantic here: validation happened at the edge.

A reload builds a new `Policy` and swaps the reference; requests in flight keep the objects
they started with, so nothing here is ever mutated.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import Enum

from gateway.offload.controller import OffloadConfig
from gateway.tools.ladder.gates import SloThresholds


class UpstreamKind(Enum):
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    MLX = "mlx"
    LLAMACPP = "llamacpp"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"  # a server speaking only Anthropic's Messages API


# API families an upstream may serve (policy `apis:`): OpenAI's /v1, Ollama's /api, Anthropic's
# /v1/messages, llama.cpp's rerank. Requests of a family go only to upstreams that serve it.
OPENAI_API, OLLAMA_API, ANTHROPIC_API, RERANK_API = "openai", "ollama", "anthropic", "rerank"
API_FAMILIES = (OPENAI_API, OLLAMA_API, ANTHROPIC_API, RERANK_API)
_CLASSIC = frozenset({OPENAI_API, OLLAMA_API})  # relayed to every kind, as before `apis`
# What each kind serves when its policy entry does not say (late 2026): Ollama >= 0.14,
# LM Studio and llama-server answer /v1/messages, mlx_lm.server does not; only llama-server
# reranks (Ollama has no rerank API: ollama/ollama#3368). `openai` is any OpenAI-compatible
# server (vLLM, SGLang, ...): nothing is assumed missing.
DEFAULT_APIS: dict[UpstreamKind, frozenset[str]] = {
    UpstreamKind.OLLAMA: _CLASSIC | {ANTHROPIC_API},
    UpstreamKind.LMSTUDIO: _CLASSIC | {ANTHROPIC_API},
    UpstreamKind.MLX: _CLASSIC,
    UpstreamKind.LLAMACPP: frozenset(API_FAMILIES),
    UpstreamKind.OPENAI: frozenset(API_FAMILIES),
    UpstreamKind.ANTHROPIC: frozenset({ANTHROPIC_API}),
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    # A cold model load on a Mac can take minutes before the first byte.
    first_byte_s: float = 600.0
    # Longest silence allowed between two chunks of a stream once it started.
    idle_s: float = 300.0


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    name: str
    pool: str
    kind: UpstreamKind
    base_url: str
    max_concurrency: int
    timeouts: Timeouts
    api_key_ref: str | None = None
    signals_url: str | None = None
    signals_key_ref: str | None = None
    apis: frozenset[str] = frozenset(API_FAMILIES)  # the API families it serves

    def serves(self, family: str) -> bool:
        return family in self.apis


@dataclass(frozen=True, slots=True)
class Budget:
    """Token budgets (prompt + completion) per fixed window; None means unlimited."""

    tokens_per_minute: int | None = None
    tokens_per_hour: int | None = None
    tokens_per_day: int | None = None

    def limits(self) -> tuple[tuple[str, float, int], ...]:
        """(window name, window seconds, limit) for each window that has a limit."""
        windows = (
            ("minute", 60.0, self.tokens_per_minute),
            ("hour", 3600.0, self.tokens_per_hour),
            ("day", 86400.0, self.tokens_per_day),
        )
        return tuple(
            (name, seconds, limit) for name, seconds, limit in windows if limit is not None
        )


@dataclass(frozen=True, slots=True)
class LaneSpec:
    name: str
    priority: int  # higher is admitted first (before aging)
    max_concurrency: int  # in flight at once, across the lane
    reserved: int = 0  # slots no other lane may take
    max_queue: int = 100  # waiting beyond this → 429 lane_queue_full
    queue_timeout_s: float = 30.0  # waiting longer → 429 lane_queue_timeout
    budget: Budget = field(default_factory=Budget)
    default_max_tokens: int = 1024  # reserved when a request does not say
    model_map: tuple[tuple[str, str], ...] = ()  # (glob, target), first match rewrites model
    allowed_models: tuple[str, ...] | None = None  # globs; None allows any
    offloadable: bool = False
    # A chat waiting for a slot may take it from this lane's non-streamed requests that have
    # sent nothing yet; they run again later (gateway.lanes.preempt).
    preemptible: bool = False
    on_redis_down: str = "open"  # shared state unreachable: "open" (local limits) or "closed" (503)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    name: str
    key_ref: str  # env:VAR or sha256:<hex of the key>
    lanes: tuple[str, ...]  # lanes this client may use (X-Lane is honoured only for these)
    default_lane: str | None = None
    max_concurrency: int | None = None
    budget: Budget = field(default_factory=Budget)


@dataclass(frozen=True, slots=True)
class Match:
    """Every field that is set must match (AND); unset fields match anything."""

    clients: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None  # globs over the request path
    models: tuple[str, ...] | None = None  # globs over the requested model
    stream: bool | None = None
    max_tokens_min: int | None = None
    max_tokens_max: int | None = None
    prompt_chars_min: int | None = None
    prompt_chars_max: int | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, value glob)
    user_agent: str | None = None  # regular expression, searched

    # Compiled once when the policy is built, because classification runs on every request.
    path_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    model_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    header_res: tuple[tuple[str, re.Pattern[str]], ...] = field(
        init=False, repr=False, compare=False
    )
    user_agent_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled_headers = tuple((name, glob_regex((glob,))) for name, glob in self.headers)
        user_agent_re = re.compile(self.user_agent) if self.user_agent is not None else None
        object.__setattr__(self, "path_re", _optional_glob_regex(self.paths))
        object.__setattr__(self, "model_re", _optional_glob_regex(self.models))
        object.__setattr__(self, "header_res", compiled_headers)
        object.__setattr__(self, "user_agent_re", user_agent_re)


def glob_regex(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern matching a whole string against any of the shell-style globs (case-sensitive)."""
    return re.compile("|".join(fnmatch.translate(glob) for glob in globs) or r"(?!)")


def _optional_glob_regex(globs: tuple[str, ...] | None) -> re.Pattern[str] | None:
    return None if globs is None else glob_regex(globs)


@dataclass(frozen=True, slots=True)
class Rule:
    lane: str
    match: Match
    name: str = ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A logical model name and each upstream's id for it (upstreams not listed use `name`)."""

    name: str
    ids: tuple[tuple[str, str], ...]  # (upstream name, that upstream's model id)

    def id_on(self, upstream: str) -> str:
        for name, model_id in self.ids:
            if name == upstream:
                return model_id
        return self.name


@dataclass(frozen=True, slots=True)
class Admission:
    # Waiting this long raises a request's priority by one level, so batch never starves.
    aging_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Protection:
    """The chats' SLO the adaptive limits of lower lanes hold (`slo` section; on by default)."""

    enabled: bool = True  # acts only when lanes have different priorities
    ttft_ratio: float = 1.3  # top-priority lanes' TTFT target, x the learned no-load baseline
    chat_idle_s: float = 30.0  # no chat this long: lower lanes may use every slot
    baseline_ttft_s: float | None = None  # pinned no-load TTFT; None: learned from solo chats


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    upstreams: tuple[UpstreamSpec, ...]
    lanes: tuple[LaneSpec, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    rules: tuple[Rule, ...] = ()
    default_lane: str = "default"
    # Lanes a caller who is not a named client may pick with X-Lane (named clients: `lanes`).
    anonymous_lanes: tuple[str, ...] = ()
    admin_key_ref: str | None = None
    admission: Admission = field(default_factory=Admission)
    models: tuple[ModelSpec, ...] = ()
    offload: OffloadConfig | None = None  # None: offloadable lanes stay on the local pool
    offload_sample_s: float = 5.0
    slo: SloThresholds | None = None  # the ladder's gate thresholds; the gateway ignores them
    protection: Protection = field(default_factory=Protection)

    # What classification reads of a request, worked out once: the request path decodes only
    # these headers, and counts prompt characters only when a rule or a budget needs them.
    header_names: frozenset[bytes] = field(init=False, repr=False, compare=False)
    counts_prompt: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {b"x-lane"}
        for rule in self.rules:
            names.update(name.encode("latin-1") for name, _ in rule.match.headers)
            if rule.match.user_agent is not None:
                names.add(b"user-agent")
        counts = any(
            r.match.prompt_chars_min is not None or r.match.prompt_chars_max is not None
            for r in self.rules
        ) or any(lane.budget.limits() for lane in self.lanes)
        counts = counts or any(client.budget.limits() for client in self.clients)
        object.__setattr__(self, "header_names", frozenset(names))
        object.__setattr__(self, "counts_prompt", counts)

    def upstream(self, name: str) -> UpstreamSpec:
        for spec in self.upstreams:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def pool(self, pool: str) -> tuple[UpstreamSpec, ...]:
        return tuple(spec for spec in self.upstreams if spec.pool == pool)

    def model_id(self, model: str, upstream: str) -> str:
        """What `upstream` calls the logical `model` (the name itself when not mapped)."""
        for spec in self.models:
            if spec.name == model:
                return spec.id_on(upstream)
        return model

    def lane(self, name: str) -> LaneSpec:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise KeyError(name)
