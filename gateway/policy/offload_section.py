"""The `offload` section: when batch and shared lanes move to the remote pool, and back.

Thresholds follow the rule of thumb we serve: interactive p95 TTFT past ~3x its single-stream
baseline for a sustained window, or swap grown by more than ~2 GB, moves `offloadable` lanes
to the remote pool; they come back after `recover` seconds below threshold x `hysteresis`.
docs/operations.md explains how to choose each value with `lanegate ladder`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.offload.controller import OffloadConfig


class OffloadModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    swap_growth_gb: Annotated[
        float, Field(gt=0, description="Swap growth since the quiet baseline, GiB")
    ] = 2.0
    pressure_level: Annotated[
        Literal["warn", "critical"], Field(description="macOS memory pressure that counts")
    ] = "warn"
    p95_ratio: Annotated[
        float, Field(gt=1, description="Interactive p95 TTFT / single-stream baseline")
    ] = 3.0
    sustain: Annotated[float, Field(ge=0, description="Seconds a breach must hold")] = 30.0
    recover: Annotated[float, Field(ge=0, description="Seconds below hysteresis to return")] = 120.0
    hysteresis: Annotated[
        float, Field(gt=0, le=1, description="Recover below threshold x this")
    ] = 0.7
    when_remote_unhealthy: Annotated[
        Literal["stay_local", "shed"],
        Field(description="stay_local, or shed offloadable lanes with 503 + Retry-After"),
    ] = "stay_local"
    baseline_ttft: Annotated[
        float | None, Field(gt=0, description="Single-stream TTFT, s (unset: learned)")
    ] = None
    min_samples: Annotated[int, Field(ge=1, description="Requests a p95 needs")] = 20
    sample_interval: Annotated[float, Field(gt=0, le=60, description="Seconds between samples")] = (
        5.0
    )

    def to_spec(self) -> OffloadConfig:
        return OffloadConfig(
            swap_growth_gb=self.swap_growth_gb,
            pressure_level=self.pressure_level,
            p95_ratio=self.p95_ratio,
            sustain_s=self.sustain,
            recover_s=self.recover,
            hysteresis=self.hysteresis,
            when_remote_unhealthy=self.when_remote_unhealthy,
            baseline_ttft_s=self.baseline_ttft,
            min_samples=self.min_samples,
        )
