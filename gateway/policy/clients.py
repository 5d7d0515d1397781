"""The `clients` section of the policy: who may call, with which key, into which lanes.

Keys are never written here, only references to them (see `gateway.serving.keys`): a plain key in a
file that gets copied, committed and pasted into chats would not stay secret for long.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from gateway.policy.lanes import BudgetFields
from gateway.policy.spec import ClientSpec
from gateway.policy.upstreams import NAME_PATTERN
from gateway.serving.keys import KEY_REF_HELP, is_key_ref

LaneName = Annotated[str, Field(pattern=NAME_PATTERN)]


def check_key_ref(value: str) -> str:
    """Accept `env:VAR` or `sha256:<64 hex>`; anything else is (or may be) a plain key."""
    if is_key_ref(value):
        return value
    if value.startswith("sha256:"):
        raise ValueError(
            "a sha256 reference is `sha256:` and 64 lower-case hex digits; "
            "run `lanegate keys new NAME` to make one"
        )
    if value.startswith("env:"):
        raise ValueError("an env reference is env:VARIABLE_NAME (letters, digits, _)")
    # Never echo the value: it is probably a real key.
    raise ValueError(
        f"this looks like a plain key; keys are references, never the key: {KEY_REF_HELP}"
    )


class ClientModel(BudgetFields):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Unique client name")]
    key: Annotated[
        str,
        Field(
            description="Reference to the client's API key: sha256:<64 hex> (from `lanegate "
            "keys new NAME`) or env:VARIABLE_NAME; never the key itself",
        ),
    ]
    lanes: Annotated[
        list[LaneName] | None,
        Field(
            min_length=1,
            description="Lanes this client may use, by rules or by X-Lane (unset: every lane)",
        ),
    ] = None
    default_lane: Annotated[
        LaneName | None,
        Field(description="Lane when no rule matches (unset: classify.default_lane)"),
    ] = None
    max_concurrency: Annotated[
        int | None,
        Field(ge=1, le=1024, description="This client's requests in flight at once, all lanes"),
    ] = None

    _key_reference = field_validator("key")(check_key_ref)

    def to_spec(self, all_lanes: tuple[str, ...]) -> ClientSpec:
        return ClientSpec(
            name=self.name,
            key_ref=self.key,
            lanes=tuple(self.lanes) if self.lanes is not None else all_lanes,
            default_lane=self.default_lane,
            max_concurrency=self.max_concurrency,
            budget=self.budget(),
        )
