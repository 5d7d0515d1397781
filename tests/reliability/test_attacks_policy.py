"""Issue 18, hostile policy files and the gateway's own resources: "billion laughs" YAML and an
oversized file (5), the ledger writer and background steps that fail (3), and a gateway out of
file descriptors (1)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.errors import GatewayOutOfFiles
from gateway.observe.ledger import RequestLedger, SqliteLedgerStore, read_rows
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.ops.periodic import Periodic
from gateway.policy.loader import PolicyError, check_policy_text
from gateway.policy.spec import Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams import http11
from tests.reliability.conftest import ADMIN, LANES
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import free_port, start_gateway
from tests.support.scripted_upstream import ScriptedUpstream

pytestmark = pytest.mark.faults

VALID = "version: 1\nupstreams:\n  - {name: a, kind: ollama, base_url: 'http://127.0.0.1:1'}\n"


def laughs(levels: int, width: int = 9) -> str:
    """Each level's alias list repeats the one before `width` times: width**levels nodes."""
    lines = ["l0: &l0 [lol]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return VALID + "x-laughs:\n" + "\n".join("  " + line for line in lines) + "\n"


# -- 5. hostile policy files ---------------------------------------------------------------


@pytest.mark.parametrize("levels", [6, 30])
def test_alias_expansion_is_bounded_before_anything_walks_it(levels: int) -> None:
    with pytest.raises(PolicyError) as caught:
        check_policy_text(laughs(levels), "laughs.yaml")
    assert "alias" in str(caught.value), caught.value


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(PolicyError) as caught:
        check_policy_text(VALID + "x-loop: &loop [*loop]\n", "loop.yaml")
    assert "alias" in str(caught.value)


def test_an_oversized_policy_file_is_refused_unread() -> None:
    text = VALID + "# " + "x" * (2 * 1024 * 1024) + "\n"
    with pytest.raises(PolicyError) as caught:
        check_policy_text(text, "big.yaml")
    assert "MiB" in str(caught.value)


def test_a_laughs_reload_keeps_the_old_policy_serving(
    output_dir: Path, tmp_path: Path, instant_upstream: ScriptedUpstream
) -> None:
    line = upstream_entry("scripted", instant_upstream.url, "llamacpp")
    policy = write_policy(tmp_path / "policy.yaml", [line], LANES)
    service = start_gateway("gw-attacks-laughs", policy, output_dir, state=tmp_path / "state")
    try:
        policy.write_text(laughs(30))
        admin = {"authorization": f"Bearer {ADMIN}"}
        refused = httpx.post(service.url + "/admin/reload", headers=admin, timeout=30)
        assert refused.status_code == 400, refused.text
        assert "alias" in refused.json()["error"]["message"]
        assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        chat = httpx.post(service.url + "/v1/chat/completions", json=body, timeout=30)
        assert chat.status_code == 200, chat.text
    finally:
        service.stop()


# -- 3. background work that fails -----------------------------------------------------------


def _labels(request_id: str) -> RequestLabels:
    return RequestLabels(request_id, "POST", "/v1/completions", "work", "up", "m")


def _record(completion_tokens: int) -> RequestRecord:
    return RequestRecord(
        ttft_s=None,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=0.1,
        prompt_tokens=1,
        completion_tokens=completion_tokens,
        tokens_estimated=False,
        chunks=1,
        status=200,
        error=None,
    )


async def test_a_row_sqlite_cannot_store_does_not_stop_the_ledger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An int SQLite cannot bind raises OverflowError (not an sqlite3.Error): that row is
    dropped and logged, every other row is written, and the writer goes on."""
    ledger = RequestLedger(SqliteLedgerStore(tmp_path / "ledger.sqlite"), retention_days=1)
    ledger.append(_labels("good-1"), _record(3))
    ledger.append(_labels("poisoned"), _record(2**64))
    ledger.append(_labels("good-2"), _record(4))
    with caplog.at_level(logging.ERROR, "lanegate.ledger"):
        await ledger.flush_logged()
    ledger.append(_labels("good-3"), _record(5))
    await ledger.flush_logged()
    await ledger.stop()
    ids = {row[1] for row in read_rows(tmp_path / "ledger.sqlite", 0)}
    assert ids == {"good-1", "good-2", "good-3"}
    assert "poisoned" in caplog.text or "dropped" in caplog.text


async def test_a_periodic_step_that_raises_is_logged_and_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []
    done = asyncio.Event()

    async def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        done.set()

    periodic = Periodic(step, 0.01, name="test step")
    with caplog.at_level(logging.ERROR):
        periodic.start()
        await asyncio.wait_for(done.wait(), 10)
        await periodic.stop()
    assert len(calls) >= 2
    assert "test step" in caplog.text and "OverflowError" in caplog.text


# -- 1. out of file descriptors is not an upstream fault ------------------------------------


@contextlib.contextmanager
def fds_exhausted() -> Iterator[None]:
    """Every file descriptor this process may open is taken (soft limit lowered meanwhile)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_emfile_on_an_upstream_connect_is_reported_as_the_gateways() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    spec = UpstreamSpec("scripted", "local", UpstreamKind.LLAMACPP, url, 4, Timeouts())
    client = http11.LeanUpstream(spec)
    try:
        with fds_exhausted(), pytest.raises(GatewayOutOfFiles) as caught:
            await client.open("GET", "/health", None, {})
    finally:
        await client.aclose()
    assert caught.value.errno in (errno.EMFILE, errno.ENFILE)
    assert "LANEGATE" in str(caught.value) or "ulimit" in str(caught.value)
