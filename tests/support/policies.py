"""Policy files for tests: upstreams as plain dicts, the rest (lanes, clients...) as YAML text.

Each upstream field is written as `key: value` with the value as YAML text (so `"[openai,
rerank]"` is a list and `"env:KEY"` a string), a dict value (`timeouts`) as a nested block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def upstream_entry(name: str, url: str, kind: str = "ollama", **fields: Any) -> dict[str, Any]:
    """One upstream entry: `name`, `kind`, `base_url` and any other field of the policy."""
    return {"name": name, "kind": kind, "base_url": url, **fields}


def policy_text(upstreams: list[dict[str, Any]], extra: str = "") -> str:
    """`version: 1`, the upstreams, then `extra` (lanes, classify, clients...) as written."""
    lines = ["version: 1", "upstreams:"]
    for upstream in upstreams:
        lines.append(f"  - name: {upstream['name']}")
        for key, value in upstream.items():
            if key == "name":
                continue
            if isinstance(value, dict):
                lines.append(f"    {key}:")
                lines.extend(f"      {k}: {v}" for k, v in value.items())
            else:
                lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n" + extra


def write_policy(path: Path, upstreams: list[dict[str, Any]], extra: str = "") -> Path:
    path.write_text(policy_text(upstreams, extra))
    return path


# A chat lane and a preemptible batch lane, adaptive limits off: preemption alone decides.
PREEMPTIBLE_LANES = """
lanes:
  - {name: interactive, priority: 100}
  - {name: batch, priority: 10, preemptible: true}
classify: {default_lane: interactive, anonymous_lanes: [interactive, batch]}
slo: {adaptive_limits: false}
"""
