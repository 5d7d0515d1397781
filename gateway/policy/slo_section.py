"""The `slo` section: the gate thresholds `lanegate ladder --policy FILE` checks a run against.

The gateway itself does not act on it: it records what the operator signed up to, next to
the lanes it is about, so the ladder's gate report and the policy cannot drift apart.
docs/ladder.md explains how to read a gate report.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

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

    def to_spec(self) -> SloThresholds:
        return SloThresholds(
            interactive_p95_ttft_ms=self.interactive_p95_ttft_ms,
            p95_ratio=self.p95_ratio,
            error_rate=self.error_rate,
            swap_growth_gb=self.swap_growth_gb,
        )
