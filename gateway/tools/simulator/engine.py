"""The simulated inference host's performance model: pure, deterministic, clock-free.

Owns the frozen `Profile`, the continuous-batching scheduler (slots, FIFO wait queue, prefill
and decode cost per step), the memory model behind the synthetic host signals (weights plus
KV cache per context token; past the RAM budget, swap grows and steps slow down), and the
seeded token text. Must not do I/O, import asyncio, or read a clock: every time is a float
passed in, so tests drive it step by step and a seed reproduces a run exactly.

A step mirrors one llama.cpp/Ollama batch: requests waiting in FIFO order take free slots,
newly admitted prompts are prefilled (at most `prefill_chunk_tokens` per step, like
`n_batch`), and every sequence already past its prompt decodes one token. A sequence whose
prompt finishes in a step emits its first token at that step's end, as the prompt's last
logits are sampled at once.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, replace
from typing import Literal

GIB = 1 << 30
Mode = Literal["batching", "fixed"]

# Normal / warn / critical, the values `kern.memorystatus_vm_pressure_level` reports on macOS.
PRESSURE_NORMAL, PRESSURE_WARN, PRESSURE_CRITICAL = 1, 2, 4


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the host serves, with the metadata Ollama's /api/tags and /api/show report."""

    name: str
    family: str = "llama"
    parameter_size: str = "8.0B"
    quantization_level: str = "Q4_K_M"
    size_bytes: int = 4_920_753_328
    context_length: int = 8192
    capabilities: tuple[str, ...] = ("completion",)


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything that makes one simulated host behave like a given machine.

    `mode="batching"` runs the shared engine below; `mode="fixed"` has no shared engine: every
    request waits `ttft_ms`, then emits chunks `chunk_interval_ms` apart, unlimited parallel.
    """

    name: str
    mode: Mode = "batching"
    models: tuple[ModelSpec, ...] = (ModelSpec("llama3.1:8b"),)
    accept_any_model: bool = False
    seed: int = 0
    default_max_tokens: int = 128
    embedding_dim: int = 768
    # When stream headers go out: at once (`early_headers`), when the request takes a slot
    # (`headers_on_admission`, as llama-server does), or else with the first token (Ollama).
    early_headers: bool = False
    headers_on_admission: bool = False
    # Tokens a chat template adds: role markers and separators around each message, and once
    # per request (BOS, the assistant turn's opening). llama.cpp counts them as prompt tokens.
    chat_tokens_per_message: int = 0
    chat_tokens_per_request: int = 0
    # Continuous batching.
    slots: int = 4
    max_queue: int = 512
    prefill_tps: float = 200.0
    decode_tps: float = 24.0
    batch_alpha: float = 0.6
    prefill_chunk_tokens: int = 512
    # Memory model.
    memory_total_bytes: int = 16 * GIB
    base_memory_bytes: int = 4 * GIB
    weights_bytes: int = 4_920_753_328
    kv_bytes_per_token: int = 131_072
    ram_budget_bytes: int = 15 * GIB
    swap_floor_bytes: int = GIB
    swap_slowdown_per_gib: float = 1.5
    warn_fraction: float = 0.85
    critical_swap_bytes: int = GIB
    # Fixed mode.
    ttft_ms: float = 0.0
    chunk_interval_ms: float = 0.0

    def __post_init__(self) -> None:
        problems = _profile_problems(self)
        if problems:
            raise ValueError(f"profile {self.name!r}: " + "; ".join(problems))


def _profile_problems(p: Profile) -> list[str]:
    """Say what is wrong with a profile, so a bad YAML entry fails at load, not mid-run."""
    checks = [
        (p.mode in ("batching", "fixed"), "mode must be 'batching' or 'fixed'"),
        (len(p.models) > 0 or p.accept_any_model, "models is empty and accept_any_model is off"),
        (p.slots >= 1, "slots must be >= 1"),
        (p.max_queue >= 0, "max_queue must be >= 0"),
        (p.prefill_tps > 0 and p.decode_tps > 0, "prefill_tps and decode_tps must be > 0"),
        (0.0 < p.batch_alpha <= 1.0, "batch_alpha must be in (0, 1]"),
        (p.prefill_chunk_tokens >= 1, "prefill_chunk_tokens must be >= 1"),
        (p.default_max_tokens >= 1, "default_max_tokens must be >= 1"),
        (min(p.chat_tokens_per_message, p.chat_tokens_per_request) >= 0, "negative chat tokens"),
        (p.embedding_dim >= 1, "embedding_dim must be >= 1"),
        (p.ttft_ms >= 0 and p.chunk_interval_ms >= 0, "ttft_ms and chunk_interval_ms must be >= 0"),
        (p.kv_bytes_per_token >= 0 and p.swap_slowdown_per_gib >= 0, "negative memory figure"),
        (p.ram_budget_bytes > 0, "ram_budget_bytes must be > 0"),
        (0.0 < p.warn_fraction <= 1.0, "warn_fraction must be in (0, 1]"),
    ]
    return [message for ok, message in checks if not ok]


# ---------------------------------------------------------------- scheduler state and steps


@dataclass(frozen=True, slots=True)
class Seq:
    """One request in the engine; `key` is its arrival sequence number (unique, FIFO order)."""

    key: int
    prompt_tokens: int
    max_tokens: int
    prefill_left: int
    generated: int = 0

    @property
    def context_tokens(self) -> int:
        """Tokens held in this sequence's KV cache right now."""
        return self.prompt_tokens - self.prefill_left + self.generated


def new_seq(key: int, prompt_tokens: int, max_tokens: int) -> Seq:
    prompt = max(1, prompt_tokens)
    return Seq(key=key, prompt_tokens=prompt, max_tokens=max(1, max_tokens), prefill_left=prompt)


@dataclass(frozen=True, slots=True)
class EngineState:
    active: tuple[Seq, ...] = ()
    waiting: tuple[Seq, ...] = ()
    max_active_seen: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """One planned batch: who joined, how many prompt tokens each processes, who emits a
    token at the end, and whose token is the last."""

    start: float
    duration: float
    admitted: tuple[int, ...]
    prefill: tuple[tuple[int, int], ...]
    emit: tuple[int, ...]
    finish: tuple[int, ...]
    decoding: int
    slowdown: float

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Emission:
    """A token produced at a step's end; `index` counts from 0 within its request."""

    key: int
    index: int
    finished: bool


def submit(state: EngineState, profile: Profile, seq: Seq) -> tuple[EngineState, bool]:
    """Queue a request, or refuse it when it would wait behind `max_queue` others (Ollama 503)."""
    free = profile.slots - len(state.active)
    pending_after = len(state.waiting) + 1 - max(0, free)
    if pending_after > profile.max_queue:
        return state, False
    return replace(state, waiting=(*state.waiting, seq)), True


def cancel(state: EngineState, key: int) -> EngineState:
    """Drop a request wherever it is; an active one frees its slot for the next step."""
    active = tuple(s for s in state.active if s.key != key)
    waiting = tuple(s for s in state.waiting if s.key != key)
    return replace(state, active=active, waiting=waiting)


def admit(state: EngineState, profile: Profile) -> tuple[EngineState, tuple[int, ...]]:
    """Move the oldest waiters into free slots, strictly first come, first served."""
    free = profile.slots - len(state.active)
    if free <= 0 or not state.waiting:
        return state, ()
    joined, still_waiting = state.waiting[:free], state.waiting[free:]
    active = (*state.active, *joined)
    seen = max(state.max_active_seen, len(active))
    new_state = EngineState(active=active, waiting=still_waiting, max_active_seen=seen)
    return new_state, tuple(s.key for s in joined)


def plan_step(
    state: EngineState, profile: Profile, now: float, admitted: tuple[int, ...] = ()
) -> Step | None:
    """Cost the next batch over the active sequences; None when there is nothing to run."""
    if not state.active:
        return None
    prefill, emit, decoding = _batch(state.active, profile.prefill_chunk_tokens)
    emitting = set(emit)
    finish = tuple(
        s.key for s in state.active if s.key in emitting and s.generated + 1 >= s.max_tokens
    )
    prefill_tokens = sum(tokens for _, tokens in prefill)
    slowdown = swap_slowdown(profile, kv_tokens(state) + prefill_tokens)
    seconds = prefill_tokens / profile.prefill_tps + decode_step_seconds(profile, decoding)
    return Step(
        start=now,
        duration=seconds * slowdown,
        admitted=admitted,
        prefill=prefill,
        emit=emit,
        finish=finish,
        decoding=decoding,
        slowdown=slowdown,
    )


def _batch(
    active: tuple[Seq, ...], chunk: int
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...], int]:
    """Who does what this step: prompt tokens per prefilling sequence (oldest first, at most
    `chunk` in all), who emits a token, and how many sequences decode."""
    budget = chunk
    prefill: list[tuple[int, int]] = []
    emit: list[int] = []
    decoding = 0
    for seq in active:
        if seq.prefill_left == 0:
            decoding += 1
            emit.append(seq.key)
            continue
        take = min(seq.prefill_left, budget)
        if take > 0:
            budget -= take
            prefill.append((seq.key, take))
            if take == seq.prefill_left:
                emit.append(seq.key)
    return tuple(prefill), tuple(emit), decoding


def next_step(state: EngineState, profile: Profile, now: float) -> tuple[EngineState, Step | None]:
    """Admit waiters into free slots, then plan the batch that runs from `now`."""
    state, admitted = admit(state, profile)
    return state, plan_step(state, profile, now, admitted)


def apply_step(state: EngineState, step: Step) -> tuple[EngineState, tuple[Emission, ...]]:
    """Commit a finished step; sequences cancelled while it ran are simply absent."""
    prefilled = dict(step.prefill)
    emitting = set(step.emit)
    kept: list[Seq] = []
    emissions: list[Emission] = []
    for seq in state.active:
        left = seq.prefill_left - prefilled.get(seq.key, 0)
        generated = seq.generated
        if seq.key in emitting:
            generated += 1
            done = generated >= seq.max_tokens
            emissions.append(Emission(seq.key, generated - 1, done))
            if done:
                continue
        kept.append(replace(seq, prefill_left=left, generated=generated))
    return replace(state, active=tuple(kept)), tuple(emissions)


def decode_step_seconds(profile: Profile, streams: int) -> float:
    """One decode step for `streams` sequences: each emits a token, the batch shares the GPU."""
    if streams <= 0:
        return 0.0
    return float(streams) / aggregate_decode_tps(profile, streams)


def aggregate_decode_tps(profile: Profile, streams: int) -> float:
    """Total decode rate with `streams` in flight: single * n^alpha, sublinear in n."""
    n = max(1, min(streams, profile.slots))
    return profile.decode_tps * math.pow(n, profile.batch_alpha)


# ---------------------------------------------------------------------------- memory model


def kv_tokens(state: EngineState) -> int:
    return sum(seq.context_tokens for seq in state.active)


def memory_demand_bytes(profile: Profile, context_tokens: int) -> int:
    """What the host wants resident: OS and apps, model weights, KV cache of live contexts."""
    kv = profile.kv_bytes_per_token * max(0, context_tokens)
    return profile.base_memory_bytes + profile.weights_bytes + kv


def swap_used_bytes(profile: Profile, context_tokens: int) -> int:
    return max(0, memory_demand_bytes(profile, context_tokens) - profile.ram_budget_bytes)


def swap_slowdown(profile: Profile, context_tokens: int) -> float:
    """Step-time multiplier: 1 within the RAM budget, growing per GiB swapped past it."""
    over = swap_used_bytes(profile, context_tokens)
    return 1.0 + profile.swap_slowdown_per_gib * over / GIB


@dataclass(frozen=True, slots=True)
class HostSignals:
    swap_used_bytes: int
    swap_total_bytes: int
    pressure_level: int
    memory_used_bytes: int
    memory_total_bytes: int
    active: int
    queued: int


def host_signals(profile: Profile, context_tokens: int, active: int, queued: int) -> HostSignals:
    """The numbers a Mac would report (`vm.swapusage`, pressure level) for this load."""
    demand = memory_demand_bytes(profile, context_tokens)
    swap = swap_used_bytes(profile, context_tokens)
    # macOS grows swap in 1 GiB swapfiles and never reports less than its floor.
    swap_total = max(profile.swap_floor_bytes, math.ceil(swap / GIB) * GIB)
    if swap >= profile.critical_swap_bytes:
        pressure = PRESSURE_CRITICAL
    elif swap > 0 or demand >= profile.warn_fraction * profile.ram_budget_bytes:
        pressure = PRESSURE_WARN
    else:
        pressure = PRESSURE_NORMAL
    return HostSignals(
        swap_used_bytes=swap,
        swap_total_bytes=swap_total,
        pressure_level=pressure,
        memory_used_bytes=min(demand, profile.memory_total_bytes),
        memory_total_bytes=profile.memory_total_bytes,
        active=active,
        queued=queued,
    )


# ---------------------------------------------------------------------- deterministic text

_WORD_TEXT = """the model token batch slot queue swap memory prompt answer local server lane gateway
    stream latency apple silicon metal cache context decode prefill request is a of and to in
    fast slow quiet busy warm cold small large steady bounded we it runs waits emits holds
    frees keeps reads writes"""
WORDS = tuple(_WORD_TEXT.split())
# Every token but the first carries a leading space; a few end a sentence.
TOKENS = tuple(" " + w for w in WORDS) + tuple(f" {w}." for w in WORDS[:4])


def token_seed(profile_seed: int, key: int) -> int:
    """Seed of one request's text: the profile seed mixed with its sequence number."""
    return (profile_seed * 1_000_003 + key) & 0xFFFF_FFFF_FFFF


def token_texts(seed: int, count: int) -> list[str]:
    """`count` deterministic tokens, drawn in one call so a chunk costs no extra Python."""
    texts = random.Random(seed).choices(TOKENS, k=max(0, count))
    if texts:
        texts[0] = texts[0].lstrip().capitalize()
    return texts


def estimate_tokens(text: str) -> int:
    """Prompt tokens as characters / 4, at least 1: close enough for Llama-family BPE."""
    return max(1, len(text) // 4)


def chat_prompt_tokens(profile: Profile, text: str, messages: int) -> int:
    """Prompt tokens of a chat request: its text's estimate plus the template's own tokens."""
    template = profile.chat_tokens_per_message * messages + profile.chat_tokens_per_request
    return estimate_tokens(text) + template


def embedding_vector(seed: int, text: str, dim: int) -> list[float]:
    """A unit vector that depends only on (seed, text, dim), stable across processes."""
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]
