"""The whole policy file as pydantic models: one section per module, assembled here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.policy.spec import Policy
from gateway.policy.upstreams import UpstreamModel


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    upstreams: Annotated[list[UpstreamModel], Field(min_length=1)]

    @field_validator("upstreams")
    @classmethod
    def _unique_upstream_names(cls, upstreams: list[UpstreamModel]) -> list[UpstreamModel]:
        seen: set[str] = set()
        for upstream in upstreams:
            if upstream.name in seen:
                raise ValueError(f"upstream name {upstream.name!r} is used twice")
            seen.add(upstream.name)
        return upstreams

    def to_spec(self, source: str) -> Policy:
        return Policy(source=source, upstreams=tuple(u.to_spec() for u in self.upstreams))
