"""The `lanes` section of the policy: classes of traffic, each with its own caps and budgets.

Checks that need other sections (reserved slots against upstream slots, lanes named by
clients and rules) live in `document.py`; this module checks one lane at a time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from gateway.policy.spec import Budget, LaneSpec
from gateway.policy.upstreams import NAME_PATTERN

# Well below the 600 s the openai SDK (and many others) wait for a response, so a request that
# cannot be admitted gets a clear 429 from lanegate rather than a client-side timeout.
DEFAULT_QUEUE_TIMEOUT_S = 30.0
DEFAULT_MAX_QUEUE = 100

TokensLimit = Annotated[int | None, Field(ge=1, description="Tokens (prompt + completion)")]
ModelGlob = Annotated[str, Field(min_length=1, description="Shell-style glob, e.g. llama3.*")]
ModelName = Annotated[str, Field(min_length=1, description="Model name sent upstream")]


class BudgetFields(BaseModel):
    """Token budgets per fixed window, shared by lanes and clients; unset means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens_per_minute: Annotated[
        TokensLimit, Field(description="Token budget per fixed clock minute (unset: unlimited)")
    ] = None
    tokens_per_hour: Annotated[
        TokensLimit, Field(description="Token budget per fixed clock hour (unset: unlimited)")
    ] = None
    tokens_per_day: Annotated[
        TokensLimit, Field(description="Token budget per fixed day (unset: unlimited)")
    ] = None

    def budget(self) -> Budget:
        return Budget(
            tokens_per_minute=self.tokens_per_minute,
            tokens_per_hour=self.tokens_per_hour,
            tokens_per_day=self.tokens_per_day,
        )


class LaneModel(BudgetFields):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Unique lane name")]
    priority: Annotated[
        int, Field(ge=0, le=1000, description="Higher is admitted first (waiting ages it up)")
    ]
    max_concurrency: Annotated[
        int | None,
        Field(
            ge=1,
            le=1024,
            description="Upper bound on this lane's requests in flight at once (unset: the slots "
            "it can reach; lower lanes' adaptive limits stay below it)",
        ),
    ] = None
    reserved: Annotated[
        int,
        Field(ge=0, le=1024, description="Local slots kept for this lane; no other lane uses them"),
    ] = 0
    max_queue: Annotated[
        int,
        Field(ge=0, le=100_000, description="Requests allowed to wait; beyond it → 429 at once"),
    ] = DEFAULT_MAX_QUEUE
    queue_timeout: Annotated[
        float,
        Field(gt=0, le=3600, description="Seconds a request may wait for a slot, then 429"),
    ] = DEFAULT_QUEUE_TIMEOUT_S
    default_max_tokens: Annotated[
        int,
        Field(
            ge=1,
            le=1_000_000,
            description="Completion tokens reserved from budgets when a request sets no limit",
        ),
    ] = 1024
    allowed_models: Annotated[
        list[ModelGlob] | None,
        Field(
            min_length=1,
            description="Globs of models this lane may run, checked after model_map "
            "(unset: any model)",
        ),
    ] = None
    model_map: Annotated[
        dict[ModelGlob, ModelName],
        Field(
            description="Requested-model glob → model to run instead, first match in file order, "
            'e.g. {"*": "llama3.2:3b"}',
        ),
    ] = {}
    offloadable: Annotated[
        bool, Field(description="May run on the remote pool when the local one is busy")
    ] = False
    preemptible: Annotated[
        bool,
        Field(
            description="A waiting chat (top priority) may cut this lane's non-streamed requests "
            "that have sent nothing yet; each runs again later, at most twice preempted",
        ),
    ] = False
    on_redis_down: Annotated[
        Literal["open", "closed"],
        Field(
            description="With LANEGATE_REDIS_URL, when Redis is unreachable: open = keep serving "
            "with this gateway's local limits, closed = 503 shared_state_unavailable",
        ),
    ] = "open"

    @field_validator("reserved")
    @classmethod
    def _reserved_within_cap(cls, reserved: int, info: ValidationInfo) -> int:
        cap = info.data.get("max_concurrency")
        if cap is not None and reserved > cap:  # unset: bounded by the slots (document.py)
            raise ValueError(
                f"reserved ({reserved}) is more than this lane's max_concurrency ({cap}): "
                "a lane cannot use more reserved slots than it may run at once"
            )
        return reserved

    def to_spec(self, reach: int) -> LaneSpec:
        """The frozen lane; `reach` is its cap when `max_concurrency` is unset (the slots it
        can reach, see `PolicyDocument.reach`)."""
        return LaneSpec(
            name=self.name,
            priority=self.priority,
            max_concurrency=self.max_concurrency or max(reach, 1),
            reserved=self.reserved,
            max_queue=self.max_queue,
            queue_timeout_s=self.queue_timeout,
            budget=self.budget(),
            default_max_tokens=self.default_max_tokens,
            model_map=tuple(self.model_map.items()),
            allowed_models=tuple(self.allowed_models) if self.allowed_models else None,
            offloadable=self.offloadable,
            preemptible=self.preemptible,
            on_redis_down=self.on_redis_down,
        )


def implicit_lane(slots: int) -> LaneSpec:
    """The one lane of a policy without a `lanes` section: no caps beyond the upstreams' own.

    Its queue is generous (like Ollama's own default of 512 waiting requests), so an
    upstreams-only policy keeps working as it did before lanes existed.
    """
    return LaneSpec(
        name="default",
        priority=0,
        max_concurrency=max(slots, 1),
        max_queue=512,
        queue_timeout_s=120.0,
    )
