"""`ladder compare --strict`, `history`, `sign`/`verify`, a run without matplotlib, and the
warning when the target is a live lanegate whose offload the load may trip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.policies import write_policy
from tests.support.processes import Service, start_gateway
from tests.tools.ladder.cli import ladder_verb, read_csv, run_ladder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def two_runs(knee_sim: Service, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    for name in ("20261201T090000Z", "20261202T090000Z"):
        result = run_ladder(
            knee_sim.url + "/v1", runs / name, "--rungs", "1,2", "--rung-seconds", "1",
            "--no-plot",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return runs


def edited_copy(run: Path, to: Path, edit: dict[str, dict[str, str]]) -> Path:
    shutil.copytree(run, to)
    report = json.loads((to / "report.json").read_text())
    for section, fields in edit.items():
        report[section].update(fields)
    (to / "report.json").write_text(json.dumps(report))
    return to


def test_compare_warns_on_other_versions_and_refuses_them_with_strict(
    two_runs: Path, tmp_path: Path
) -> None:
    a, b = sorted(two_runs.iterdir())
    same = ladder_verb("compare", "--strict", str(a), str(b))
    assert same.returncode == 0 and "warning" not in same.stderr, same.stderr
    newer = edited_copy(
        b, tmp_path / "b", {"tool": {"version": "9.9.9"}, "host": {"os_build": "25A1"}}
    )
    warned = ladder_verb("compare", str(a), str(newer))
    assert warned.returncode == 0 and "| 1 |" in warned.stdout
    assert "lanegate version: 0.1.0 → 9.9.9" in warned.stderr
    refused = ladder_verb("compare", "--strict", str(a), str(newer))
    assert refused.returncode == 2 and refused.stdout == ""
    assert "refusing to compare runs that differ in: lanegate version: 0.1.0 → 9.9.9" in (
        refused.stderr
    )
    assert "OS build:" in refused.stderr and "drop --strict" in refused.stderr


def test_history_is_one_line_per_run(two_runs: Path) -> None:
    result = ladder_verb("history", str(two_runs))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("| 20")]
    assert len(lines) == 2 and lines == sorted(lines)
    for line, run in zip(lines, sorted(two_runs.iterdir()), strict=True):
        report = json.loads((run / "report.json").read_text())
        p95s = [f"{r['ttft_ms']['p95']:.0f}" for r in report["rungs"]]
        assert line.endswith(" | ".join(p95s) + " |")
    missing = ladder_verb("history", str(two_runs / "nope"))
    assert missing.returncode == 2 and "no such run" in missing.stderr


@pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen missing: make system-deps"
)
def test_sign_then_verify_then_one_byte_of_requests_csv(two_runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(sorted(two_runs.iterdir())[0], run)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text("ops@example " + (tmp_path / "id_ed25519.pub").read_text())
    signed = ladder_verb("sign", str(run), "--key", str(key))
    assert signed.returncode == 0 and "SHA256SUMS.sig" in signed.stdout, signed.stderr
    args = ["verify", str(run), "--allowed-signers", str(allowed), "--identity", "ops@example"]
    good = ladder_verb(*args)
    assert good.returncode == 0 and good.stdout.endswith("verified\n"), good.stdout
    data = bytearray((run / "requests.csv").read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    (run / "requests.csv").write_bytes(bytes(data))
    bad = ladder_verb(*args)
    assert bad.returncode == 1 and "requests.csv: CHANGED" in bad.stdout
    assert bad.stdout.endswith("NOT VERIFIED\n")


def test_without_matplotlib_everything_but_the_png_is_written(
    knee_sim: Service, tmp_path: Path
) -> None:
    blocker = tmp_path / "no-matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(blocker.parent), env.get("PYTHONPATH", "")) if p
    )
    out = tmp_path / "run"
    result = run_ladder(knee_sim.url + "/v1", out, "--rungs", "1", "--rung-seconds", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "ladder.png skipped: matplotlib is not installed (pip install 'lanegate[ladder]')" in (
        result.stderr
    )
    assert not (out / "ladder.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["plot"]["written"] is False and "lanegate[ladder]" in report["plot"]["why"]
    assert read_csv(out / "requests.csv") and read_csv(out / "signals.csv")
    assert (out / "report.md").read_text().startswith("# Load ladder")
    assert json.loads((out / "benchmarks.json").read_text())["benchmarks"]


OFFLOAD_POLICY = """
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4}
  - {name: batch, priority: 10, max_concurrency: 4, offloadable: true}
classify: {default_lane: interactive, anonymous_lanes: [interactive, batch]}
offload: {sample_interval: 5}
"""


def test_a_live_gateway_with_offload_is_named_before_the_load_starts(
    knee_sim: Service, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "policy.yaml",
        [
            {"name": "mini", "kind": "ollama", "base_url": knee_sim.url, "max_concurrency": 4},
            {"name": "pool", "kind": "ollama", "pool": "remote", "base_url": knee_sim.url},
        ],
        OFFLOAD_POLICY,
    )
    gateway = start_gateway("gateway-offload", policy, tmp_path)
    try:
        out = tmp_path / "run"
        result = run_ladder(
            gateway.url + "/v1", out, "--rungs", "1", "--rung-seconds", "1", "--no-plot"
        )
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("lanegate ladder: warning: ") and "offload configured" in first
    report = json.loads((out / "report.json").read_text())
    (warning,) = report["warnings"]
    assert "/admin/offload" in warning and "**Warning:**" in (out / "report.md").read_text()
