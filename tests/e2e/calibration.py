"""Calibrate the simulator against a real llama.cpp server: one concurrency sweep on each.

Why: every scheduling test and benchmark that runs on `lanegate simulate` is only as good as
the simulator's shape: when TTFT jumps (requests beyond the slot count wait a whole wave),
how aggregate throughput grows with streams (sublinearly up to the slots) and that it stays
flat past them. This module runs the same sweep (1, 2, 4, 8, 16 concurrent streams, unique
prompts, fixed `max_tokens`) against `llama-server` with the large tiny model and against a
simulator profile configured like it (same slots; prefill and decode rates measured on the
real server a moment before), and summarises both rung by rung.

Layout: the summaries and the comparison are pure functions of recorded stream timings; the
sweep (`run_sweep`) and process wiring (`calibrate`) do the I/O. The two engines run one after
the other, never together, so they do not compete for the CPU.

    python -m tests.e2e.calibration            # prints the markdown table (about a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.simulator.profiles import load_profiles, packaged_profiles_path
from tests.engine.llama_server import LlamaServer, ensure_llama_server, ensure_model
from tests.support.processes import REPO, start_lanegate

RUNGS = (1, 2, 4, 8, 16)
SLOTS = 4
MAX_TOKENS = 32
PROMPT_WORDS = 48  # about 64 prompt tokens with the chat template, on both engines
PROFILE = "llamacpp-tiny"
MODEL_SIZE = "large"
# Words of 3-5 letters, each one llama-spm token with its leading space, so that the
# simulator's chars/4 estimate and llama.cpp's tokenizer agree on the prompt length.
_WORDS = (
    "the and for are but not you all any can had her was one our out day get has him his how "
    "man new now old see two way who boy did its let put say she too use time they have this "
    "that with from will your what when make like long look many more some very year work"
).split()


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """One streamed completion, times relative to the start of its rung."""

    ttft_s: float
    end_s: float
    tokens: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class RungStats:
    concurrency: int
    ttft_p50_s: float
    ttft_max_s: float
    # Median TTFT of the latest `slots` streams over that of the earliest `slots` (1 = one wave).
    wave_ratio: float
    aggregate_tps: float
    per_stream_tps: float
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Rates:
    """Single-stream rates, from llama-server's own `timings` (not wall clock)."""

    prefill_tps: float
    decode_tps: float


@dataclass(frozen=True, slots=True)
class Calibration:
    rates: Rates
    llama: tuple[RungStats, ...]
    sim: tuple[RungStats, ...]
    machine: str


# ------------------------------------------------------------------------- pure summaries


def summarise(concurrency: int, streams: Sequence[StreamTiming], slots: int) -> RungStats:
    """One rung's numbers from its streams' timings."""
    ttfts = sorted(s.ttft_s for s in streams)
    wave = min(slots, len(ttfts))
    early = statistics.median(ttfts[:wave])
    late = statistics.median(ttfts[-wave:])
    wall = max(s.end_s for s in streams)
    tokens = sum(s.tokens for s in streams)
    decode_rates = [(s.tokens - 1) / (s.end_s - s.ttft_s) for s in streams if s.end_s > s.ttft_s]
    return RungStats(
        concurrency=concurrency,
        ttft_p50_s=statistics.median(ttfts),
        ttft_max_s=ttfts[-1],
        wave_ratio=late / early if early > 0 else float("inf"),
        aggregate_tps=tokens / wall,
        per_stream_tps=statistics.median(decode_rates) if decode_rates else 0.0,
        prompt_tokens=round(statistics.median(s.prompt_tokens for s in streams)),
    )


def by_concurrency(rungs: Sequence[RungStats]) -> dict[int, RungStats]:
    return {r.concurrency: r for r in rungs}


def markdown_table(cal: Calibration) -> str:
    """The comparison as the markdown table docs/testing.md carries."""
    sim = by_concurrency(cal.sim)
    lines = [
        "| streams | TTFT p50 ms (llama / sim) | TTFT max ms (llama / sim) "
        "| wave ratio (llama / sim) | aggregate tok/s (llama / sim) "
        "| per-stream tok/s (llama / sim) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for real in cal.llama:
        s = sim[real.concurrency]
        lines.append(
            f"| {real.concurrency} "
            f"| {real.ttft_p50_s * 1000:.0f} / {s.ttft_p50_s * 1000:.0f} "
            f"| {real.ttft_max_s * 1000:.0f} / {s.ttft_max_s * 1000:.0f} "
            f"| {real.wave_ratio:.1f} / {s.wave_ratio:.1f} "
            f"| {real.aggregate_tps:.0f} / {s.aggregate_tps:.0f} "
            f"| {real.per_stream_tps:.0f} / {s.per_stream_tps:.0f} |"
        )
    prompt = cal.llama[0].prompt_tokens, cal.sim[0].prompt_tokens
    lines.append("")
    lines.append(
        f"Single-stream rates measured on llama-server: prefill {cal.rates.prefill_tps:.0f} tok/s, "
        f"decode {cal.rates.decode_tps:.0f} tok/s; {SLOTS} slots, {MAX_TOKENS} tokens per "
        f"stream, prompt {prompt[0]} tokens (llama) / {prompt[1]} (sim). {cal.machine}."
    )
    return "\n".join(lines)


def prompt_for(rung: int, index: int, words: int = PROMPT_WORDS) -> str:
    """A prompt unique from its first word, so llama.cpp's prompt cache cannot help."""
    rng = random.Random(rung * 1000 + index)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def chat_body(model: str, prompt: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }


# ----------------------------------------------------------------------------- the sweep


async def _one_stream(http: httpx.AsyncClient, body: dict[str, Any], t0: float) -> StreamTiming:
    first: float | None = None
    tokens = 0
    prompt_tokens = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or ():
                if (choice.get("delta") or {}).get("content"):
                    tokens += 1
                    first = first if first is not None else time.perf_counter()
            if event.get("usage"):
                prompt_tokens = event["usage"]["prompt_tokens"]
    end = time.perf_counter()
    if first is None:
        raise RuntimeError(f"stream produced no content: {body['messages'][0]['content'][:40]}")
    return StreamTiming(first - t0, end - t0, tokens, prompt_tokens)


async def run_rung(
    http: httpx.AsyncClient, model: str, concurrency: int, tag: int | None = None
) -> list[StreamTiming]:
    """`concurrency` streams at once; `tag` (default: the concurrency) seeds their prompts."""
    tag = concurrency if tag is None else tag
    bodies = [chat_body(model, prompt_for(tag, i)) for i in range(concurrency)]
    t0 = time.perf_counter()
    return list(await asyncio.gather(*(_one_stream(http, b, t0) for b in bodies)))


async def run_sweep(
    base_url: str, model: str, rungs: Sequence[int] = RUNGS, slots: int = SLOTS
) -> list[RungStats]:
    """Each rung once, after one warm-up stream; rungs run one after the other."""
    limits = httpx.Limits(max_connections=max(rungs) + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        await run_rung(http, model, 1, tag=0)  # warm-up, with a prompt no rung uses
        out = []
        for concurrency in rungs:
            out.append(summarise(concurrency, await run_rung(http, model, concurrency), slots))
        return out


def measure_rates(base_url: str, model: str, repeats: int = 3) -> Rates:
    """Median single-stream prefill and decode rates, as llama-server times them itself."""
    prefill, decode = [], []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for i in range(repeats + 1):
            body = {**chat_body(model, prompt_for(0, 100 + i)), "stream": False}
            timings = http.post("/v1/chat/completions", json=body).raise_for_status().json()
            if i == 0:
                continue  # the first request after start allocates buffers
            prefill.append(timings["timings"]["prompt_per_second"])
            decode.append(timings["timings"]["predicted_per_second"])
    return Rates(statistics.median(prefill), statistics.median(decode))


# ------------------------------------------------------------------------- process wiring


def calibrated_profiles(rates: Rates, directory: Path) -> Path:
    """A profiles file holding `llamacpp-tiny` with this run's measured rates."""
    raw = yaml.safe_load(packaged_profiles_path().read_text(encoding="utf-8"))
    entry = dict(raw["profiles"][PROFILE])
    entry.update(prefill_tps=round(rates.prefill_tps, 1), decode_tps=round(rates.decode_tps, 1))
    entry["slots"] = SLOTS
    path = directory / "calibrated-profiles.yaml"
    path.write_text(yaml.safe_dump({"profiles": {PROFILE: entry}}), encoding="utf-8")
    load_profiles(path)  # fail here, with the file named, if the entry is not valid
    return path


def machine_summary() -> str:
    import os
    import platform

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores"


def calibrate(output_dir: Path, rungs: Sequence[int] = RUNGS) -> Calibration:
    """Sweep llama-server (large tiny model, 4 slots), then the simulator configured like it."""
    binary, model = ensure_llama_server(), ensure_model(MODEL_SIZE)
    log = output_dir / "calibration-llama-server.log"
    with LlamaServer(binary, model, parallel=SLOTS, ctx=SLOTS * 512, log_path=log) as server:
        rates = measure_rates(server.base_url, server.alias)
        llama = asyncio.run(run_sweep(server.base_url, server.alias, rungs))
    profiles = calibrated_profiles(rates, output_dir)
    args = ["simulate", "--profiles", str(profiles), "--profile", PROFILE, "--host", "127.0.0.1"]
    sim = start_lanegate(
        "simulator", [*args, "--log-level", "warning"], ready_path="/health", log_dir=output_dir
    )
    try:
        sim_rungs = asyncio.run(run_sweep(sim.url, model.stem, rungs))
    finally:
        sim.stop()
    return Calibration(rates, tuple(llama), tuple(sim_rungs), machine_summary())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "test-output")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(exist_ok=True)
    print(markdown_table(calibrate(args.output_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
