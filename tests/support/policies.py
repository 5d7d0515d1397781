"""Policy files for tests: upstreams as plain dicts, the rest (lanes, clients...) as YAML text.

Each upstream is written on one line in YAML's flow style (JSON is valid flow YAML), so a
nested field such as `timeouts` needs no indentation rules and the lines below it keep the
numbers the test wrote them at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def upstream_entry(name: str, url: str, kind: str = "ollama", **fields: Any) -> dict[str, Any]:
    """One upstream entry: `name`, `kind`, `base_url` and any other field of the policy."""
    return {"name": name, "kind": kind, "base_url": url, **fields}


def policy_text(upstreams: list[dict[str, Any]], extra: str = "") -> str:
    """`version: 1`, the upstreams, then `extra` (lanes, classify, clients...) as written."""
    lines = ["version: 1", "upstreams:", *(f"  - {json.dumps(u)}" for u in upstreams)]
    return "\n".join(lines) + "\n" + extra


def write_policy(path: Path, upstreams: list[dict[str, Any]], extra: str = "") -> Path:
    path.write_text(policy_text(upstreams, extra))
    return path
