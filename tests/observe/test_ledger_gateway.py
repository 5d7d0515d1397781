"""The request ledger through real processes: the openai SDK / httpx → `lanegate serve` →
`lanegate simulate`; then the SQLite file, `lanegate report` and a privacy sweep of every byte
the gateway left on disk.
"""

from __future__ import annotations

import asyncio
import csv
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from gateway.cli import main
from gateway.observe.ledger import LEDGER_FILE, read_rows
from gateway.observe.ledger_report import COLUMNS
from gateway.serving.keys import hash_key
from tests.support.clients import OpenAIClients
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import REPO, Service, free_port, start_gateway

KEY = "lg-ledger-alice-" + uuid.uuid4().hex
MSGS = [{"role": "user", "content": "Say hello"}]
LANES = f"""
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 4, max_queue: 20}}
  - {{name: batch, priority: 10, max_concurrency: 1, max_queue: 1, queue_timeout: 1}}
classify:
  default_lane: interactive
clients:
  - {{name: alice, key: "{hash_key(KEY)}", lanes: [interactive, batch]}}
"""


def _policy(path: Path, base_url: str) -> Path:
    return write_policy(path, [upstream_entry("sim", base_url, max_concurrency=4)], LANES)


def _rows_by_id(state: Path) -> dict[str, dict[str, object]]:
    rows = read_rows(state / LEDGER_FILE, 0)
    return {str(r[1]): dict(zip(COLUMNS, r, strict=True)) for r in rows}


@dataclass
class Run:
    state: Path
    statuses: dict[str, int] = field(default_factory=dict)  # request id → status seen
    lanes: dict[str, str] = field(default_factory=dict)  # request id → lane expected
    report: str = ""
    csv_path: Path | None = None


async def _queue_burst(gateway: Service, run: Run) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 240, "messages": MSGS}  # ~1.2 s each
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:

        async def one(i: int) -> None:
            request_id = f"burst-{i}"
            headers = {
                "authorization": f"Bearer {KEY}",
                "x-lane": "batch",
                "x-request-id": request_id,
            }
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            await response.aread()
            run.statuses[request_id], run.lanes[request_id] = response.status_code, "batch"

        await asyncio.gather(*(one(i) for i in range(3)))


def _disconnect_mid_stream(gateway: Service, run: Run) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 2000, "messages": MSGS}  # ~10 s
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": "left"}
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        next(response.iter_raw())  # the stream has started; now the client walks away
    run.statuses["left"], run.lanes["left"] = 499, "interactive"


@pytest.fixture(scope="module")
def run(sim: Service, output_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("ledger")
    result = Run(state=tmp / "state", csv_path=tmp / "rows.csv")
    policy = _policy(tmp / "p.yaml", sim.url)
    gateway = start_gateway("gw-ledger", policy, output_dir, state=result.state)
    clients = OpenAIClients()  # this fixture is module-scoped: the function-scoped one won't do
    try:
        client = clients(gateway, KEY)
        chat = client.chat.completions
        stream = chat.create(
            model="m",
            messages=MSGS,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-request-id": "ok-stream"},
        )
        assert sum(1 for _ in stream) > 0
        chat.create(model="m", messages=MSGS, max_tokens=8, extra_headers={"x-request-id": "ok"})
        result.statuses |= {"ok-stream": 200, "ok": 200}
        result.lanes |= {"ok-stream": "interactive", "ok": "interactive"}
        bad = clients(gateway, "wrong")
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(
                model="m",
                messages=MSGS,
                extra_headers={"x-request-id": "bad-key"},
            )
        result.statuses["bad-key"], result.lanes["bad-key"] = 401, "-"
        asyncio.run(_queue_burst(gateway, result))
        _disconnect_mid_stream(gateway, result)
        # While the gateway runs: the rows arrive within the ~1 s flush, readable (WAL).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(_rows_by_id(result.state)) < len(result.statuses):
            time.sleep(0.2)
        result.report = _report(result.state, "--since", "1h", "--csv", str(result.csv_path))
    finally:
        clients.close()
        gateway.stop()  # SIGTERM
    return result


def _report(state: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "report", "--state-dir", str(state), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_one_row_per_request_with_its_fields(run: Run) -> None:
    rows = _rows_by_id(run.state)
    assert set(rows) == set(run.statuses)
    for request_id, status in run.statuses.items():
        assert rows[request_id]["status"] == status, request_id
        assert rows[request_id]["lane"] == run.lanes[request_id], request_id
    ok = rows["ok-stream"]
    assert ok["client"] == "alice" and ok["upstream"] == "sim" and ok["model"] == "m"
    assert ok["path"] == "/v1/chat/completions" and ok["error"] is None
    assert isinstance(ok["ttft_ms"], float) and 0 < ok["ttft_ms"] <= ok["duration_ms"]
    assert isinstance(ok["queue_ms"], float) and ok["queue_ms"] >= 0
    assert ok["gap_max_ms"] is not None
    assert ok["prompt_tokens"] and ok["completion_tokens"]
    assert rows["ok"]["ttft_ms"] is None and rows["ok"]["completion_tokens"]  # not streamed
    bad = rows["bad-key"]
    assert (bad["client"], bad["upstream"], bad["queue_ms"]) == (None, "-", None)
    left = rows["left"]
    assert left["error"] == "client_disconnected" and left["client"] == "alice"
    assert left["ttft_ms"] is not None and left["upstream"] == "sim"
    burst = [rows[i] for i in run.statuses if i.startswith("burst-")]
    refused = [r for r in burst if r["status"] == 429]
    assert refused and len(refused) < 3
    # Streamed without include_usage: the gateway asked Ollama for it, so real counts.
    for row in burst:
        if row["status"] == 200:
            assert row["prompt_tokens"] and row["completion_tokens"] == 240
    for row in refused:
        assert row["error"] in {"lane_queue_full", "lane_queue_timeout"}
        assert (row["client"], row["upstream"], row["prompt_tokens"]) == ("alice", "-", None)


def _table(report: str, title: str) -> dict[str, list[str]]:
    """The rows of one table of the report, by their first cell."""
    lines = report.splitlines()
    first = next(i for i, line in enumerate(lines) if line.split()[:1] == [title])
    rows: dict[str, list[str]] = {}
    for line in lines[first + 2 :]:
        if not line.strip():
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


def test_report_counts_match_the_requests(run: Run) -> None:
    assert run.report.startswith(f"{len(run.statuses)} requests in the last 1h")
    lanes = _table(run.report, "lane")
    for lane in {"interactive", "batch", "-"}:
        made = [i for i, name in run.lanes.items() if name == lane]
        errors = sum(1 for i in made if run.statuses[i] >= 400)
        requests, client_errors, server_errors = (int(c) for c in lanes[lane][:3])
        assert (requests, client_errors, server_errors) == (len(made), errors, 0), lane
    upstreams = _table(run.report, "upstream")
    refused_first = sum(1 for s in run.statuses.values() if s in (401, 429))
    assert int(upstreams["-"][0]) == refused_first
    assert int(upstreams["sim"][0]) == len(run.statuses) - refused_first
    assert run.csv_path is not None
    with run.csv_path.open() as f:
        table = list(csv.reader(f))
    assert table[0] == list(COLUMNS)
    assert len(table) - 1 == len(run.statuses)
    assert {r[1] for r in table[1:]} == set(run.statuses)


def _cells(report: str, title: str) -> dict[str, list[str]]:
    """The first table whose head starts with `title`: row name → cells (names may hold
    single spaces, columns are two or more apart)."""
    lines = report.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(title + " "))
    rows: dict[str, list[str]] = {}
    for line in lines[first + 2 :]:
        if not line.strip():
            break
        name, *cells = re.split(r"\s{2,}", line.strip())
        rows[name] = cells
    return rows


def test_report_by_client_and_model_with_waits_errors_and_laneless_rows(run: Run) -> None:
    text = _report(run.state, "--since", "1h", "--by", "lane,client", "--by", "model")
    head = [
        "requests",
        "4xx",
        "5xx",
        "error",
        "%",
        "queue",
        "p50",
        "queue",
        "p95",
        "ttft",
        "p50",
        "ttft",
        "p95",
        "ttft",
        "p99",
    ]
    assert text.splitlines()[2].split()[4:][: len(head)] == head
    pairs = _cells(text, "lane / client (ms)")
    burst = [i for i in run.statuses if i.startswith("burst-")]
    batch = pairs["batch / alice"]
    assert int(batch[0]) == len(burst)
    assert batch[5] != "-" and batch[10] != "-"  # queue p95 and duration p95 (not streamed)
    # The 429s are counted by code, under their group.
    errors = _cells(text, "lane / client  ")
    assert errors["batch / alice"][0].startswith("429 lane_queue")
    refused = [
        re.split(r"\s{2,}", line)
        for line in text.splitlines()
        if re.match(r"batch / alice\s+429 ", line)
    ]
    assert sum(int(cells[-1]) for cells in refused) == sum(
        1 for i in burst if run.statuses[i] == 429
    )
    assert int(_cells(text, "model (ms)")["m"][0]) == len(run.statuses) - 1  # all but bad-key
    # The row without a lane is placed: a refusal before classification, and why.
    assert "1 rows have no lane (lane -):" in text
    assert "401 invalid_api_key: refused before a lane was chosen: no API key" in text


def test_report_window_excludes_older_rows(run: Run) -> None:
    time.sleep(1.1)  # the gateway has stopped: every row is now more than a second old
    assert _report(run.state, "--since", "1s").startswith("0 requests in the last 1s")


def test_report_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "1y", "--state-dir", str(tmp_path)]) == 2
    assert "e.g. 30m, 24h or 7d" in capsys.readouterr().err
    assert main(["report", "--state-dir", str(tmp_path)]) == 1
    assert f"no ledger at {tmp_path / LEDGER_FILE}" in capsys.readouterr().err


def test_dead_upstream_is_a_502_row(output_dir: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    policy = _policy(tmp_path / "p.yaml", f"http://127.0.0.1:{free_port()}")
    gateway = start_gateway("gw-ledger-dead", policy, output_dir, state=state)
    try:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": MSGS},
            headers={"authorization": f"Bearer {KEY}", "x-request-id": "dead"},
        )
        assert response.status_code == 502
    finally:
        gateway.stop()
    row = _rows_by_id(state)["dead"]
    assert (row["status"], row["upstream"], row["lane"], row["client"]) == (
        502,
        "sim",
        "interactive",
        "alice",
    )
    assert row["error"] and row["ttft_ms"] is None


def test_prompts_and_keys_never_reach_disk_or_log(
    sim: Service, output_dir: Path, tmp_path: Path, openai_client: OpenAIClients
) -> None:
    marker = f"marker-{uuid.uuid4()}"
    state = tmp_path / "state"
    # Debug logging on purpose: not even the most talkative log level may carry a prompt.
    policy = _policy(tmp_path / "p.yaml", sim.url)
    env = {"LANEGATE_LOG_LEVEL": "debug"}
    gateway = start_gateway("gw-privacy", policy, output_dir, state=state, env=env)
    messages = [{"role": "user", "content": f"Please remember {marker} for me"}]
    try:
        client = openai_client(gateway, KEY)
        reply = client.chat.completions.create(model="m", messages=messages, max_tokens=8)
        assert reply.choices[0].message.content
        chunks = client.chat.completions.create(
            model="m",
            messages=messages,
            max_tokens=8,
            stream=True,
        )
        assert sum(1 for _ in chunks) > 0
        client.completions.create(model="m", prompt=marker, max_tokens=4)
        ollama = httpx.post(
            f"{gateway.url}/api/chat",
            json={"model": "m", "messages": messages, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        assert ollama.status_code == 200
        broken = httpx.post(  # an invalid body carrying the marker: refused, still private
            f"{gateway.url}/v1/chat/completions",
            content=b'{"model": "m", "messages": [{"content": "' + marker.encode(),  # cut short
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        )
        assert broken.status_code == 400
        rejected = httpx.post(  # a wrong key that contains the marker
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": messages},
            headers={"authorization": f"Bearer {marker}"},
        )
        assert rejected.status_code == 401
    finally:
        gateway.stop()  # SIGTERM: final flush, then look at everything it left
    assert len(read_rows(state / LEDGER_FILE, 0)) == 6  # the ledger did record all six
    files = [p for p in state.rglob("*") if p.is_file()] + [gateway.log_path]
    assert any(p.name == LEDGER_FILE for p in files)
    assert "lanegate.access" in gateway.log() or '"request_id"' in gateway.log()
    for path in files:
        data = path.read_bytes()
        assert marker.encode() not in data, path
        assert KEY.encode() not in data, path
