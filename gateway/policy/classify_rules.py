"""The `classify` section of the policy: ordered rules that put each request into a lane.

First matching rule wins; every matcher a rule sets must match (AND). Whether the lanes the
rules name exist is checked in `document.py`, which sees the `lanes` section too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gateway.policy.spec import Match, Rule
from gateway.policy.upstreams import NAME_PATTERN

HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
LaneName = Annotated[str, Field(pattern=NAME_PATTERN)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _one_or_many_schema(item: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


ClientNames = Annotated[
    list[Annotated[str, Field(pattern=NAME_PATTERN)]],
    BeforeValidator(_one_or_many),
    _one_or_many_schema({"type": "string", "pattern": NAME_PATTERN}),
    Field(min_length=1),
]
Globs = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    BeforeValidator(_one_or_many),
    _one_or_many_schema({"type": "string", "minLength": 1}),
    Field(min_length=1),
]


class RangeModel(BaseModel):
    """An inclusive range; either end may be left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: Annotated[int | None, Field(ge=0, description="Smallest value that matches")] = None
    max: Annotated[int | None, Field(ge=0, description="Largest value that matches")] = None

    @field_validator("max")
    @classmethod
    def _ordered(cls, high: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min")
        if high is not None and low is not None and high < low:
            raise ValueError(f"max ({high}) is below min ({low}): nothing would match")
        return high

    @model_validator(mode="after")
    def _not_empty(self) -> RangeModel:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both, e.g. {min: 2048}")
        return self


class MatchModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client: Annotated[ClientNames | None, Field(description="Client name(s) from `clients`")] = None
    path: Annotated[
        Globs | None, Field(description="Request path glob(s), e.g. /v1/embeddings, /api/*")
    ] = None
    model: Annotated[
        Globs | None, Field(description="Requested model glob(s), e.g. 'llama3.3:70b*'")
    ] = None
    stream: Annotated[bool | None, Field(description="true: streaming requests only")] = None
    max_tokens: Annotated[
        RangeModel | None,
        Field(description="Range of the request's max_tokens; a request without one never matches"),
    ] = None
    prompt_chars: Annotated[
        RangeModel | None,
        Field(description="Range of the prompt's size in characters (all messages together)"),
    ] = None
    headers: Annotated[
        dict[str, Annotated[str, Field(min_length=1)]] | None,
        Field(description="Header name → value glob; every one listed must match"),
    ] = None
    user_agent: Annotated[
        str | None, Field(min_length=1, description="Regular expression searched in User-Agent")
    ] = None

    @field_validator("path")
    @classmethod
    def _absolute_paths(cls, paths: list[str] | None) -> list[str] | None:
        for path in paths or ():
            if not path.startswith(("/", "*")):
                raise ValueError(f"path {path!r} never matches: paths start with /, e.g. /api/*")
        return paths

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name in headers or {}:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return headers

    @field_validator("user_agent")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return pattern

    @model_validator(mode="after")
    def _not_empty(self) -> MatchModel:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                "an empty match takes every request; use classify.default_lane for that"
            )
        return self

    def to_spec(self) -> Match:
        return Match(
            clients=_tuple(self.client),
            paths=_tuple(self.path),
            models=_tuple(self.model),
            stream=self.stream,
            max_tokens_min=self.max_tokens.min if self.max_tokens else None,
            max_tokens_max=self.max_tokens.max if self.max_tokens else None,
            prompt_chars_min=self.prompt_chars.min if self.prompt_chars else None,
            prompt_chars_max=self.prompt_chars.max if self.prompt_chars else None,
            headers=tuple((name.lower(), glob) for name, glob in (self.headers or {}).items()),
            user_agent=self.user_agent,
        )


class RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[
        str | None,
        Field(pattern=NAME_PATTERN, description="Shown in logs and metrics (unset: rules[N])"),
    ] = None
    lane: Annotated[LaneName, Field(description="Lane for requests this rule matches")]
    match: Annotated[MatchModel, Field(description="Conditions; all that are set must hold")]

    def to_spec(self, index: int) -> Rule:
        return Rule(lane=self.lane, match=self.match.to_spec(), name=self.name or f"rules[{index}]")


class ClassifyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_lane: Annotated[
        LaneName | None,
        Field(
            description="Lane when no rule matches and the client has no default_lane "
            "(unset: the only lane, or `default` when there is no lanes section)"
        ),
    ] = None
    anonymous_lanes: Annotated[
        list[LaneName],
        Field(description="Lanes a caller that is not a named client may pick with X-Lane"),
    ] = []
    rules: Annotated[
        list[RuleModel], Field(description="Tried in order; the first that matches wins")
    ] = []

    def to_spec(self) -> tuple[Rule, ...]:
        return tuple(rule.to_spec(index) for index, rule in enumerate(self.rules))


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None
