"""Shared pieces of the reliability suite: its simulator, lanes and keys, a keyed gateway."""

from __future__ import annotations

import json
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.serving.keys import hash_key
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import REPO, Service, running, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

KEY = "lg-fuzz-client-key-0123456789abcdef"
ADMIN = "lg-fuzz-admin-key-0123456789abcdef"

# Lanes every reliability gateway has: `work` carries a token budget far from exhausted, so
# its x-ratelimit-remaining-tokens header shows the settled spend to the token. The admin key
# lets a test read /admin/status.
LANES = (
    f'\nadmin_key: "{hash_key(ADMIN)}"\n'
    + """lanes:
  - {name: interactive, priority: 100, max_concurrency: 2, max_queue: 20, queue_timeout: 20}
  - {name: work, priority: 10, max_concurrency: 2, max_queue: 20, queue_timeout: 20,
     tokens_per_day: 10000000}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, work]
slo: {adaptive_limits: false}
"""
)
# Adaptive limits off: the leak probe (tests/support/gateway_state.py) asks every lane for its
# full concurrency at once, which an adaptive limit rightly withholds from `work` for chat_idle
# seconds after a chat. The limits' own behaviour is tested in tests/lanes.


# The reliability suite's simulator (its `sim` fixture, and extra ones): 10 ms between tokens.
SIM_ARGS = ("--profile", "fast", "--ttft-ms", "5", "--chunk-interval-ms", "10")


def restart_on(output_dir: Path, policy: Path, state: Path, name: str):  # type: ignore[no-untyped-def]
    """A `restart` for gateway_state.stuck_reservations: SIGTERM, then serve again."""

    def restart(service: Service) -> Service:
        # uvicorn re-raises the signal once shut down: -15 is a clean exit too
        assert service.stop(signal.SIGTERM) in (0, -signal.SIGTERM), service.log()[-2000:]
        assert "Application shutdown complete" in service.log()
        return start_gateway(name, policy, output_dir, state=state)

    return restart


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


@pytest.fixture(scope="module")
def sim_args() -> tuple[str, ...]:
    return SIM_ARGS


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Measured figures for docs/reliability.md, under test-output/reliability/NAME.json."""
    folder = REPO / "test-output" / "reliability"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


# -- an upstream that answers at once, and a gateway with keys in front of it --------------


def _answer(request: SeenRequest) -> Script:
    """A healthy upstream that answers at once: SSE when asked to stream, else JSON."""
    streamed = b'"stream":true' in request.body.replace(b" ", b"")
    if streamed or (request.path.startswith("/api/") and b'"stream":false' not in request.body):
        return Script(chunks=[b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"])
    return Script(content_type="application/json", chunks=[b'{"object":"list","data":[]}'])


@pytest.fixture(scope="module")
def instant_upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_answer) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_gateway(
    instant_upstream: ScriptedUpstream, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("fuzz-keys")
    clients = "\nclients:\n"
    clients += f'  - {{name: app, key: "{hash_key(KEY)}", lanes: [interactive, work]}}\n'
    policy = write_policy(
        tmp / "policy.yaml",
        [upstream_entry("scripted", instant_upstream.url, "llamacpp", max_concurrency=8)],
        LANES + clients,
    )
    with running(start_gateway("gw-fuzz-keys", policy, output_dir, state=tmp / "state")) as gw:
        yield gw
