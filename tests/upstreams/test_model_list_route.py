"""`GET /v1/models` on the gateway: every upstream's models, merged under logical names."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.clients import OpenAIClients
from tests.support.processes import start_gateway, start_simulator


def test_models_merged_across_upstreams(
    output_dir: Path, tmp_path: Path, openai_client: OpenAIClients
) -> None:
    mini = start_simulator("sim-ml-mini", output_dir, "--profile", "m2-mini-16gb")
    m4 = start_simulator("sim-ml-m4", output_dir, "--profile", "m4-max-64gb")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "upstreams:\n"
        f"  - {{name: mini, kind: ollama, base_url: '{mini.url}'}}\n"
        f"  - {{name: m4, kind: ollama, pool: remote, base_url: '{m4.url}'}}\n"
        "models:\n"
        "  llama-8b: {mini: 'llama3.1:8b', m4: 'llama3.1:8b'}\n"
    )
    env = {"LANEGATE_DISCOVERY_INTERVAL": "0.2"}
    gateway = start_gateway("gw-models", policy, output_dir, env=env)
    try:
        client = openai_client(gateway, "any")
        deadline = time.monotonic() + 5
        owners: dict[str, str] = {}
        while time.monotonic() < deadline and "llama-8b" not in owners:
            owners = {m.id: m.owned_by for m in client.models.list()}
            time.sleep(0.1)
        assert owners["llama-8b"] == "m4,mini"  # one model, two hosts, the logical name
        assert "llama3.1:8b" not in owners
        assert owners["llama3.2:3b"] == "m4,mini"
        assert "nomic-embed-text:latest" in owners
    finally:
        gateway.stop()
        m4.stop()
        mini.stop()
