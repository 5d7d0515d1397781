"""What one policy version needs at request time, swapped whole on reload.

A reload builds a new `Runtime` (policy, auth, lane gates, offload loop, host sampler, version)
and the app swaps its one reference to it, as llama-swap swaps its whole server: requests in
flight keep the runtime they started with, and nothing else of the app is written. The lane
gates are carried over (reconfigured in place) so slots held by requests in flight keep
counting; the offload loop and sampler are carried over unless the policy's offload inputs
changed, when new ones are built here and started by the reloader.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.lanes.gate import LaneGate
from gateway.offload.loop import OffloadLoop
from gateway.offload.signals import SignalSampler
from gateway.policy.spec import Policy
from gateway.serving.auth import Authenticator


@dataclass(frozen=True)
class Runtime:
    policy: Policy
    auth: Authenticator
    gate: LaneGate  # the local pool's slots
    remote_gate: LaneGate | None  # the remote pool's, for offloaded lanes
    sampler: SignalSampler  # host signals (always: status and metrics show them)
    offload: OffloadLoop | None  # with an `offload` section
    version: int = 1  # bumped by every successful reload
    loaded_at: float = 0.0  # wall clock of the load
