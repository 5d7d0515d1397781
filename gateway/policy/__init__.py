"""The lane policy: YAML that ops edit by hand, validated at the edge, read by the core.

`loader` turns a file into a validated `PolicyDocument` (pydantic, one module per section)
and then into the frozen plain objects of `spec`, which are all the core ever sees.
"""

from gateway.policy.loader import PolicyError, load_policy, load_policy_text
from gateway.policy.spec import Policy, Timeouts, UpstreamSpec

__all__ = ["Policy", "PolicyError", "Timeouts", "UpstreamSpec", "load_policy", "load_policy_text"]
