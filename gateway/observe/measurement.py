"""Per-request measurement of one relayed response: TTFT, inter-chunk gaps, tokens.

Owns: turning the raw chunks the relay forwards, and the times they arrived, into one
``RequestRecord``. Must not: read the clock (every call carries ``now``), do I/O, or keep the
body (the scanner keeps only an unfinished event tail).

Definitions.
- TTFT: ``received_at`` to the arrival of the chunk that completed the first event carrying
  generated output (see ``stream_parser``). None when no output came, or when the body is not a
  stream we understand (``api=None``) or was not streamed (``on_body``).
- Gaps: between consecutive non-empty chunks, starting with the chunk after the first-output
  chunk (the wait before it is TTFT, not a gap). With ``api=None`` they start after the first
  chunk. A gap measures arrival of bytes, keep-alive comments included.
- Token counts: the upstream's, clamped into [0, ``MAX_USAGE_TOKENS``] (``usage_clamped``
  says it happened): budgets, the ledger and /metrics never see a negative or absurd figure.
- Gap storage: a ``LogHistogram`` (``rolling``), so ``gap_max_s`` is exact, ``gap_p95_s`` is the
  nearest-rank p95 within the histogram's relative error (1% by default), and memory is bounded
  by occupied buckets (a few dozen in practice) rather than by the number of chunks. The
  record hands that histogram on (``gaps``), with the exact ``gap_sum_s``, so /metrics folds
  all of a request's gaps once at record time instead of observing each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.observe.rolling import LogHistogram
from gateway.serving.stream_parser import Api, ScanResult, StreamScanner, scan_body

# Token counts come from the upstream: untrusted. No request to a local model uses more than
# this (a 1 Mi-token context); a larger figure (2**64 would not even fit SQLite) is clamped.
MAX_USAGE_TOKENS = 1 << 20


def clamp_usage(tokens: int | None) -> tuple[int | None, bool]:
    """An upstream's token count within [0, MAX_USAGE_TOKENS], and whether it had to move."""
    if tokens is None or 0 <= tokens <= MAX_USAGE_TOKENS:
        return tokens, False
    return min(max(tokens, 0), MAX_USAGE_TOKENS), True


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request cost and how it streamed."""

    ttft_s: float | None
    gap_max_s: float | None
    gap_p95_s: float | None
    duration_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    chunks: int
    status: int
    error: str | None
    rejected: bool = False  # refused by the gateway (error is its code), never relayed
    # The gaps themselves, for the /metrics histogram (folded once at record time), and their
    # exact sum: consecutive gaps telescope to (last chunk - chunk that opened the gaps).
    gaps: LogHistogram | None = field(default=None, compare=False, repr=False)
    gap_sum_s: float | None = None
    # The upstream broke the exchange (timeout, connection lost), even if the client already
    # had a 200 and saw the failure as a final stream event: the breaker counts it.
    upstream_failed: bool = False
    # The upstream reported a token count out of range (negative, or over MAX_USAGE_TOKENS):
    # clamped into it; the shell logs it once.
    usage_clamped: bool = False


class RequestMeasurement:
    """Fed by the relay per chunk (or once per body); ``finish`` yields the record."""

    def __init__(self, api: Api | None, received_at: float, *, gap_error: float = 0.01) -> None:
        self._api = api
        self._scanner = StreamScanner(api) if api is not None else None
        self._received_at = received_at
        self._first_output_at: float | None = None
        self._last_chunk_at = received_at
        self._gaps_open = False
        self._gaps_from = received_at  # the chunk after which gaps are counted
        self._gaps = LogHistogram(gap_error)
        self._chunks = 0
        self._body: ScanResult | None = None

    @property
    def first_output_at(self) -> float | None:
        """When the chunk completing the first generated output arrived, once it has."""
        return self._first_output_at

    def on_chunk(self, chunk: bytes, now: float) -> None:
        """Record one chunk as received from the upstream socket."""
        if not chunk:
            return
        self._chunks += 1
        first = self._scanner.feed(chunk) if self._scanner is not None else False
        if self._gaps_open:
            self._gaps.add(now - self._last_chunk_at)
        else:
            if first:
                self._first_output_at = now
            if self._first_output_at is not None or self._scanner is None:
                self._gaps_open, self._gaps_from = True, now
        self._last_chunk_at = now

    def output_events(self) -> int | None:
        """Output events (tokens) of the chunks received so far; None before any chunk."""
        if self._scanner is None or self._chunks == 0:
            return None
        return self._scanner.result().output_events

    def on_body(self, body: bytes, now: float) -> None:
        """Record a whole non-streamed response body."""
        self._chunks += 1
        self._last_chunk_at = now
        if self._api is not None:
            self._body = scan_body(self._api, body)

    def finish(
        self, now: float, *, status: int, error: str | None = None, upstream_failed: bool = False
    ) -> RequestRecord:
        """Close the stream and summarise; an explicit ``error`` wins over an in-stream one."""
        if self._scanner is not None and self._scanner.close() and self._first_output_at is None:
            self._first_output_at = self._last_chunk_at  # output was in the unterminated tail
        scanned = self._scan_result()
        ttft = None if self._first_output_at is None else self._first_output_at - self._received_at
        prompt, prompt_clamped = clamp_usage(scanned.prompt_tokens if scanned else None)
        completion, completion_clamped = clamp_usage(scanned.completion_tokens if scanned else None)
        return RequestRecord(
            ttft_s=ttft,
            gap_max_s=self._gaps.max,
            gap_p95_s=self._gaps.quantile(0.95),
            duration_s=now - self._received_at,
            prompt_tokens=prompt,
            completion_tokens=completion,
            tokens_estimated=scanned.tokens_estimated if scanned else False,
            chunks=self._chunks,
            status=status,
            error=error if error is not None else (scanned.error if scanned else None),
            gaps=self._gaps if self._gaps.count else None,
            gap_sum_s=self._last_chunk_at - self._gaps_from if self._gaps.count else None,
            upstream_failed=upstream_failed,
            usage_clamped=prompt_clamped or completion_clamped,
        )

    def _scan_result(self) -> ScanResult | None:
        if self._body is not None:
            return self._body
        if self._scanner is None or self._chunks == 0:
            return None
        return self._scanner.result()


@dataclass(frozen=True, slots=True)
class RequestLabels:
    request_id: str
    method: str
    path: str
    lane: str
    upstream: str
    model: str | None
    client: str | None = None  # the policy's client name (None: no clients, or refused first)
    queue_s: float | None = None  # time waiting for a lane slot (None: never admitted)
    alone: bool = False  # had its upstream to itself from start to end (single-stream TTFT)
    trace_id: str | None = None  # the client's W3C trace id (traceparent), if it sent one
    # Preemption (gateway.serving.rerun): how often its slot went to a chat, the upstream
    # seconds of the runs thrown away, and an estimate of their completion tokens.
    preemptions: int = 0
    preempted_s: float = 0.0
    preempted_tokens: int = 0
