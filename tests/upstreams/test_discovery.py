"""Discovery against real servers: a simulated Ollama, a scripted llama.cpp, a dead port."""

from __future__ import annotations

import time

import pytest

from gateway.policy.spec import Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.circuit_breaker import BreakerConfig, BreakerState
from gateway.upstreams.client import create_client
from gateway.upstreams.discovery import Discovery, read_inventory
from gateway.upstreams.router import UpstreamRouter
from tests.conftest import DATA
from tests.support.clock import FakeClock
from tests.support.processes import Service, free_port
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest


def _spec(name: str, url: str, kind: UpstreamKind, slots: int = 4) -> UpstreamSpec:
    return UpstreamSpec(name, "local", kind, url, slots, Timeouts(connect_s=1))


SIM_ARGS = ("--profile", "m2-mini-16gb")


async def test_ollama_tags_and_ps(sim: Service) -> None:
    client = create_client(_spec("mini", sim.url, UpstreamKind.OLLAMA))
    try:
        result = await read_inventory(client, time.monotonic())
    finally:
        await client.aclose()
    assert result.error is None
    assert "llama3.1:8b" in result.inventory.models
    assert len(result.inventory.digests["llama3.1:8b"]) == 64
    assert result.inventory.resident <= result.inventory.models


async def test_llama_server_models_and_slots(caplog: pytest.LogCaptureFixture) -> None:
    bodies = {
        "/v1/models": (DATA / "responses" / "llama-server__v1_models.json").read_bytes(),
        "/slots": (DATA / "responses" / "llama-server__slots_idle.json").read_bytes(),
    }

    def answer(request: SeenRequest) -> Script:
        return Script(chunks=[bodies[request.path]], content_type="application/json")

    with ScriptedUpstream(answer) as server:
        client = create_client(_spec("llama", server.url, UpstreamKind.LLAMACPP, slots=2))
        discovery = Discovery({"llama": client}, time.monotonic)
        try:
            await discovery.refresh()
        finally:
            await client.aclose()
    result = discovery.inventories["llama"]
    assert result.slots == 4 and result.inventory.resident == {"models/tiny-llama.gguf"}
    assert "reports 4 parallel slots but the policy says max_concurrency: 2" in caplog.text


async def test_dead_upstream_keeps_last_inventory_and_says_why(sim: Service) -> None:
    good = create_client(_spec("mini", sim.url, UpstreamKind.OLLAMA))
    discovery = Discovery({"mini": good}, time.monotonic)
    await discovery.refresh()
    await good.aclose()
    dead = create_client(_spec("mini", f"http://127.0.0.1:{free_port()}", UpstreamKind.OLLAMA))
    discovery.clients = {"mini": dead}
    try:
        await discovery.refresh()
    finally:
        await dead.aclose()
    result = discovery.inventories["mini"]
    assert result.error and "llama3.1:8b" in result.inventory.models


async def test_non_json_answer_is_an_error_not_a_crash() -> None:
    def answer(request: SeenRequest) -> Script:
        return Script(chunks=[b"<html>nope</html>"], content_type="text/html")

    with ScriptedUpstream(answer) as server:
        client = create_client(_spec("odd", server.url, UpstreamKind.OPENAI))
        try:
            result = await read_inventory(client, 0.0)
        finally:
            await client.aclose()
    assert result.error is not None and "JSONDecodeError" in result.error
    assert result.inventory.models == frozenset()


async def test_probes_open_a_dead_upstreams_breaker_and_close_a_recovered_one(
    sim: Service,
) -> None:
    """No request goes to the dead upstream; its breaker opens on probes alone. Once the
    cooldown passes, a successful probe (not a user's request) closes the breaker."""
    clock = FakeClock(100.0)
    router = UpstreamRouter(dict, clock, BreakerConfig(failures_to_open=3, cooldown_s=5))
    dead = create_client(_spec("dead", f"http://127.0.0.1:{free_port()}", UpstreamKind.OLLAMA))
    live = create_client(_spec("mini", sim.url, UpstreamKind.OLLAMA))
    clients = {"dead": dead, "mini": live}
    discovery = Discovery(clients, clock, on_probe=router.probed)
    try:
        for _ in range(3):
            await discovery.refresh()
        assert router.breaker("dead").state(clock.now) is BreakerState.OPEN
        assert "probe: " in router.breaker("dead").reason
        assert router.breaker("mini").state(clock.now) is BreakerState.CLOSED
        clock.now += 6  # cooldown over: half-open, and the upstream is back (now: the sim)
        clients["dead"] = create_client(_spec("dead", sim.url, UpstreamKind.OLLAMA))
        await discovery.refresh()
        assert router.breaker("dead").state(clock.now) is BreakerState.CLOSED
    finally:
        for client in (dead, live, clients["dead"]):
            await client.aclose()


async def test_an_upstream_answering_errors_is_reachable_for_the_breaker() -> None:
    """A 404 on /api/ps (an older server) is a discovery error, not a dead host."""

    def answer(request: SeenRequest) -> Script:
        return Script(chunks=[b"not here"], status=404, content_type="text/plain")

    clock = FakeClock(100.0)
    router = UpstreamRouter(dict, clock, BreakerConfig(failures_to_open=1))
    with ScriptedUpstream(answer) as server:
        client = create_client(_spec("odd", server.url, UpstreamKind.OLLAMA))
        discovery = Discovery({"odd": client}, clock, on_probe=router.probed)
        try:
            await discovery.refresh()
        finally:
            await client.aclose()
    result = discovery.inventories["odd"]
    assert result.error is not None and not result.unreachable
    assert router.breaker("odd").state(clock.now) is BreakerState.CLOSED
