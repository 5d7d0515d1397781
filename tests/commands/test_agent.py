"""`lanegate agent`: a real agent process serving this machine's /proc signals behind a key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from gateway.offload.host_signals import Pressure, parse_meminfo, parse_simulator_signals
from gateway.offload.signals import HttpSource
from gateway.serving.keys import hash_key
from tests.support.processes import AGENT_KEY, Service, start_lanegate

pytestmark = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc")


def meminfo_swap_total() -> int | None:
    return parse_meminfo(Path("/proc/meminfo").read_text()).swap_total_bytes


def test_signals_with_key_are_this_machines_proc(agent: Service) -> None:
    response = httpx.get(f"{agent.url}/signals", headers={"Authorization": f"Bearer {AGENT_KEY}"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = parse_meminfo(Path("/proc/meminfo").read_text())
    assert body["swap_total_bytes"] == expected.swap_total_bytes
    assert body["memory_total_bytes"] == expected.memory_total_bytes
    assert body["source"] == "linux"
    assert body["sampled_at"] > 0
    assert set(body) == {
        "swap_used_bytes",
        "swap_total_bytes",
        "pressure_level",
        "pressure",
        "memory_total_bytes",
        "memory_available_bytes",
        "source",
        "sampled_at",
        "error",
    }
    levels = {"normal": 1, "warn": 2, "critical": 4, "unknown": 0}
    assert body["pressure_level"] == levels[body["pressure"]]
    parsed = parse_simulator_signals(body)
    assert parsed.swap_total_bytes == expected.swap_total_bytes
    assert parsed.pressure.value == body["pressure"]
    if Path("/proc/pressure/memory").exists():
        assert body["error"] is None and parsed.pressure is not Pressure.UNKNOWN


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "no"}])
def test_signals_without_the_key_is_401(agent: Service, headers: dict[str, str]) -> None:
    response = httpx.get(f"{agent.url}/signals", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert "Bearer" in error["message"]


def test_healthz_needs_no_key(agent: Service) -> None:
    response = httpx.get(f"{agent.url}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_http_source_reads_the_agent(agent: Service) -> None:
    source = HttpSource(f"{agent.url}/signals", key=AGENT_KEY)
    try:
        signals = await source.read()
    finally:
        await source.aclose()
    assert source.last_error is None
    assert signals.source == "linux"
    assert signals.swap_total_bytes == meminfo_swap_total()

    wrong = HttpSource(f"{agent.url}/signals", key="nope")
    try:
        assert (await wrong.read()).pressure is Pressure.UNKNOWN
    finally:
        await wrong.aclose()
    assert "401" in (wrong.last_error or "")


def test_sha256_key_ref_works(tmp_path: Path) -> None:
    service = start_lanegate(
        "agent-sha",
        ["agent", "--key", hash_key("s3cret")],
        ready_path="/healthz",
        log_dir=tmp_path,
    )
    try:
        ok = httpx.get(f"{service.url}/signals", headers={"Authorization": "Bearer s3cret"})
        bad = httpx.get(f"{service.url}/signals", headers={"Authorization": "Bearer s3cre"})
    finally:
        service.stop()
    assert (ok.status_code, bad.status_code) == (200, 401)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_non_loopback_without_key_refuses(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "--host", host, "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen" in err and "--key" in err


def test_bad_key_refs_refuse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T_UNSET_AGENT_KEY", raising=False)
    assert main(["agent", "--host", "0.0.0.0", "--key", "hunter2", "--port", "1"]) == 2
    assert "not a key reference" in capsys.readouterr().err
    assert main(["agent", "--host", "0.0.0.0", "--key", "env:T_UNSET_AGENT_KEY"]) == 2
    assert "unset or empty" in capsys.readouterr().err


def test_loopback_without_key_serves_openly(tmp_path: Path) -> None:
    service = start_lanegate("agent-open", ["agent"], ready_path="/healthz", log_dir=tmp_path)
    try:
        response = httpx.get(f"{service.url}/signals")
    finally:
        service.stop()
    assert response.status_code == 200 and response.json()["source"] == "linux"
