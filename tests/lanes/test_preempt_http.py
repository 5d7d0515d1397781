"""Preemption seen from outside: the openai SDK → a real `lanegate serve` → a scripted upstream
with one slot, over loopback.

A non-streamed batch request holding the only slot is cut when a chat arrives: the chat is
answered, the upstream sees the cut connection close, and the batch client still gets one
complete 200, counted in /metrics, /admin/status, the access log and the ledger. A streamed
batch request is never cut; a request cut twice is not cut again; a client that leaves while
its request waits again leaves no slot and no budget behind.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.observe.ledger import LEDGER_FILE, read_rows
from gateway.observe.ledger_report import COLUMNS
from tests.support.metrics import metric as support_metric
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, running, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

pytestmark = pytest.mark.timeout(120)

ADMIN = "preempt-admin-" + uuid.uuid4().hex
PROMPT = "preempt-prompt-" + uuid.uuid4().hex  # must never reach the log
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
# The slow answer: 20 pieces, 0.1 s apart (2 s upstream); the fast one at once.
SLOW_PIECES, SLOW_DELAY_S = 20, 0.1
LANES = """
admin_key: env:T_PREEMPT_ADMIN
lanes:
  - {name: interactive, priority: 100}
  - {name: batch, priority: 10, preemptible: true, tokens_per_minute: 700}
classify: {default_lane: interactive, anonymous_lanes: [interactive, batch]}
slo: {adaptive_limits: false}
"""


def completion(model: str, content: str) -> bytes:
    body = {
        "id": "c-" + model,
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
    }
    return json.dumps(body).encode()


def stream_events(model: str) -> list[bytes]:
    chunk = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": model}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "w"}, "finish_reason": None}]}
        for _ in range(SLOW_PIECES)
    ]
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def script_for(request: SeenRequest) -> Script:
    if request.method != "POST":  # discovery and probes
        return Script([b'{"models": [], "data": []}'], content_type="application/json")
    body = json.loads(request.body)
    model = body["model"]
    if body.get("stream"):
        return Script(stream_events(model), delay_s=SLOW_DELAY_S)
    if model.startswith("slow"):  # slow, slow-chat: ~2 s upstream, in pieces
        whole = completion(model, "the complete batch answer")
        size = -(-len(whole) // SLOW_PIECES)
        pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
        return Script(pieces, content_type="application/json", delay_s=SLOW_DELAY_S)
    return Script([completion(model, "a quick chat answer")], content_type="application/json")


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(script_for) as server:
        yield server


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("preempt-state")


@pytest.fixture(scope="module")
def gateway(
    upstream: ScriptedUpstream,
    state: Path,
    output_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    policy = tmp_path_factory.mktemp("preempt") / "policy.yaml"
    write_policy(policy, [upstream_entry("up", upstream.url, max_concurrency=1)], LANES)
    env = {"T_PREEMPT_ADMIN": ADMIN}
    with running(start_gateway("gw-preempt", policy, output_dir, env=env, state=state)) as gw:
        yield gw


def sdk(gateway: Service, lane: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="any",
        max_retries=0,
        timeout=timeout,
        default_headers={"x-lane": lane},
    )


class InThread:
    """Runs one SDK call of `client` in a thread, then closes the client (its pooled socket
    would otherwise warn in a later test); `result()` waits for it (or re-raises its error)."""

    def __init__(self, client: openai.OpenAI, call: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(client, call), daemon=True)
        self._thread.start()

    def _run(self, client: openai.OpenAI, call: Callable[[], Any]) -> None:
        try:
            with client:
                self.value = call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            self.error = exc
        self.finished_at = time.monotonic()

    def result(self, timeout: float = 60) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def batch_call(gateway: Service, rid: str, **kw: Any) -> InThread:
    client = sdk(gateway, "batch", timeout=kw.pop("timeout", 30))
    return InThread(
        client,
        lambda: client.chat.completions.create(
            model=kw.pop("model", "slow"),
            messages=MESSAGES,
            max_tokens=400,
            extra_headers={"x-request-id": rid},
            **kw,
        ),
    )


def chat_call(gateway: Service, rid: str, model: str = "fast") -> InThread:
    client = sdk(gateway, "interactive")
    return InThread(
        client,
        lambda: client.chat.completions.create(
            model=model, messages=MESSAGES, extra_headers={"x-request-id": rid}
        ),
    )


def wait_for(
    check: Callable[[], bool], what: str, call: InThread | None = None, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if call is not None and call.finished_at:
            call.result()  # it ended first: its error says why
            raise AssertionError(f"the call ended before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def slow_runs(upstream: ScriptedUpstream, rid: str) -> int:
    return sum(1 for r in upstream.requests if r.headers.get("x-request-id") == rid)


def running_upstream(upstream: ScriptedUpstream, rid: str, run: int) -> Callable[[], bool]:
    """True once the `run`-th attempt of `rid` is being answered upstream."""
    return lambda: slow_runs(upstream, rid) >= run and upstream.in_flight >= 1


def ledger_row(state: Path, rid: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def present() -> bool:
        for row in read_rows(state / LEDGER_FILE, 0):
            if row[1] == rid:
                found.update(zip(COLUMNS, row, strict=True))
        return bool(found)

    wait_for(present, f"the ledger row of {rid}")  # written once a second
    return found


def metric(gateway: Service, name: str, labels: dict[str, str]) -> float:
    return support_metric(gateway.url, name, labels)


def lane_status(gateway: Service, lane: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    doc = httpx.get(f"{gateway.url}/admin/status", headers=headers, timeout=10).json()
    return next(entry for entry in doc["lanes"] if entry["name"] == lane)


def test_a_chat_cuts_the_batch_request_which_still_gets_its_whole_answer(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid, chat_rid = f"b-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    preempted_before = metric(
        gateway, "lanegate_preemptions_total", {"lane": "batch", "upstream": "up"}
    )
    disconnects = len(upstream.disconnects)
    batch = batch_call(gateway, rid)
    wait_for(running_upstream(upstream, rid, 1), "the batch request upstream", batch)
    chat = chat_call(gateway, chat_rid)
    answer = chat.result()
    assert answer.choices[0].message.content == "a quick chat answer"
    done = batch.result()
    assert done.choices[0].message.content == "the complete batch answer"
    assert done.usage is not None and done.usage.completion_tokens == 20
    assert chat.finished_at < batch.finished_at  # served first (an order, not a duration)
    assert slow_runs(upstream, rid) == 2  # cut once, sent again
    assert len(upstream.disconnects) == disconnects + 1  # the cut connection was closed

    row = ledger_row(state, rid)
    assert row["status"] == 200 and row["preemptions"] == 1
    assert row["preempted_ms"] > 0 and row["preempted_tokens"] > 0
    assert row["completion_tokens"] == 20  # the final answer's usage only
    assert ledger_row(state, chat_rid)["preemptions"] == 0
    labels = {"lane": "batch", "upstream": "up"}
    assert metric(gateway, "lanegate_preemptions_total", labels) == preempted_before + 1
    assert metric(gateway, "lanegate_preempted_tokens_total", {"lane": "batch"}) > 0
    status = lane_status(gateway, "batch")
    assert status["preemptible"] and status["preemptions"] >= 1
    log = gateway.log()
    assert f"preempted request {rid} of lane batch on up after" in log
    assert PROMPT not in log


def test_a_streamed_batch_request_is_never_cut(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid, chat_rid = f"s-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    disconnects = len(upstream.disconnects)
    client = sdk(gateway, "batch")

    def streamed() -> str:
        stream = client.chat.completions.create(
            model="slow",
            messages=MESSAGES,
            stream=True,
            max_tokens=100,
            extra_headers={"x-request-id": rid},
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    batch = InThread(client, streamed)
    wait_for(running_upstream(upstream, rid, 1), "the streamed batch request upstream", batch)
    chat = chat_call(gateway, chat_rid)
    assert batch.result() == "w" * SLOW_PIECES
    chat.result()
    assert batch.finished_at <= chat.finished_at  # the chat waited for the stream's slot
    assert slow_runs(upstream, rid) == 1 and len(upstream.disconnects) == disconnects
    assert ledger_row(state, rid)["preemptions"] == 0


def test_a_request_cut_twice_is_not_cut_again(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid = f"t-{uuid.uuid4().hex[:8]}"
    disconnects = len(upstream.disconnects)
    batch = batch_call(gateway, rid)
    for run in (1, 2, 3):
        wait_for(running_upstream(upstream, rid, run), f"run {run} of the batch request", batch)
        chat_call(gateway, f"c{run}-{rid}").result()
    assert batch.result().choices[0].message.content == "the complete batch answer"
    assert slow_runs(upstream, rid) == 3  # two cuts, then immune: the third chat waited
    assert len(upstream.disconnects) == disconnects + 2
    assert ledger_row(state, rid)["preemptions"] == 2


def test_a_client_leaving_while_requeued_leaves_no_slot_or_budget(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid = f"l-{uuid.uuid4().hex[:8]}"
    # 1.5 s: long enough to be cut, too short to outlast the 2 s chat it waits behind.
    batch = batch_call(gateway, rid, timeout=1.5)
    wait_for(running_upstream(upstream, rid, 1), "the batch request upstream", batch)
    chat = chat_call(gateway, f"c-{rid}", model="slow-chat")
    with pytest.raises(openai.APITimeoutError):
        batch.result()
    chat.result()
    row = ledger_row(state, rid)
    assert row["status"] == 499 and row["preemptions"] == 1
    wait_for(lambda: lane_status(gateway, "batch")["in_flight"] == 0, "the batch slot back")
    assert lane_status(gateway, "batch")["queued"] == 0
    # The lane's budget (700 tokens a minute) fits one 400-token reservation at a time: a
    # leaked reservation would refuse this one with 429 token_budget.
    again = f"a-{rid}"
    assert batch_call(gateway, again).result().choices[0].message.content
    assert slow_runs(upstream, rid) == 1


def test_a_rerun_reports_its_waits_as_its_queue_time(
    gateway: Service, upstream: ScriptedUpstream, state: Path
) -> None:
    rid = f"q-{uuid.uuid4().hex[:8]}"
    client = sdk(gateway, "batch")
    batch = InThread(
        client,
        lambda: client.chat.completions.with_raw_response.create(
            model="slow", messages=MESSAGES, max_tokens=400, extra_headers={"x-request-id": rid}
        ),
    )
    wait_for(running_upstream(upstream, rid, 1), "the batch request upstream", batch)
    chat_call(gateway, f"c-{rid}", model="slow-chat").result()  # it waits behind this chat
    header = float(batch.result().headers["x-lanegate-queue-ms"])
    row = ledger_row(state, rid)
    assert row["preemptions"] == 1 and row["status"] == 200
    # The header its client got and the ledger say the same: the wait behind the chat (the
    # header used to say the first wait only, the ledger to add the cut run's upstream time).
    assert header > 0
    assert header == pytest.approx(row["queue_ms"], abs=0.1)
