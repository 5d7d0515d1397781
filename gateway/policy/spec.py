"""Frozen plain objects the core reads. No pydantic here: validation happened at the edge.

A reload builds a new `Policy` and swaps the reference; requests in flight keep the objects
they started with, so nothing here is ever mutated.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class UpstreamKind(Enum):
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    MLX = "mlx"
    LLAMACPP = "llamacpp"
    OPENAI = "openai"


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


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    upstreams: tuple[UpstreamSpec, ...]

    def upstream(self, name: str) -> UpstreamSpec:
        for spec in self.upstreams:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def pool(self, pool: str) -> tuple[UpstreamSpec, ...]:
        return tuple(spec for spec in self.upstreams if spec.pool == pool)
