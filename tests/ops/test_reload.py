"""Hot policy reload on a real `lanegate serve`: POST /admin/reload, SIGHUP and a file edit.

Valid reloads under load (streams finish intact, new caps apply to new requests, removed
lanes' waiters get a clear error, the upstream never sees more than its capacity), invalid
ones (bad YAML, a bad field: the error names file, line and field, the old policy serves on),
and an upstream swapped for another one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.policy import PolicyError, load_policy
from gateway.settings import Settings
from tests.conftest import DATA
from tests.support.processes import Service, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest
from tests.support.streams import chat_body, split_into, stream_chat, until

RECORDED = (DATA / "streams" / "llama-server__chat_stream_usage.sse").read_bytes()
ADMIN = {"authorization": "Bearer reload-admin-secret"}
CAPACITY = 4


def _policy(url: str, lanes: str, anonymous: str, name: str = "scripted") -> str:
    return f"""version: 1
upstreams:
  - {{name: {name}, kind: openai, base_url: '{url}', max_concurrency: {CAPACITY}}}
admin_key: env:LG_RELOAD_ADMIN
lanes:
{lanes}
classify:
  default_lane: chat
  anonymous_lanes: [{anonymous}]
slo: {{adaptive_limits: false}}  # the hand caps alone: what a reload must carry over
"""


V1_LANES = """  - {name: chat, priority: 100, max_concurrency: 4}
  - {name: batch, priority: 10, max_concurrency: 2, max_queue: 10, queue_timeout: 30}"""
V2_LANES = """  - {name: chat, priority: 100, max_concurrency: 1, queue_timeout: 30}
  - {name: embed, priority: 50, max_concurrency: 2}"""


def _script(request: SeenRequest) -> Script:
    if request.method == "GET":  # discovery
        return Script(chunks=[b'{"object":"list","data":[]}'], content_type="application/json")
    delay = {"slow": 0.2, "medium": 0.05}.get(json.loads(request.body)["model"], 0.01)
    return Script(chunks=split_into(RECORDED, 15), delay_s=delay)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_script) as server:
        yield server


ENV = {"LG_RELOAD_ADMIN": "reload-admin-secret", "LANEGATE_DISCOVERY_INTERVAL": "3600"}


def _error(response: httpx.Response) -> dict[str, str]:
    return dict(response.json()["error"])


async def test_valid_reload_under_load(
    upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(upstream.url, V1_LANES, "chat, batch"))
    gateway = start_gateway("gw-reload", path, output_dir, env=ENV)
    try:
        limits = httpx.Limits(max_connections=30)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
            await until(lambda: any(r.method == "GET" for r in upstream.requests))
            await until(lambda: upstream.in_flight == 0)
            upstream.max_in_flight = 0
            running = [
                asyncio.create_task(stream_chat(http, "slow", lane)) for lane in ("chat",) * 2
            ]
            running += [asyncio.create_task(stream_chat(http, "slow", "batch")) for _ in range(2)]
            await until(lambda: upstream.in_flight == CAPACITY)
            queued = [asyncio.create_task(stream_chat(http, "slow", "batch")) for _ in range(2)]
            await asyncio.sleep(0.2)
            assert not any(task.done() for task in queued)

            path.write_text(_policy(upstream.url, V2_LANES, "chat, embed"))
            reloaded = await http.post("/admin/reload", headers=ADMIN)
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["policy_version"] == 2
            assert "-batch" in reloaded.json()["changes"]
            # New requests under the new policy, while the old ones hold every slot.
            new_chat = [asyncio.create_task(stream_chat(http, "fast", "chat")) for _ in range(3)]

            for status, headers, body in await asyncio.gather(*queued):
                assert status == 503 and headers["x-lanegate-lane"] == "batch"
                error = json.loads(body)["error"]
                assert error["code"] == "lane_removed" and "policy reload" in error["message"]
            for status, _, body in await asyncio.gather(*running):
                assert status == 200 and body == RECORDED  # in flight across the swap: intact
            for status, headers, body in await asyncio.gather(*new_chat):
                assert status == 200 and body == RECORDED
                assert headers["x-lanegate-lane"] == "chat"
        # Never more than the upstream's capacity, though a fresh gate would have let the new
        # chat requests in next to the four old streams.
        assert upstream.max_in_flight == CAPACITY
        chat_peak = await _peak_of(upstream, gateway, lane="chat", count=3)
        assert chat_peak == 1  # the new cap of chat
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            embed = await http.post(
                "/v1/chat/completions", json=chat_body("fast"), headers={"x-lane": "embed"}
            )
        assert embed.status_code == 200 and embed.headers["x-lanegate-lane"] == "embed"
    finally:
        gateway.stop()


async def _peak_of(upstream: ScriptedUpstream, gateway: Service, *, lane: str, count: int) -> int:
    """The most requests of `lane` the upstream saw at once, out of `count` sent together."""
    upstream.max_in_flight = 0
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        results = await asyncio.gather(*(stream_chat(http, "medium", lane) for _ in range(count)))
    assert all(status == 200 for status, _, _ in results)
    return upstream.max_in_flight


def test_invalid_reloads_keep_the_old_policy(
    upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path
) -> None:
    path = tmp_path / "policy.yaml"
    good = _policy(upstream.url, V1_LANES, "chat, batch")
    path.write_text(good)
    gateway = start_gateway("gw-reload-bad", path, output_dir, env=ENV)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert http.post("/admin/reload").status_code == 401  # the admin key is needed

            path.write_text(good + "lanes: [\n")  # YAML syntax, on the last line
            refused = http.post("/admin/reload", headers=ADMIN)
            assert refused.status_code == 400
            error = _error(refused)
            assert error["code"] == "invalid_policy"
            where = re.search(rf"{re.escape(str(path))}:(\d+): .*YAML syntax", error["message"])
            assert where and int(where[1]) > len(good.splitlines())  # at the end, where it broke

            bad_field = good.replace("max_concurrency: 2", "max_concurrency: lots")
            path.write_text(bad_field)
            refused = http.post("/admin/reload", headers=ADMIN)
            error = _error(refused)
            line = 1 + bad_field.splitlines().index(
                next(row for row in bad_field.splitlines() if "lots" in row)
            )
            assert refused.status_code == 400 and error["param"] == "lanes[1].max_concurrency"
            assert f"{path}:{line}: lanes[1].max_concurrency" in error["message"]

            served = http.post(
                "/v1/chat/completions", json=chat_body("fast"), headers={"x-lane": "batch"}
            )
            assert served.status_code == 200  # the old policy (with batch) still serves
            assert "policy reload (admin) refused" in gateway.log()
    finally:
        gateway.stop()


def _lane_works(gateway: Service, lane: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body("fast"),
        headers={"x-lane": lane},
        timeout=10,
    )


def test_sighup_and_file_edit_reload(
    upstream: ScriptedUpstream, tmp_path: Path, output_dir: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy(upstream.url, V1_LANES, "chat, batch"))
    gateway = start_gateway("gw-reload-hup", path, output_dir, env=ENV)
    with ScriptedUpstream(_script) as second:
        try:
            # SIGHUP with an invalid file: refused, logged; then a valid one applies. (The watch
            # would load these too: each is written and signalled within one poll.)
            path.write_text(_policy(upstream.url, V2_LANES, "chat, nope"))
            gateway.process.send_signal(signal.SIGHUP)
            _wait(lambda: "policy reload (SIGHUP) refused" in gateway.log())
            assert "classify.anonymous_lanes" in gateway.log()
            assert _lane_works(gateway, "embed").status_code == 400  # unknown lane still

            path.write_text(_policy(upstream.url, V2_LANES, "chat, embed"))
            gateway.process.send_signal(signal.SIGHUP)
            _wait(lambda: _lane_works(gateway, "embed").status_code == 200)

            # An edit alone is picked up by the watch, here swapping the upstream for another.
            path.write_text(_policy(second.url, V1_LANES, "chat, batch", name="second"))
            started = time.monotonic()
            _wait(lambda: _lane_works(gateway, "batch").status_code == 200)
            assert time.monotonic() - started < 5
            answer = _lane_works(gateway, "chat")
            assert answer.status_code == 200 and answer.headers["x-lanegate-upstream"] == "second"
            assert second.requests and answer.content == RECORDED
            _wait(lambda: "closed 1 old upstream client" in gateway.log())
        finally:
            gateway.stop()


def _wait(condition: Callable[[], bool], timeout: float = 8) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


async def test_reload_error_set_and_cleared(tmp_path: Path) -> None:
    """In process, without HTTP: what /admin/status reads off the gateway."""
    path = tmp_path / "policy.yaml"
    good = _policy("http://127.0.0.1:9", V1_LANES, "chat, batch")
    path.write_text(good)
    gateway = create_app(load_policy(path), Settings(policy=path, state_dir=tmp_path))
    await gateway.startup()
    try:
        path.write_text(good.replace("priority: 10,", "priority: high,"))
        with pytest.raises(PolicyError):
            await gateway.reloader.reload("test")
        assert gateway.reload_error is not None and "lanes[1].priority" in gateway.reload_error
        assert gateway.runtime.version == 1 and gateway.policy.lane("batch").priority == 10
        loaded_at = gateway.runtime.loaded_at
        path.write_text(_policy("http://127.0.0.1:9", V2_LANES, "chat, embed"))
        change = await gateway.reloader.reload("test")
        assert gateway.reload_error is None and gateway.runtime.version == 2
        assert gateway.runtime.loaded_at >= loaded_at and change.lanes.removed == ("batch",)
        assert gateway.runtime.gate.lanes["chat"].max_concurrency == 1
    finally:
        await gateway.shutdown()


async def test_reload_adds_a_remote_pool_and_rebuilds_offload(tmp_path: Path) -> None:
    """In process: the offload loop follows the policy; removed upstreams' clients go."""
    path = tmp_path / "policy.yaml"
    local = _policy("http://127.0.0.1:9", V1_LANES, "chat, batch")
    remote = "  - {name: studio, kind: openai, pool: remote, base_url: 'http://127.0.0.1:7', "
    offloading = local.replace("admin_key:", remote + "max_concurrency: 2}\nadmin_key:")
    offloading += "offload: {sample_interval: 0.25}\n"
    path.write_text(local)
    gateway = create_app(load_policy(path), Settings(policy=path, state_dir=tmp_path))
    await gateway.startup()
    try:
        assert gateway.runtime.offload is None
        path.write_text(offloading)
        change = await gateway.reloader.reload("test")
        assert change.offload and change.upstreams.added == ("studio",)
        assert gateway.clients["studio"].spec.pool == "remote"
        async with asyncio.timeout(5):
            while gateway.runtime.offload is None:  # rebuilt in the background  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert [u.name for u in gateway.runtime.offload.remote] == ["studio"]

        path.write_text(local)
        change = await gateway.reloader.reload("test")
        assert change.upstreams.removed == ("studio",)
        async with asyncio.timeout(5):
            while gateway.runtime.offload is not None or "studio" in gateway.clients:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert gateway.runtime.sampler.running and gateway.runtime.version == 3  # host signals stay
    finally:
        await gateway.shutdown()


async def test_reload_that_changes_who_may_call_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    good = _policy("http://127.0.0.1:9", V1_LANES, "chat, batch")
    path.write_text(good)
    gateway = create_app(load_policy(path), Settings(policy=path, state_dir=tmp_path))
    await gateway.startup()
    try:
        path.write_text(good.replace("anonymous_lanes: [chat, batch]", "anonymous_lanes: [chat]"))
        with caplog.at_level(logging.INFO, logger="lanegate.reload"):
            await gateway.reloader.reload("test")
        (warning,) = [
            r
            for r in caplog.records
            if r.getMessage().startswith("policy reload") and r.levelno == logging.WARNING
        ]
        text = warning.getMessage()
        assert text.startswith("policy reload (test): who may call changed (version 2):")
        assert "X-Lane may pick: chat, batch) -> allowed without a key" in text
        assert gateway.access_change == {
            "version": 2,
            "at": gateway.runtime.loaded_at,
            "changes": [text.split("\n  ", 1)[1]],
        }
        caplog.clear()
        path.write_text(path.read_text().replace("priority: 10,", "priority: 11,"))
        with caplog.at_level(logging.INFO, logger="lanegate.reload"):
            await gateway.reloader.reload("test")
        assert not [r for r in caplog.records if "who may call" in r.getMessage()]
        assert gateway.access_change["version"] == 2  # the last change of access stays shown
    finally:
        await gateway.shutdown()
