"""The `upstreams` section of the policy: the inference servers lanegate may talk to.

Upstream URLs come only from here: nothing in a client request can choose a host.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.policy.spec import API_FAMILIES, DEFAULT_APIS, Timeouts, UpstreamKind, UpstreamSpec

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
KEY_REF_PATTERN = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|sha256:[0-9a-f]{64})$")


class TimeoutsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: Annotated[float, Field(gt=0, le=300, description="TCP connect timeout, seconds")] = 5.0
    first_byte: Annotated[
        float,
        Field(gt=0, le=3600, description="Wait for the first byte, seconds (cold loads are slow)"),
    ] = 600.0
    idle: Annotated[
        float, Field(gt=0, le=3600, description="Longest gap between two chunks, seconds")
    ] = 300.0

    def to_spec(self) -> Timeouts:
        return Timeouts(connect_s=self.connect, first_byte_s=self.first_byte, idle_s=self.idle)


class UpstreamModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Unique name, used in metrics")]
    pool: Annotated[str, Field(pattern=NAME_PATTERN)] = "local"
    kind: UpstreamKind = UpstreamKind.OPENAI
    base_url: Annotated[
        str, Field(description="Server root, e.g. http://127.0.0.1:11434 (no /v1 suffix)")
    ]
    max_concurrency: Annotated[
        int, Field(ge=1, le=1024, description="Real parallel slots (e.g. OLLAMA_NUM_PARALLEL)")
    ] = 4
    api_key: Annotated[
        str | None, Field(description="Key lanegate sends upstream: env:VAR only")
    ] = None
    signals_url: Annotated[
        str | None, Field(description="Host-signal endpoint (lanegate agent or simulator)")
    ] = None
    signals_key: Annotated[
        str | None, Field(description="Key for signals_url (a keyed agent): env:VAR only")
    ] = None
    timeouts: TimeoutsModel = TimeoutsModel()
    apis: Annotated[
        list[str] | None,
        Field(
            description="API families it serves: openai, ollama, anthropic (Messages), rerank; "
            "default: what its kind serves"
        ),
    ] = None

    @field_validator("apis")
    @classmethod
    def _known_apis(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in API_FAMILIES:
                raise ValueError(f"unknown API {name!r}; use {', '.join(API_FAMILIES)}")
        return value

    @field_validator("base_url", "signals_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434")
        trimmed = value.rstrip("/")
        if trimmed.endswith("/v1"):
            raise ValueError("give the server root without /v1; lanegate adds the API path")
        return trimmed

    @field_validator("api_key", "signals_key")
    @classmethod
    def _key_reference(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("env:"):
            raise ValueError("upstream keys are references: write env:VARIABLE_NAME, never the key")
        if value is not None and not KEY_REF_PATTERN.match(value):
            raise ValueError("expected env:VARIABLE_NAME")
        return value

    def to_spec(self) -> UpstreamSpec:
        return UpstreamSpec(
            name=self.name,
            pool=self.pool,
            kind=self.kind,
            base_url=self.base_url,
            max_concurrency=self.max_concurrency,
            timeouts=self.timeouts.to_spec(),
            api_key_ref=self.api_key,
            signals_url=self.signals_url,
            signals_key_ref=self.signals_key,
            apis=DEFAULT_APIS[self.kind] if self.apis is None else frozenset(self.apis),
        )
