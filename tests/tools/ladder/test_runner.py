"""The load runner against servers that misbehave in the ways real ones do."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from gateway.tools.ladder.prompts import make_prompts
from gateway.tools.ladder.runner import Contract, LaneLoad, LoadRunner
from gateway.tools.ladder.signals import ProcessWatch
from tests.e2e.conftest import ClosingUpstream
from tests.support.scripted_upstream import Script, ScriptedUpstream


@pytest.fixture()
def closing() -> ClosingUpstream:
    with ClosingUpstream(close_after_s=0.2) as upstream:
        yield upstream


async def test_a_keep_alive_connection_closed_under_a_request_is_resent(
    closing: ClosingUpstream,
) -> None:
    # Every response's connection is closed 0.2 s later without reading more, as llama.cpp
    # does: the next request, sent at once on the pooled connection, is never answered.
    runner = LoadRunner(closing.url + "/v1", "m", Contract(), make_prompts(1, 16))
    try:
        await runner.run_step(1, [LaneLoad("", concurrency=1)], seconds=0.6)
    finally:
        await runner.aclose()
        await asyncio.sleep(0.3)  # let the server's handlers finish before its loop stops
    assert len(runner.rows) >= 3
    assert [row.error for row in runner.rows] == [None] * len(runner.rows)
    assert all(row.status == 200 and row.ttft_s is not None for row in runner.rows)


async def test_an_error_answer_is_a_row_with_its_message_and_a_dead_server_too() -> None:
    body = b'{"error": {"message": "lane \'batch\' is full", "type": "rate_limit"}}'
    full = Script(chunks=[body], status=429, content_type="application/json")
    with ScriptedUpstream(lambda seen: full) as upstream:
        runner = LoadRunner(upstream.url + "/v1", "m", Contract(), make_prompts(1, 16))
        try:
            row = await runner.request(
                1, LaneLoad("batch", concurrency=1, headers={"X-Lane": "batch"})
            )
        finally:
            await runner.aclose()
        assert upstream.requests[0].headers["x-lane"] == "batch"
        assert upstream.requests[0].path == "/v1/chat/completions"
    assert (row.status, row.error, row.lane, row.ttft_s) == (
        429,
        "lane 'batch' is full",
        "batch",
        None,
    )
    assert not row.ok

    gone = LoadRunner(upstream.url + "/v1", "m", Contract(), make_prompts(1, 16))
    try:
        row = await gone.request(1, LaneLoad("", concurrency=1))
    finally:
        await gone.aclose()
    assert row.status == 0 and row.error is not None and row.error.startswith("ConnectError")


def test_watch_by_name_sums_every_matching_process() -> None:
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        by_name, count = ProcessWatch(name="sleep").rss()
        by_pid, one = ProcessWatch(pid=sleepers[0].pid).rss()
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    assert count >= 2 and one == 1
    assert by_name is not None and by_pid is not None and by_name > by_pid > 0
    assert ProcessWatch(pid=sleepers[0].pid).rss() == (None, 0)  # gone
    assert not ProcessWatch().active
