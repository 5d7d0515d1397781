"""`lanegate init`'s starter policy: which local servers answered, and a commented YAML for them.

Owns: telling an inference server's kind from what its endpoints answered (Ollama's
`/api/version`, LM Studio's `/api/v0/models`, llama-server's `/slots`, the `/v1/models` of
llama-server and mlx_lm on :8080), the parallel slots each one reports (only llama-server's
`/slots` says; for the others the policy states the server's default and says where to change
it), and rendering a policy whose lanes fit those slots. Pure: the answers come in as parsed
JSON (None for no answer); `commands/init.py` does the HTTP.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.upstreams.model_lists import llamacpp_slots, lmstudio_models, ollama_tags

# Where each kind listens by default, and what `init` asks it. llama-server and mlx_lm share
# :8080, so one probe there tells them apart.
DEFAULT_PROBES: Mapping[str, str] = {
    "ollama": "http://127.0.0.1:11434",
    "lmstudio": "http://127.0.0.1:1234",
    "port8080": "http://127.0.0.1:8080",
}
PATHS: Mapping[str, tuple[str, ...]] = {
    "ollama": ("/api/version", "/api/tags"),
    "lmstudio": ("/api/v0/models",),
    "port8080": ("/slots", "/v1/models"),
}
# Slots assumed when the server does not report them, and where the operator sets them.
_UNREPORTED: Mapping[str, tuple[int, str]] = {
    "ollama": (4, "Ollama does not report OLLAMA_NUM_PARALLEL: this is the value to give it "
               "(`lanegate service install ollama-agent` sets it from here)"),
    "lmstudio": (4, "LM Studio does not report it: its \"Max Concurrent Predictions\" "
                 "(default 4)"),
    "llamacpp": (1, "llama-server's /slots is off (--no-slots): set this to its --parallel"),
    "mlx": (1, "mlx_lm.server does not report how many requests it runs at once"),
}  # fmt: skip
_NAMES = {"ollama": "mini-ollama", "lmstudio": "mini-lmstudio", "llamacpp": "mini-llamacpp",
          "mlx": "mini-mlx"}  # fmt: skip
_MODELS_SHOWN = 8


@dataclass(frozen=True)
class Found:
    """A local inference server that answered."""

    kind: str  # a policy `kind`: ollama, lmstudio, llamacpp, mlx
    base_url: str
    slots: int | None  # parallel slots as the server reports them; None: it does not say
    models: tuple[str, ...] = ()

    @property
    def max_concurrency(self) -> int:
        return self.slots if self.slots is not None else _UNREPORTED[self.kind][0]


def identify(probe: str, base_url: str, answers: Mapping[str, Any]) -> Found | None:
    """The server behind `base_url` from its answers (path -> parsed JSON, None: no answer)."""
    if probe == "ollama":
        version = answers.get("/api/version")
        if not (isinstance(version, Mapping) and isinstance(version.get("version"), str)):
            return None
        return Found("ollama", base_url, None, _names(ollama_tags(answers.get("/api/tags"))))
    if probe == "lmstudio":
        listing = answers.get("/api/v0/models")
        if not (isinstance(listing, Mapping) and isinstance(listing.get("data"), list)):
            return None
        return Found("lmstudio", base_url, None, _names(lmstudio_models(listing)))
    return _identify_8080(base_url, answers)


def _identify_8080(base_url: str, answers: Mapping[str, Any]) -> Found | None:
    slots = llamacpp_slots(answers.get("/slots"))
    listing = answers.get("/v1/models")
    data = listing.get("data") if isinstance(listing, Mapping) else None
    ids = tuple(str(m["id"]) for m in data or () if isinstance(m, Mapping) and "id" in m)
    if slots is not None or (isinstance(listing, Mapping) and "models" in listing):
        return Found("llamacpp", base_url, slots, ids)  # llama-server also lists Ollama-style
    if isinstance(data, list):
        return Found("mlx", base_url, None, ids)
    return None


def _names(inventory: Any) -> tuple[str, ...]:
    return tuple(sorted(inventory.models))


def lane_caps(slots: int) -> tuple[int, int, int]:
    """(interactive cap, its reserved slots, batch cap) for `slots` local slots: interactive
    may use all and keeps one for itself when there are two or more; batch never takes the
    reserved one."""
    reserved = 1 if slots >= 2 else 0
    return slots, reserved, max(1, slots - reserved)


def render(found: Sequence[Found], probed: Mapping[str, str], path: str) -> str:
    """A commented starter policy for the servers found (an Ollama one if none answered)."""
    servers = list(found) or [Found("ollama", DEFAULT_PROBES["ollama"], None)]
    slots = sum(server.max_concurrency for server in servers)
    interactive, reserved, batch = lane_caps(slots)
    tried = ", ".join(f"{kind} {url}" for kind, url in probed.items())
    header = [
        "# lanegate policy written by `lanegate init`: edit freely, then check it with",
        f"#   lanegate policy check {path}",
        "# `lanegate serve` reads this file by default. Field reference: docs/policy.md.",
        f"# Probed: {tried}.",
    ]
    if not found:
        header.append("# Nothing answered: this assumes Ollama on its default port. Start it,")
        header.append("# or edit base_url and kind below.")
    lines = [*header, "version: 1", "", "upstreams:"]
    for server in servers:
        lines += _upstream(server)
    lines += _lanes(slots, interactive, reserved, batch)
    lines += _TAIL
    return "\n".join(lines) + "\n"


def _upstream(server: Found) -> list[str]:
    lines = [
        f"  - name: {_NAMES[server.kind]}",
        "    pool: local",
        f"    kind: {server.kind}",
        f"    base_url: {server.base_url}",
    ]
    if server.slots is not None:
        lines.append(f"    max_concurrency: {server.slots}   # the slots the server reports")
    else:
        lines += textwrap.wrap(_UNREPORTED[server.kind][1], 92, initial_indent="    # ",
                               subsequent_indent="    # ")  # fmt: skip
        lines.append(f"    max_concurrency: {server.max_concurrency}")
    if server.models:
        shown = ", ".join(server.models[:_MODELS_SHOWN])
        hidden = len(server.models) - _MODELS_SHOWN
        more = f" and {hidden} more" if hidden > 0 else ""
        lines.append(f"    # models it has: {shown}{more}")
    lines.append("    timeouts: {connect: 2, first_byte: 600, idle: 120}   # seconds")
    return [*lines, ""]


def _lanes(slots: int, interactive: int, reserved: int, batch: int) -> list[str]:
    return [
        f"# Lanes share the {slots} local slot{'s' if slots != 1 else ''} above.",
        "lanes:",
        "  - name: interactive          # people waiting on a screen: admitted first",
        "    priority: 100",
        f"    max_concurrency: {interactive}",
        f"    reserved: {reserved}                  # local slots no other lane may take",
        "    max_queue: 20",
        "    queue_timeout: 30",
        "",
        "  - name: batch                # jobs nobody watches: embeddings, evals, summaries",
        "    priority: 10",
        f"    max_concurrency: {batch}",
        "    max_queue: 200",
        "    queue_timeout: 120",
        "",
        '  - name: heartbeat            # agents\' tiny "anything new?" calls',
        "    priority: 50",
        "    max_concurrency: 1",
        "    max_queue: 20",
        "    queue_timeout: 10",
        "",
    ]


_TAIL = [
    "classify:",
    "  default_lane: interactive",
    "  # No clients yet: callers are anonymous and may pick a lane with an X-Lane header.",
    "  # Before opening the gateway to the LAN add clients with keys (`lanegate keys new NAME`,",
    "  # docs/security.md); until then `lanegate serve` stays on loopback.",
    "  anonymous_lanes: [interactive, batch, heartbeat]",
    "  rules:",
    "    - name: embeddings",
    "      lane: batch",
    "      match:",
    "        path: [/v1/embeddings, /api/embed]",
    "",
    "# The key /admin/* and the dashboard need: LANEGATE_ADMIN_KEY in the gateway's",
    "# environment, or a sha256: reference from `lanegate keys new admin`.",
    "admin_key: env:LANEGATE_ADMIN_KEY",
]
