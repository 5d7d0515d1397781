"""Shared fixtures: the output directory for logs, the simulator + gateway pair, an agent,
openai clients closed at teardown.

`sim` and `gateway` are module-scoped real processes on loopback ports. A test module shapes
them with module-level names (pytest's "fixtures introspect the requesting module" pattern):

- `SIM_ARGS`: argv after `lanegate simulate` (default: the fast profile, `FAST_SIM`);
- `GATEWAY_POLICY`: the policy text, where `{url}` stands for the upstream's URL;
- `GATEWAY_UPSTREAM`: the name of the fixture the gateway sits in front of (default `sim`;
  e.g. `upstream` for a module's own scripted upstream);
- `GATEWAY_ENV`: extra environment of the gateway process.

`scenario` and `upstream` are a module's scripted upstream (tests/support/scripted_upstream.py)
that answers every request with `scenario.script`, at first the module's `SCRIPT`.

A folder whose tests want another simulator overrides the `sim_args` fixture in its conftest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import OpenAIClients
from tests.support.paths import DATA, REPO
from tests.support.processes import (
    AGENT_KEY,
    FAST_SIM,
    Service,
    running,
    start_gateway,
    start_lanegate,
    start_simulator,
)
from tests.support.scripted_upstream import Scenario, ScriptedUpstream

__all__ = ["DATA"]  # recorded responses (sources in data/streams/SOURCES.md), for test modules


@pytest.fixture(scope="session")
def output_dir() -> Iterator[Path]:
    path = REPO / "test-output"
    path.mkdir(exist_ok=True)
    yield path


def _module_name(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rpartition(".")[2].removeprefix("test_")


@pytest.fixture(scope="module")
def sim_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return tuple(getattr(request.module, "SIM_ARGS", FAST_SIM))


@pytest.fixture(scope="module")
def sim(
    request: pytest.FixtureRequest, sim_args: tuple[str, ...], output_dir: Path
) -> Iterator[Service]:
    """A real `lanegate simulate` for this module (see SIM_ARGS above)."""
    with running(start_simulator(f"sim-{_module_name(request)}", output_dir, *sim_args)) as sim:
        yield sim


@pytest.fixture(scope="module")
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return Scenario(request.module.SCRIPT)


@pytest.fixture(scope="module")
def upstream(scenario: Scenario) -> Iterator[ScriptedUpstream]:
    """A real scripted upstream answering with `scenario.script` (a test may change it)."""
    with ScriptedUpstream(scenario) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A real `lanegate serve` in front of this module's upstream (see GATEWAY_* above)."""
    module, name = request.module, _module_name(request)
    upstream = request.getfixturevalue(getattr(module, "GATEWAY_UPSTREAM", "sim"))
    policy = tmp_path_factory.mktemp(f"gw-{name}") / "policy.yaml"
    policy.write_text(module.GATEWAY_POLICY.replace("{url}", upstream.url))
    env = getattr(module, "GATEWAY_ENV", None)
    with running(start_gateway(f"gw-{name}", policy, output_dir, env=env)) as service:
        yield service


@pytest.fixture
def agent(request: pytest.FixtureRequest, output_dir: Path) -> Iterator[Service]:
    """A real `lanegate agent` on loopback serving this machine's signals behind AGENT_KEY."""
    args = ["agent", "--host", "127.0.0.1", "--key", "env:T_AGENT_KEY", "--interval", "0.2"]
    name, env = f"agent-{_module_name(request)}", {"T_AGENT_KEY": AGENT_KEY}
    service = start_lanegate(name, args, ready_path="/healthz", log_dir=output_dir, env=env)
    with running(service) as agent:
        yield agent


@pytest.fixture
def openai_client() -> Iterator[OpenAIClients]:
    """`openai_client(service, key="any", **headers)`: an openai SDK client, closed at teardown."""
    clients = OpenAIClients()
    yield clients
    clients.close()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """`closing(client)` returns `client` and closes it at teardown (any SDK client)."""
    with contextlib.ExitStack() as stack:
        yield lambda client: stack.enter_context(contextlib.closing(client))
