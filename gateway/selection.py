"""Which upstream serves a request. Pure: a choice over the policy's data.

Until lanes and pools choose otherwise, requests go to the first upstream of the `local`
pool (or the first upstream listed, when no pool is called `local`).
"""

from __future__ import annotations

from gateway.policy.spec import Policy, UpstreamSpec

DEFAULT_POOL = "local"


def default_upstream(policy: Policy) -> UpstreamSpec:
    local = policy.pool(DEFAULT_POOL)
    return local[0] if local else policy.upstreams[0]
