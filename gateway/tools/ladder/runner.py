"""Closed-loop load over HTTP: keep exactly C requests in flight for a rung's duration.

Owns the wire side of the ladder: one `httpx.AsyncClient` with keep-alive, the frozen client
contract (`Contract`), timing each request with the gateway's own `measurement` (so TTFT and
gaps mean here exactly what they mean in the gateway's access log), and turning every
outcome, failures included, into a `RequestRow`. Why httpx and not the openai SDK: it is
already a dependency of the gateway, it hands over raw chunks as they arrive (the SDK parses
and buffers events, hiding the arrival times we measure), and its retries cannot hide a
failure (the SDK retries 429/5xx by default).

Must not: decide anything about knees or gates, or write files. Prompts stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

from gateway.observe.measurement import RequestMeasurement
from gateway.serving.stream_parser import Api
from gateway.tools.ladder.prompts import PromptSet
from gateway.tools.ladder.stats import INTERRUPTED, RequestRow, request_speeds

Clock = Callable[[], float]
_ERROR_TEXT = 300  # characters of an error body kept in the CSV
# A server may close an idle keep-alive connection just as we reuse it (llama.cpp's
# cpp-httplib closes after every stream): the request was never answered, so it is sent once
# more, as the gateway's own upstream client does (see upstream_http), and only when the
# close came this soon after sending, so a request a server died on is never sent twice.
STALE_WINDOW_S = 1.0
NO_ANSWER_PAUSE_S = 0.1  # after a request that got no HTTP answer, before the next
_STALE_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Unanswered(Exception):
    def __init__(self, text: str, sent_at: float) -> None:
        super().__init__(text)
        self.text = text
        self.sent_at = sent_at


@dataclass(frozen=True, slots=True)
class Contract:
    """What every request of the run looks like; written to the report as is."""

    stream: bool = True
    max_tokens: int = 64
    temperature: float = 0.0
    keep_alive: bool = True
    timeout_s: float = 600.0
    endpoint: str = "/chat/completions"
    usage_in_stream: bool = True  # stream_options.include_usage, for real token counts


@dataclass(frozen=True, slots=True)
class LaneLoad:
    """One lane's load: `concurrency` requests in flight (closed loop), or `rate_per_s`
    requests started per second whatever happens to them (open loop, e.g. a heartbeat)."""

    name: str
    concurrency: int = 0
    rate_per_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


class LoadRunner:
    """Sends the ladder's requests; every finished (or interrupted) one lands in `rows`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        contract: Contract,
        prompts: PromptSet,
        *,
        api_key: str | None = None,
        clock: Clock = time.monotonic,
        started_at: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + contract.endpoint
        self.model = model
        self.contract = contract
        self.prompts = prompts
        self.clock = clock
        self.t0 = clock() if started_at is None else started_at
        self.rows: list[RequestRow] = []
        self._next_prompt = 0
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if not contract.keep_alive:
            headers["Connection"] = "close"
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=None if contract.keep_alive else 0,
        )
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(contract.timeout_s, connect=10.0),
            limits=limits,
            transport=transport,
        )

    def now(self) -> float:
        """Seconds since the ladder started, on the clock signals are sampled with."""
        return self.clock() - self.t0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run_step(
        self, rung: int, loads: list[LaneLoad], seconds: float, ramp_s: float = 0.0
    ) -> None:
        """Run every lane's load side by side for `seconds`; in-flight requests then finish.

        The closed-loop workers' first requests are spread evenly over `ramp_s`: started all
        at once, C identical requests move in lockstep (their prompts batched into one
        prefill, all finishing in the same step) and stay so, which measures a thundering
        herd rather than the steady state a closed loop stands for.
        """
        deadline = self.now() + seconds
        workers = sum(load.concurrency for load in loads)
        tasks = []
        index = 0
        for load in loads:
            for _ in range(load.concurrency):
                delay = ramp_s * index / workers
                tasks.append(self._closed(rung, load, deadline, delay))
                index += 1
            if load.rate_per_s > 0:
                tasks.append(self._open(rung, load, deadline))
        await asyncio.gather(*tasks)

    async def _closed(self, rung: int, load: LaneLoad, deadline: float, delay: float) -> None:
        await asyncio.sleep(delay)
        while self.now() < deadline:
            row = await self.request(rung, load)
            if row.status == 0:  # no answer at all: do not spin on a dead server
                await asyncio.sleep(NO_ANSWER_PAUSE_S)

    async def _open(self, rung: int, load: LaneLoad, deadline: float) -> None:
        interval = 1.0 / load.rate_per_s
        started: set[asyncio.Task[RequestRow]] = set()
        try:
            next_at = self.now()
            while next_at < deadline:
                await asyncio.sleep(max(0.0, next_at - self.now()))
                task = asyncio.create_task(self.request(rung, load))
                started.add(task)
                task.add_done_callback(started.discard)
                next_at += interval
            await asyncio.gather(*started)
        finally:
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

    async def request(self, rung: int, load: LaneLoad) -> RequestRow:
        """One request, measured; the row is recorded even when the run is interrupted."""
        prompt = self.prompts[self._next_prompt]
        self._next_prompt += 1
        start = self.now()
        measurement = RequestMeasurement(Api.CHAT, start)
        try:
            row = await self._send(rung, load, prompt, start, measurement)
        except asyncio.CancelledError:
            self.rows.append(self._failed(rung, load, start, 0, INTERRUPTED))
            raise
        self.rows.append(row)
        return row

    async def _send(
        self, rung: int, load: LaneLoad, prompt: str, start: float, m: RequestMeasurement
    ) -> RequestRow:
        for attempt in (1, 2):
            try:
                return await self._attempt(rung, load, prompt, start, m)
            except _Unanswered as exc:
                if attempt == 2 or self.now() - exc.sent_at > STALE_WINDOW_S:
                    return self._failed(rung, load, start, 0, exc.text)
        raise AssertionError("unreachable")

    async def _attempt(
        self, rung: int, load: LaneLoad, prompt: str, start: float, m: RequestMeasurement
    ) -> RequestRow:
        sent_at = self.now()
        answered = False
        try:
            async with self.client.stream(
                "POST", self.url, json=self._body(prompt), headers=dict(load.headers)
            ) as response:
                answered = True
                if response.status_code >= 400:
                    body = await response.aread()
                    return self._failed(rung, load, start, response.status_code, _error(body))
                if self.contract.stream:
                    async for chunk in response.aiter_bytes():
                        m.on_chunk(chunk, self.now())
                else:
                    m.on_body(await response.aread(), self.now())
                status = response.status_code
        except httpx.HTTPError as exc:
            text = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT]
            if not answered and isinstance(exc, _STALE_ERRORS):
                raise _Unanswered(text, sent_at) from exc
            return self._failed(rung, load, start, 0, text)
        return self._row(rung, load, start, m, status)

    def _row(
        self, rung: int, load: LaneLoad, start: float, m: RequestMeasurement, status: int
    ) -> RequestRow:
        record = m.finish(self.now(), status=status)
        # Non-streamed, the first token arrives with the whole answer.
        ttft = record.ttft_s if self.contract.stream else record.duration_s
        error = record.error
        if error is None and self.contract.stream and record.ttft_s is None:
            error = "stream ended without output"
        ttft = ttft if error is None else None
        tpot, tps = request_speeds(ttft, record.duration_s, record.completion_tokens)
        gaps = record.gaps.count if record.gaps is not None else 0
        return RequestRow(
            rung=rung,
            lane=load.name,
            start_s=start,
            ttft_s=ttft,
            gap_max_s=record.gap_max_s,
            gap_p95_s=record.gap_p95_s,
            e2e_s=record.duration_s,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            status=status,
            error=error,
            itl_s=record.gap_sum_s / gaps if gaps and record.gap_sum_s is not None else None,
            tpot_s=tpot if error is None else None,
            output_tps=tps if error is None else None,
        )

    def _failed(
        self, rung: int, load: LaneLoad, start: float, status: int, error: str
    ) -> RequestRow:
        return RequestRow(
            rung, load.name, start, None, None, None, self.now() - start, None, None, status, error
        )

    def _body(self, prompt: str) -> dict[str, object]:
        c = self.contract
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": c.max_tokens,
            "temperature": c.temperature,
            "stream": c.stream,
        }
        if c.stream and c.usage_in_stream:
            body["stream_options"] = {"include_usage": True}
        return body


def _error(body: bytes) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        return str(error["message"] if isinstance(error, dict) else error)[:_ERROR_TEXT]
    return body.decode(errors="replace").strip()[:_ERROR_TEXT] or "empty error body"
