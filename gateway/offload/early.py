"""Pure early offload: should this offloadable request go to the remote pool now, before any
sustained breach, because running it locally would slow a chat?

Owns the decision only (no I/O, no clock): the shell (`OffloadLoop.early`) reads the lane gate's
adaptive limit, the remote gate's free slots, the remote upstreams' breakers and the rolling
TTFTs, and asks here at the moment a request of an offloadable lane arrives.

It goes remote at once when all hold:
- running it locally would slow an active chat (`AdaptiveLimits.holds_back`: the lane is at its
  adaptive limit, or no local upstream has shown chats within the SLO beside lower lanes);
- the remote pool is healthy (some breaker not open) and has a free slot now;
- the remote pool's own recent TTFT (for the request's model) is not worse than the local
  one's. Unknown remote TTFT (nothing sent there yet) counts as not worse, so the pool gets a
  chance to be measured;
  unknown local TTFT with a known remote one stays local (nothing to compare against).
Offload's sustained-breach state machine (`controller.py`) still decides the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EarlyView:
    offloadable: bool
    held_back: bool  # running it locally now would slow an active chat (`holds_back`)
    remote_free: int  # remote slots free now
    remote_healthy: bool
    remote_ttft_s: float | None  # the remote pool's recent TTFT (p95), all lanes
    local_ttft_s: float | None  # the local pool's, the same way


def go_remote_early(view: EarlyView) -> tuple[bool, str]:
    """(go remote now?, why): the reason names the first condition that failed, or all held."""
    if not view.offloadable:
        return False, "lane is not offloadable"
    if not view.held_back:
        return False, "local limit has room (or no chat is active)"
    if not view.remote_healthy or view.remote_free <= 0:
        return False, "remote pool unhealthy or full"
    remote, local = view.remote_ttft_s, view.local_ttft_s
    if remote is not None and (local is None or remote > local):
        return False, "remote pool's recent TTFT is not better than local"
    return True, "batch would slow a chat locally; the remote pool is idle and not slower"
