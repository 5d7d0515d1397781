"""The `slo` section: what chats are promised, and the gate thresholds of the ladder.

Two uses. The gateway acts on `interactive_ttft_ratio`, `chat_idle`, `baseline_ttft` and
`adaptive_limits`: the adaptive limits of lower-priority lanes (gateway/lanes/limits.py) hold
the top-priority lanes' TTFT within that ratio of its no-load baseline. They apply with or
without this section, whenever lanes have different priorities (`Protection()`'s defaults).
The other fields are the thresholds `lanegate ladder --policy FILE` checks a run against, so the
ladder's gate report and the policy cannot drift apart (docs/ladder.md).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from gateway.policy.spec import Protection
from gateway.tools.ladder.gates import SloThresholds


class SloModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interactive_p95_ttft_ms: Annotated[
        float | None, Field(gt=0, description="Interactive p95 TTFT limit, ms (unset: no gate)")
    ] = None
    p95_ratio: Annotated[
        float, Field(gt=1, description="p95 TTFT limit as a multiple of rung 1's")
    ] = 3.0
    error_rate: Annotated[
        float, Field(ge=0, lt=1, description="Highest share of failed requests, 0.01 = 1%")
    ] = 0.01
    swap_growth_gb: Annotated[float, Field(gt=0, description="Swap growth during the run, GiB")] = (
        2.0
    )

    interactive_ttft_ratio: Annotated[
        float,
        Field(
            gt=1,
            le=100,
            description="Top-priority lanes' TTFT target as a multiple of its learned no-load "
            "baseline; lower lanes' adaptive limits shrink when chats go past it",
        ),
    ] = 1.3
    chat_idle: Annotated[
        float,
        Field(
            gt=0,
            le=3600,
            description="Seconds without a chat after which lower lanes may use every slot",
        ),
    ] = 30.0
    baseline_ttft: Annotated[
        float | None,
        Field(
            gt=0,
            description="No-load TTFT in seconds (unset: learned from chats that ran alone)",
        ),
    ] = None
    adaptive_limits: Annotated[
        bool,
        Field(description="Adapt lower lanes' limits to chats' TTFT (false: only the caps)"),
    ] = True

    def to_protection(self) -> Protection:
        return Protection(
            enabled=self.adaptive_limits,
            ttft_ratio=self.interactive_ttft_ratio,
            chat_idle_s=self.chat_idle,
            baseline_ttft_s=self.baseline_ttft,
        )

    def to_spec(self) -> SloThresholds:
        return SloThresholds(
            interactive_p95_ttft_ms=self.interactive_p95_ttft_ms,
            p95_ratio=self.p95_ratio,
            error_rate=self.error_rate,
            swap_growth_gb=self.swap_growth_gb,
        )
