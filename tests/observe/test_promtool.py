"""The alert rules that ship in deploy/prometheus, checked by Prometheus' own promtool.

`promtool check rules` (syntax, templates), `promtool test rules` (each alert fires on the
series that should fire it and stays quiet on healthy ones), and every metric a rule reads is
one `/metrics` exports. The metrics page itself is checked by `promtool check metrics` in
test_metrics.py, after real traffic. promtool comes from Debian's `prometheus` package
(`make system-deps`, which `make test` runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.observe.metrics import exposition
from gateway.policy.loader import load_policy_text
from gateway.settings import Settings
from tests.support.processes import REPO

RULES = REPO / "deploy" / "prometheus" / "lanegate-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "lanegate-rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: `make system-deps` installs Debian's prometheus"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=RULES.parent,
    )


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout


@needs_promtool
def test_alerts_fire_when_they_should_and_only_then() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check is not a formality: a typo in a rule file fails it."""
    broken = RULES.read_text().replace("> 5\n", "> > 5\n", 1)
    assert broken != RULES.read_text()
    path = tmp_path / "broken-rules.yml"
    path.write_text(broken)
    assert promtool("check", "rules", str(path)).returncode != 0


def test_rules_read_only_exported_metrics(tmp_path: Path) -> None:
    policy = load_policy_text(
        "version: 1\nupstreams:\n  - {name: a, kind: ollama, base_url: 'http://127.0.0.1:9'}\n"
        "  - {name: b, kind: ollama, pool: remote, base_url: 'http://127.0.0.1:9'}\n"
        "offload: {}\nlanes:\n  - {name: chat, priority: 10, max_concurrency: 2}\n"
        "classify: {default_lane: chat}\n",
        "inline.yaml",
    )
    text = exposition(create_app(policy, Settings(state_dir=tmp_path)).metrics).decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    # Only with LANEGATE_REDIS_URL (docs/scaling.md), and once the host has been sampled.
    exported = {"lanegate_redis_up", "lanegate_host_swap_used_bytes"}
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    rules = [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]
    used = {name for rule in rules for name in re.findall(r"\blanegate_[a-z_]+", rule["expr"])}
    assert used and used <= exported, used - exported
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
