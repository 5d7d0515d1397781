"""`LANEGATE_LOG_FORMAT=json`: every log line a JSON object, access lines and the rest alike.

A real `lanegate serve` in json mode serves a chat, refuses a reload (a multi-line error),
reloads, and stops; then every line it wrote must parse as one JSON object, the access line's
fields must be top-level keys (not a JSON string inside `message`), and a traceback stays on
its line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.observe.log_format import FIELDS, JsonFormatter
from tests.support.policies import write_policy
from tests.support.processes import start_gateway, start_lanegate, start_simulator


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("lanegate.reload", logging.ERROR, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_one_object_per_record() -> None:
    line = JsonFormatter().format(_record("refused:\n  p.yaml:3: lanes[0]: bad"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "lanegate.reload"
    assert entry["message"] == "refused:\n  p.yaml:3: lanes[0]: bad"
    assert entry["ts"].endswith("+00:00") and "T" in entry["ts"]


def test_fields_are_merged_and_tracebacks_kept() -> None:
    fields = {"request_id": "r1", "lane": "chat", "ttft_ms": 12.5}
    entry = json.loads(JsonFormatter().format(_record("{...}", **{FIELDS: fields})))
    assert {k: entry[k] for k in fields} == fields and "message" not in entry
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "RuntimeError: boom" in json.loads(line)["exception"]


def test_a_json_gateway_writes_only_json_lines(output_dir: Path, tmp_path: Path) -> None:
    sim = start_simulator("sim-logs", output_dir, "--profile", "fast")
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"name": "sim", "kind": "ollama", "base_url": sim.url}],
        "admin_key: env:T_LOG_ADMIN\n",
    )
    env = {"LANEGATE_LOG_FORMAT": "json", "T_LOG_ADMIN": "log-admin"}
    gateway = start_gateway("gw-json-logs", policy, output_dir, env=env)
    try:
        chat = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            headers={"x-request-id": "json-line"},
            timeout=30,
        )
        assert chat.status_code == 200
        admin = {"authorization": "Bearer log-admin"}
        good = policy.read_text()
        policy.write_text(good + "lanes: [{name: x, priority: high}]\n")
        refused = httpx.post(f"{gateway.url}/admin/reload", headers=admin, timeout=10)
        assert refused.status_code == 400
        policy.write_text(good)
        assert httpx.post(f"{gateway.url}/admin/reload", headers=admin, timeout=10).is_success
        time.sleep(0.3)
    finally:
        gateway.stop()
        sim.stop()
    lines = [line for line in gateway.log().splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all(isinstance(e, dict) and {"ts", "level", "logger"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "lanegate.access"]
    assert [e["request_id"] for e in access] == ["json-line"]
    assert access[0]["status"] == 200 and access[0]["lane"] == "default"
    reload_error = next(e for e in entries if "refused" in e.get("message", ""))
    assert reload_error["level"] == "error" and "priority" in reload_error["message"]
    assert any("listening" in e.get("message", "") for e in entries)


def test_the_agent_logs_json_too(output_dir: Path) -> None:
    env = {"LANEGATE_LOG_FORMAT": "json", "T_AGENT_KEY": "agent-key"}
    agent = start_lanegate(
        "agent-json-logs",
        ["agent", "--key", "env:T_AGENT_KEY", "--host", "127.0.0.1"],
        ready_path="/healthz",
        log_dir=output_dir,
        env=env,
    )
    agent.stop()
    lines = [line for line in agent.log().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["logger"] for line in lines)
