"""The policy's `slo` section: parsed into the ladder's thresholds, or a line-numbered error."""

from __future__ import annotations

import re

import pytest

from gateway.policy import PolicyError, load_policy_text
from gateway.tools.ladder.gates import SloThresholds
from tests.support.paths import REPO

BASE = """version: 1
upstreams:
  - {name: mini, kind: ollama, base_url: "http://127.0.0.1:11434", max_concurrency: 4}
"""  # lines 1-3


def test_slo_section_becomes_the_ladders_thresholds() -> None:
    text = BASE + "slo:\n  interactive_p95_ttft_ms: 1500\n  swap_growth_gb: 1.5\n"
    policy = load_policy_text(text, "ops.yaml")
    assert policy.slo == SloThresholds(interactive_p95_ttft_ms=1500, swap_growth_gb=1.5)
    assert load_policy_text(BASE, "ops.yaml").slo is None


@pytest.mark.parametrize(
    ("body", "line", "field"),
    [
        ("slo:\n  p95_ratio: 1\n", 5, "slo.p95_ratio"),
        ("slo:\n  error_rate: 0.5\n  error_rate_pct: 1\n", 6, "slo.error_rate_pct"),
        ("slo:\n  interactive_p95_ttft_ms: -3\n", 5, "slo.interactive_p95_ttft_ms"),
    ],
)
def test_a_bad_slo_field_names_file_line_and_field(body: str, line: int, field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(BASE + body, "ops.yaml")
    assert str(caught.value.problems[0]).startswith(f"ops.yaml:{line}: {field}: ")


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_the_shipped_policies_commented_slo_example_is_valid(name: str) -> None:
    """The shipped `slo` section is valid as it stands, and with its commented fields on."""
    text = (REPO / "policies" / name).read_text()
    block = re.search(r"^slo:\n(?:  .*\n)+", text, re.MULTILINE)
    assert block is not None, f"policies/{name} has no slo section"
    as_shipped = load_policy_text(BASE + block.group(0), name)
    assert as_shipped.protection.enabled and as_shipped.protection.ttft_ratio == 1.3
    uncommented = re.sub(r"^  # ", "  ", block.group(0), flags=re.MULTILINE)
    policy = load_policy_text(BASE + uncommented, name)
    assert policy.slo == SloThresholds(interactive_p95_ttft_ms=1500)
    assert policy.protection.baseline_ttft_s is not None
