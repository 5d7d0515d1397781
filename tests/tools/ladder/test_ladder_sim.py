"""`lanegate ladder` as a user runs it: a real subprocess against a real simulator.

The knee-demo profile has 4 slots: up to 4 requests in flight TTFT stays near its
single-stream value (about 2x at 4, with the closed loop's staggered starts); at 8 half the
requests wait a whole request for a slot, TTFT jumps past 3x and throughput stops growing.
So the knee must land on 8, the first rung above the slot count.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gateway.tools.ladder.stats import percentile
from tests.support.policies import write_policy
from tests.support.processes import REPO, Service, free_port, start_gateway
from tests.tools.ladder.cli import MODEL, check_cpu_figures, ladder_cmd, read_csv, run_ladder

pytestmark = pytest.mark.timeout(120)


def received(sim: Service) -> int:
    return int(httpx.get(sim.url + "/sim/stats").json()["received"])


def wait_for_rung_two(sim: Service, timeout_s: float = 30.0) -> None:
    """Rung 1 keeps one request in flight; two in flight at once means rung 2 began."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(sim.url + "/sim/stats").json()["active"] < 2:
        assert time.monotonic() < deadline, "the ladder never reached its second rung"
        time.sleep(0.02)


def test_the_ladder_finds_the_knee_of_a_four_slot_host(knee_sim: Service, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"name": "sim", "kind": "ollama", "base_url": knee_sim.url, "max_concurrency": 4}],
        "slo:\n  interactive_p95_ttft_ms: 1\n  error_rate: 0.02\n",
    )
    out = tmp_path / "run"
    before = received(knee_sim)
    result = run_ladder(
        knee_sim.url + "/v1", out, "--rungs", "1,2,4,8,16", "--rung-seconds", "2.5",
        "--stop-at-knee", "--watch-pid", str(knee_sim.process.pid),
        "--policy", str(policy), "--gate-p95-ttft-ms", "5000", "--note", "shared CI box",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    # Progress while it ran (piped: a line every 5 s), then the verdict.
    assert re.search(
        r"rung \d/5 concurrency \d+: .* \d+ done, p95 TTFT \d+ ms, 0 errors", result.stderr
    )
    assert "knee at 8 (ttft_ratio); gates pass" in result.stderr

    knee = report["knee"]
    assert knee["concurrency"] == 8, report["rungs"]
    assert "ttft_ratio" in knee["rules"]
    assert [r["concurrency"] for r in report["rungs"]] == [1, 2, 4, 8]  # stopped at the knee
    assert "Knee at concurrency **8**" in (out / "report.md").read_text()

    # Every request the simulator received is one CSV row, and each rung's figures are the
    # CSV's own.
    rows = read_csv(out / "requests.csv")
    assert len(rows) == received(knee_sim) - before
    assert all(row["status"] == "200" and row["error"] == "" for row in rows)
    per_rung = Counter(int(row["rung"]) for row in rows)
    for rung in report["rungs"]:
        mine = [r for r in rows if int(r["rung"]) == rung["concurrency"]]
        assert rung["requests"] == per_rung[rung["concurrency"]] == len(mine) > 0
        p95 = percentile([float(r["ttft_s"]) for r in mine], 0.95)
        assert p95 is not None and rung["ttft_ms"]["p95"] == pytest.approx(p95 * 1000, abs=0.1)
        assert all(int(r["completion_tokens"]) == 16 for r in mine)
        assert rung["peak_rss_bytes"] > 0

    tags = httpx.get(knee_sim.url + "/api/tags").json()["models"]
    digest = next(m["digest"] for m in tags if m["name"] == MODEL)
    assert report["target"]["digest"] == digest
    assert report["target"]["model"] == MODEL
    contract = report["contract"]
    assert (contract["stream"], contract["keep_alive"], contract["temperature"]) == (True, True, 0)
    assert (contract["max_tokens"], contract["prompt_tokens"]) == (16, 64)
    assert len(contract["prompt_set_sha256"]) == 64
    assert report["tool"]["version"] and report["host"]["cpus"] >= 1

    # Thresholds: the policy's, with the flag overriding its TTFT limit.
    gates = report["gates"]
    assert gates["thresholds"]["interactive_p95_ttft_ms"] == 5000
    assert gates["thresholds"]["error_rate"] == 0.02
    assert [g["name"] for g in gates["results"]] == [
        "interactive_p95_ttft_ms", "p95_ratio", "error_rate", "swap_growth_gb",
    ]  # fmt: skip
    assert gates["passed"] and gates["operating_rungs"] == 3 and gates["signable_concurrency"] == 4

    signals = read_csv(out / "signals.csv")
    assert len(signals) >= 10 and all(int(s["rss_bytes"]) > 0 for s in signals)
    assert (out / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_new_columns_and_lines(out, report, rows, signals)


def check_new_columns_and_lines(
    out: Path,
    report: dict[str, object],
    rows: list[dict[str, str]],
    signals: list[dict[str, str]],
) -> None:
    """What #22 and #21 added: per-request ITL/TPOT/tok/s, host signals on the same clock,
    a host table and a tail reading per rung, provenance facts, a GuideLLM-shaped export."""
    for row in rows:
        assert float(row["itl_s"]) > 0 and float(row["tpot_s"]) > 0 and float(row["output_tps"]) > 0
    check_cpu_figures(signals)
    for sample in signals:
        assert float(sample["disk_read_bps"]) >= 0 and float(sample["disk_write_bps"]) >= 0
        assert sample["thermal"]  # "not present" on a VM, a temperature or a level elsewhere
    assert [float(s["t_s"]) for s in signals] == sorted(float(s["t_s"]) for s in signals)
    rungs = report["rungs"]
    assert isinstance(rungs, list)
    for rung in rungs:
        assert rung["ttft_samples"] == rung["completed"] > 0
        assert rung["itl_ms"]["p50"] > 0 and rung["tpot_ms"]["p95"] > 0
        assert rung["host"]["samples"] > 0 and rung["host"]["cpu_busy_max_pct"] is not None
        assert rung["tail"]["verdict"] in {"steady", "queueing", "cpu", "memory", "disk",
                                           "thermal", "errors"}  # fmt: skip
    # The knee rung's tail rose (TTFT jumped past 3x): its line says by how much.
    assert re.match(r"p95 \d+\.\dx", rungs[-1]["tail"]["line"]), rungs[-1]["tail"]
    markdown = (out / "report.md").read_text()
    assert "## Host during each rung" in markdown and "## Why the tail moved" in markdown
    for rung in rungs:
        assert f"- concurrency {rung['concurrency']}: {rung['tail']['line']}" in markdown
    assert report["note"] == "shared CI box" and "note | shared CI box" in markdown
    host = report["host"]
    assert isinstance(host, dict) and host["os_build"] and host["machine_sku"]
    bench = json.loads((out / "benchmarks.json").read_text())
    assert [b["config"]["strategy"]["streams"] for b in bench["benchmarks"]] == [
        r["concurrency"] for r in rungs
    ]
    for b, rung in zip(bench["benchmarks"], rungs, strict=True):
        ttft = b["metrics"]["time_to_first_token_ms"]["successful"]
        assert ttft["count"] == rung["completed"]
        assert ttft["percentiles"]["p95"] == pytest.approx(rung["ttft_ms"]["p95"], abs=0.1)


def test_a_failed_gate_fails_the_command(knee_sim: Service, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_ladder(
        knee_sim.url + "/v1", out, "--rungs", "1", "--rung-seconds", "1",
        "--gate-p95-ttft-ms", "1", "--no-plot", "--no-stream",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads((out / "report.json").read_text())
    gate = report["gates"]["results"][0]
    assert gate["name"] == "interactive_p95_ttft_ms" and gate["passed"] is False
    assert report["contract"]["stream"] is False
    assert "**FAIL**" in (out / "report.md").read_text()


def test_ctrl_c_still_writes_everything_measured(knee_sim: Service, tmp_path: Path) -> None:
    out = tmp_path / "run"
    before = received(knee_sim)
    cmd = ladder_cmd(knee_sim.url + "/v1", out, "--rungs", "1,2,4,8", "--rung-seconds", "3")
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_rung_two(knee_sim)  # however long the start took on a loaded machine
    time.sleep(0.5)  # into the second rung, well before its 3 s end
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr.decode()

    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    rungs = report["rungs"]
    assert [r["concurrency"] for r in rungs] == [1, 2]
    assert (rungs[0]["partial"], rungs[1]["partial"]) == (False, True)
    rows = read_csv(out / "requests.csv")
    cut = [row for row in rows if row["error"] == "interrupted"]
    assert 1 <= len(cut) <= 2 and all(row["rung"] == "2" for row in cut)
    # A request cut as it was being sent may never have been read by the simulator.
    arrived = received(knee_sim) - before
    assert arrived <= len(rows) <= arrived + len(cut)
    assert "Interrupted" in (out / "report.md").read_text()
    assert (out / "ladder.png").exists() and read_csv(out / "signals.csv")


def test_compare_two_runs(knee_sim: Service, tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = run_ladder(
            knee_sim.url + "/v1", tmp_path / name, "--rungs", "1,2", "--rung-seconds", "1",
            "--no-plot",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "ladder", "compare", str(tmp_path / "a"),
         str(tmp_path / "b" / "report.json")],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["1", "2"]
    assert all(line.count("x |") >= 4 for line in table[1:])  # ratios in every column group
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "ladder", "compare", str(tmp_path), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot read a ladder report" in bad.stderr


def test_mix_runs_lanes_side_by_side_through_the_gateway(knee_sim: Service, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"name": "sim", "kind": "ollama", "base_url": knee_sim.url, "max_concurrency": 4}],
        MIX_LANES,
    )
    gateway = start_gateway("gateway-mix", policy, tmp_path)
    try:
        out = tmp_path / "run"
        result = run_ladder(
            gateway.url + "/v1", out, "--mix", "interactive=1,batch=3,heartbeat=2/s",
            "--rung-seconds", "3",
        )  # fmt: skip
        access = [json.loads(line[line.index("{") :]) for line in _json_lines(gateway.log())]
    finally:
        gateway.stop()
    assert result.returncode in (0, 1), result.stderr
    report = json.loads((out / "report.json").read_text())
    (rung,) = report["rungs"]
    assert rung["concurrency"] == 4 and set(rung["lanes"]) == {"interactive", "batch", "heartbeat"}
    rows = read_csv(out / "requests.csv")
    by_lane = Counter(row["lane"] for row in rows)
    assert 5 <= by_lane["heartbeat"] <= 7  # 2/s for 3 s, open loop
    for lane, stats in rung["lanes"].items():
        assert stats["requests"] == by_lane[lane] > 0
        assert stats["errors"] == 0
    # The gateway put each request in the lane the ladder named ("-": the model lookups).
    lanes = Counter(record["lane"] for record in access if record.get("lane", "-") != "-")
    assert lanes == by_lane
    assert "## Lanes" in (out / "report.md").read_text()
    # Each lane with its own load, not the step's total (#21).
    loads = {name: (s["concurrency"], s["rate_per_s"]) for name, s in rung["lanes"].items()}
    assert loads == {"interactive": (1, 0.0), "batch": (3, 0.0), "heartbeat": (0, 2.0)}
    assert "| heartbeat | 2/s |" in (out / "report.md").read_text()
    # No single-stream rung to compare with: the ratio gate says so instead of passing.
    ratio = next(g for g in report["gates"]["results"] if g["name"] == "p95_ratio")
    assert ratio["passed"] is None and ratio["worst"].startswith("no baseline")
    assert (out / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A gateway without offload: nothing to trip, no warning.
    assert report["warnings"] == [] and "warning" not in result.stderr


MIX_LANES = """
lanes:
  - {name: interactive, priority: 100, max_concurrency: 2, reserved: 1}
  - {name: batch, priority: 10, max_concurrency: 3}
  - {name: heartbeat, priority: 50, max_concurrency: 1}
classify:
  default_lane: interactive
  anonymous_lanes: [interactive, batch, heartbeat]
"""


def _json_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"request_id"' in line and "{" in line]


def test_a_server_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    result = run_ladder(f"http://127.0.0.1:{port}/v1", tmp_path / "run", "--rungs", "1")
    assert result.returncode == 2
    assert f"nothing answers at http://127.0.0.1:{port}/api/tags" in result.stderr
    assert not (tmp_path / "run").exists()


def test_mix_with_per_lane_api_keys(knee_sim: Service, tmp_path: Path) -> None:
    # Named clients only: a request without one of these keys is refused (401), so every
    # request succeeding proves each lane sent its own key.
    keys = {"interactive": "lg-ui-key-for-the-ladder", "batch": "lg-batch-key-for-the-ladder"}
    clients = "clients:\n" + "".join(
        f"  - {{name: {lane}-app, key: 'sha256:{hashlib.sha256(key.encode()).hexdigest()}', "
        f"lanes: [{lane}], default_lane: {lane}}}\n"
        for lane, key in keys.items()
    )
    policy = write_policy(
        tmp_path / "policy.yaml",
        [{"name": "sim", "kind": "ollama", "base_url": knee_sim.url, "max_concurrency": 4}],
        MIX_LANES.replace("  anonymous_lanes: [interactive, batch, heartbeat]\n", "") + clients,
    )
    gateway = start_gateway("gateway-keys", policy, tmp_path)
    try:
        out = tmp_path / "run"
        result = run_ladder(
            gateway.url + "/v1", out, "--mix", "interactive=1,batch=2", "--rung-seconds", "2",
            "--no-plot", *(f"--lane-key={lane}={key}" for lane, key in keys.items()),
        )  # fmt: skip
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "requests.csv")
    assert {row["lane"] for row in rows} == {"interactive", "batch"}
    assert all(row["status"] == "200" for row in rows), rows
