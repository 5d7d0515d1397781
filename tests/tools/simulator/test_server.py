"""The simulator over real sockets, driven by the real `openai` and `ollama` clients."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import ollama
import openai
import pytest

from gateway.tools.simulator.engine import Profile
from tests.support.clients import OpenAIClients
from tests.support.threads import Worker
from tests.tools.simulator.sim_harness import SimServer, running


def aoa(server: SimServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sim", max_retries=0)


MSGS: Any = [{"role": "user", "content": "Tell me about slots and queues, briefly."}]


# ------------------------------------------------------------------------ OpenAI-compatible


def test_chat_nonstream_has_usage_and_length_finish(
    sim: SimServer, openai_client: OpenAIClients
) -> None:
    out = openai_client(sim, "sim").chat.completions.create(
        model="llama3:8b", messages=MSGS, max_tokens=5
    )
    assert out.object == "chat.completion"
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens == len("Tell me about slots and queues, briefly.") // 4


def test_chat_default_limit_is_a_natural_stop(sim: SimServer, openai_client: OpenAIClients) -> None:
    out = openai_client(sim, "sim").chat.completions.create(model="llama3:8b", messages=MSGS)
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens == sim.profile.default_max_tokens


def test_chat_stream_role_first_one_delta_per_token_usage_last(
    sim: SimServer, openai_client: OpenAIClients
) -> None:
    stream = openai_client(sim, "sim").chat.completions.create(
        model="llama3:8b",
        messages=MSGS,
        max_completion_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [
        c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) == 6
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_async_chat_stream_and_completions(sim: SimServer) -> None:
    async def main() -> tuple[str, str, str]:
        client = aoa(sim)
        stream = await client.chat.completions.create(
            model="llama3:8b", messages=MSGS, max_tokens=4, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        comp = await client.completions.create(model="llama3:8b", prompt="Once", max_tokens=3)
        cstream = await client.completions.create(
            model="llama3:8b",
            prompt="Once",
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [c async for c in cstream]
        assert parts[-1].usage is not None and parts[-1].usage.completion_tokens == 3
        streamed = "".join(c.choices[0].text for c in parts if c.choices)
        await client.close()
        return text, comp.choices[0].text, streamed

    text, comp, streamed = asyncio.run(main())
    assert text and comp and streamed
    assert len(comp.split()) == 3


def test_embeddings_are_deterministic_vectors(sim: SimServer, openai_client: OpenAIClients) -> None:
    client = openai_client(sim, "sim")
    out = client.embeddings.create(model="nomic-embed-text", input=["alpha", "beta", "alpha"])
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2]
    assert len(vectors[0]) == sim.profile.embedding_dim
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    assert out.usage.prompt_tokens == 3


def test_responses_nonstream_and_stream(sim: SimServer, openai_client: OpenAIClients) -> None:
    client = openai_client(sim, "sim")
    resp = client.responses.create(model="llama3:8b", input="Say hi", max_output_tokens=4)
    assert resp.status == "incomplete" and resp.output_text
    assert resp.usage is not None and resp.usage.output_tokens == 4
    events = list(client.responses.create(model="llama3:8b", input=MSGS, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == sim.profile.default_max_tokens
    assert [e.sequence_number for e in events] == list(range(len(events)))
    with client.responses.stream(model="llama3:8b", input="hi", max_output_tokens=3) as s:
        final = s.get_final_response()
    assert final.status == "incomplete" and len(final.output_text.split()) == 3


def test_models_list_retrieve_and_unknown(sim: SimServer, openai_client: OpenAIClients) -> None:
    client = openai_client(sim, "sim")
    assert [m.id for m in client.models.list()] == ["llama3:8b", "nomic-embed-text:latest"]
    assert client.models.retrieve("llama3:8b").id == "llama3:8b"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("nope")
    assert err.value.body["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope:1b", messages=MSGS)


# ------------------------------------------------------------------------------ Ollama


def test_ollama_chat_generate_stream_and_not(sim: SimServer) -> None:
    with ollama.Client(host=sim.url) as client:
        five = {"num_predict": 5}
        parts = list(client.chat("llama3:8b", messages=MSGS, stream=True, options=five))
        assert [p.done for p in parts] == [False] * 5 + [True]
        final = parts[-1]
        assert final.done_reason == "length" and final.eval_count == 5
        assert final.total_duration and final.eval_duration and final.prompt_eval_count
        assert final.total_duration >= final.eval_duration
        whole = client.chat("llama3:8b", messages=MSGS, options={"num_predict": 5})
        assert whole.message.content and whole.done
        gen = client.generate("llama3:8b", prompt="Why?", options={"num_predict": -1})
        assert gen.done_reason == "stop" and gen.eval_count == sim.profile.default_max_tokens
        chunks = client.generate("llama3:8b", "hi", stream=True)
        streamed = "".join(p.response or "" for p in chunks)
        assert streamed


def test_ollama_listing_show_embed_and_errors(sim: SimServer) -> None:
    with ollama.Client(host=sim.url) as client:
        tags = client.list()
        assert [m.model for m in tags.models] == ["llama3:8b", "nomic-embed-text:latest"]
        first = tags.models[0]
        assert first.digest and len(first.digest) == 64 and first.size == 4_661_224_676
        assert first.details and first.details.quantization_level == "Q4_0"
        ps = client.ps()
        assert ps.models[0].size_vram and ps.models[0].expires_at and ps.models[0].context_length
        show = client.show("llama3:8b")
        assert show.capabilities == ["completion"] and show.modelinfo
        emb = client.embed("nomic-embed-text", input=["a", "b"])
        assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == sim.profile.embedding_dim
        with pytest.raises(ollama.ResponseError) as err:
            client.chat("missing", messages=MSGS)
        assert err.value.status_code == 404 and "not found" in err.value.error
        loaded = client.generate("llama3:8b", prompt="")
        assert loaded.done_reason == "load"


def test_async_ollama_client(sim: SimServer) -> None:
    async def main() -> list[Any]:
        async with ollama.AsyncClient(host=sim.url) as client:
            stream = await client.chat("llama3:8b", messages=MSGS, stream=True)
            return [p async for p in stream]

    parts = asyncio.run(main())
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_plain_endpoints(sim: SimServer) -> None:
    assert httpx.get(sim.url + "/").text == "Ollama is running"
    assert httpx.head(sim.url + "/").status_code == 200
    assert httpx.get(sim.url + "/health").json() == {"status": "ok"}
    assert httpx.get(sim.url + "/api/version").json()["version"]
    signals = httpx.get(sim.url + "/sim/signals").json()
    assert set(signals) == {
        "swap_used_bytes",
        "swap_total_bytes",
        "pressure_level",
        "memory_used_bytes",
        "memory_total_bytes",
        "active",
        "queued",
    }
    assert signals["pressure_level"] == 1 and signals["swap_used_bytes"] == 0
    bad = httpx.post(sim.url + "/v1/chat/completions", content=b"{nope")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------- behaviour under load


def test_same_seed_same_text_and_reset_replays(
    sim: SimServer, openai_client: OpenAIClients
) -> None:
    client = openai_client(sim, "sim")

    def ask(**extra: Any) -> str:
        out = client.chat.completions.create(model="llama3:8b", messages=MSGS, **extra)
        return out.choices[0].message.content or ""

    first = [ask(), ask()]  # sequence numbers 1 and 2 after the fixture's reset
    assert first[0] != first[1]
    assert ask(seed=5) == ask(seed=5) != ask(seed=6)
    sim.reset()
    assert [ask(), ask()] == first


def _stream_times(
    url: str, rid: str, max_tokens: int, out: dict[str, Any], stop: threading.Event | None = None
) -> None:
    """Stream one chat; record (monotonic) when it was sent and its first and last tokens.
    Setting `stop` hangs up mid-stream."""
    body = {"model": "llama3:8b", "messages": MSGS, "max_tokens": max_tokens, "stream": True}
    with httpx.Client(timeout=30) as client:
        out["sent"] = time.monotonic()
        with client.stream(
            "POST", url + "/v1/chat/completions", json=body, headers={"x-request-id": rid}
        ) as resp:
            for line in resp.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    out.setdefault("first", time.monotonic())
                    out["last"] = time.monotonic()
                if stop is not None and stop.is_set():
                    return


def test_third_request_waits_for_a_free_slot(sim: SimServer) -> None:
    results: dict[str, dict[str, Any]] = {rid: {} for rid in ("a", "b", "c")}
    threads = []
    for rid in ("a", "b", "c"):
        t = Worker(functools.partial(_stream_times, sim.url, rid, 30, results[rid]))
        t.start()
        threads.append(t)
        time.sleep(0.03)  # arrival order a, b, c
    for t in threads:
        t.check(30)
    # 30 tokens take ~0.28 s with two streams: whichever request got the slots last only
    # starts once one of the others has finished (thread start-up may reorder arrivals).
    first, *_, late = sorted(results.values(), key=lambda r: r["first"])
    assert late["first"] >= min(r["last"] for r in results.values() if r is not late) - 0.05
    assert late["first"] - late["sent"] > 0.15 > first["first"] - first["sent"]
    stats = sim.stats()
    assert stats["max_active_seen"] == 2 and stats["completed"] == 3


def test_cancel_is_recorded_quickly_and_frees_the_slot(sim: SimServer) -> None:
    results: dict[str, Any] = {}
    waiter = Worker(functools.partial(_stream_times, sim.url, "queued", 3, results))
    body = {"model": "llama3:8b", "messages": MSGS, "max_tokens": 400, "stream": True}
    with httpx.Client(timeout=30) as client:
        hang_up = threading.Event()
        other = Worker(functools.partial(_stream_times, sim.url, "other", 400, {}, hang_up))
        other.start()
        _wait_for(lambda: sim.stats()["active"] == 1)
        with client.stream(
            "POST", sim.url + "/v1/chat/completions", json=body, headers={"x-request-id": "gone"}
        ) as resp:
            lines = resp.iter_lines()
            for _ in range(4):
                next(lines)
            waiter.start()
            _wait_for(lambda: sim.stats()["queued"] == 1)
            closed_at = time.monotonic()
        # leaving the block closes the connection mid-stream
    waiter.check(30)
    _wait_for(lambda: bool(sim.stats()["cancels"]))
    cancel = sim.stats()["cancels"][0]
    assert cancel["request_id"] == "gone"
    assert 0 <= cancel["at"] - closed_at < 0.2
    assert cancel["after_s"] > 0.0
    # The queued request started right after the cancel, long before "other" could finish.
    assert results["first"] - closed_at < 0.5
    hang_up.set()
    other.check(30)


def _wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_queue_full_answers_503_in_each_shape(openai_client: OpenAIClients) -> None:
    tight = Profile(
        name="tight",
        models=(),
        accept_any_model=True,
        slots=1,
        max_queue=0,
        decode_tps=100.0,
        prefill_tps=10_000.0,
        default_max_tokens=100,
    )
    with running(tight) as server:
        holder = Worker(functools.partial(_stream_times, server.url, "hold", 60, {}))
        holder.start()
        _wait_for(lambda: server.stats()["active"] == 1)
        native = httpx.post(server.url + "/api/generate", json={"model": "m", "prompt": "x"})
        assert native.status_code == 503
        assert native.json() == {
            "error": "server busy, please try again.  maximum pending requests exceeded"
        }
        with pytest.raises(openai.InternalServerError) as err:
            openai_client(server, "sim").chat.completions.create(model="m", messages=MSGS)
        assert err.value.status_code == 503
        assert err.value.body["type"] == "api_error"  # type: ignore[index]
        assert server.stats()["rejected"] == 2
        holder.check(30)


# ------------------------------------------------------------------------------ fixed mode


def test_fixed_mode_waits_ttft_then_chunks(fixed_sim: SimServer) -> None:
    out: dict[str, Any] = {}
    _stream_times(fixed_sim.url, "f", 10, out)
    assert out["first"] - out["sent"] >= 0.03
    assert out["last"] - out["first"] >= 9 * 0.002 * 0.8
    with ollama.Client(host=fixed_sim.url) as client:
        parts = list(client.generate("anything", "x", stream=True))
    assert len(parts) == fixed_sim.profile.default_max_tokens + 1


def test_fixed_mode_runs_requests_in_parallel(fixed_sim: SimServer) -> None:
    async def main() -> float:
        client = aoa(fixed_sim)
        start = time.monotonic()
        await asyncio.gather(
            *(client.chat.completions.create(model="x", messages=MSGS) for _ in range(20))
        )
        await client.close()
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    assert elapsed < 20 * 0.03  # serial would take 20 TTFTs


def test_zero_profile_sends_everything_at_once() -> None:
    zero = Profile(name="z", mode="fixed", models=(), accept_any_model=True, default_max_tokens=5)
    with running(zero) as server:
        resp = httpx.post(server.url + "/api/chat", json={"model": "x", "messages": MSGS})
        lines = [json.loads(line) for line in resp.text.splitlines()]
        assert resp.headers["content-type"] == "application/x-ndjson"
        assert len(lines) == 6 and lines[-1]["done"] and lines[-1]["eval_count"] == 5


# ------------------------------------------------------------------------------- the CLI


def test_cli_serves_the_packaged_profile(tmp_path: Any) -> None:
    script = (
        "import argparse, sys\n"
        "from gateway.commands import simulate\n"
        "p = argparse.ArgumentParser(); simulate.register(p.add_subparsers())\n"
        "a = p.parse_args(['simulate', *sys.argv[1:]])\n"
        "raise SystemExit(a.func(a))\n"
    )
    port = _free_port()
    args = ["--port", str(port), "--profile", "fast", "--ttft-ms", "1", "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        stats = httpx.get(url + "/sim/stats").json()
        assert stats["profile"] == "fast" and stats["mode"] == "fixed"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
