"""Policy files: valid ones load into frozen specs; broken ones name file, line and field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.policy import PolicyError, load_policy, load_policy_text
from gateway.policy.spec import UpstreamKind
from tests.support.processes import REPO


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_shipped_policies_load(name: str) -> None:
    policy = load_policy(REPO / "policies" / name)
    assert policy.upstreams
    assert {u.pool for u in policy.upstreams} == {"local", "remote"}


def test_spec_is_frozen_and_typed() -> None:
    policy = load_policy_text(
        "upstreams:\n  - name: a\n    kind: llamacpp\n    base_url: http://127.0.0.1:8080/\n",
        "inline.yaml",
    )
    upstream = policy.upstreams[0]
    assert upstream.kind is UpstreamKind.LLAMACPP
    assert upstream.base_url == "http://127.0.0.1:8080"  # trailing slash trimmed
    assert upstream.timeouts.first_byte_s == 600
    with pytest.raises(dataclasses.FrozenInstanceError):
        upstream.name = "b"  # type: ignore[misc]


BROKEN = [
    ("upstreams:\n  - name: a\n\tbase_url: http://x:1\n", 3, "", "YAML syntax"),
    ("upstreams:\n  - name: a\n   base_url: http://x:1\n", 3, "", "YAML syntax"),
    (
        "upstreams:\n  - name: a\n    base_url: http://x:1\n    max_concurency: 4\n",
        4,
        "upstreams[0].max_concurency",
        "unknown field",
    ),
    (
        "upstreams:\n  - name: a\n    base_url: http://x:1\n    max_concurrency: -1\n",
        4,
        "upstreams[0].max_concurrency",
        "greater than or equal to 1",
    ),
    (
        "upstreams:\n  - name: a\n    kind: vllm\n    base_url: http://x:1\n",
        3,
        "upstreams[0].kind",
        "'ollama'",
    ),
    (
        "upstreams:\n  - name: a\n    base_url: localhost:11434\n",
        3,
        "upstreams[0].base_url",
        "http://",
    ),
    (
        "upstreams:\n  - name: a\n    base_url: http://x:1/v1\n",
        3,
        "upstreams[0].base_url",
        "without /v1",
    ),
    (
        "upstreams:\n  - name: a\n    base_url: http://x:1\n    api_key: sk-123\n",
        4,
        "upstreams[0].api_key",
        "never the key",
    ),
    ("upstreams:\n  - name: a\n", 2, "upstreams[0].base_url", "required"),
    ("upstreams: []\n", 1, "upstreams", "at least 1"),
    (
        "upstreams:\n  - {name: a, base_url: 'http://x:1'}\n  - {name: a, base_url: 'http://y:1'}\n",
        1,
        "upstreams",
        "used twice",
    ),
    ("- just\n- a list\n", 1, "", "expected a mapping"),
    ("upstreams:\n  - name: A B\n    base_url: http://x:1\n", 2, "upstreams[0].name", "pattern"),
    (
        "upstreams:\n  - name: a\n    base_url: http://x:1\n    timeouts:\n      idle: 0\n",
        5,
        "upstreams[0].timeouts.idle",
        "greater than 0",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), BROKEN)
def test_broken_policy_names_line_and_field(text: str, line: int, field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "ops.yaml")
    problem = caught.value.problems[0]
    assert problem.file == "ops.yaml"
    assert problem.line == line
    assert problem.field == field
    assert message in problem.message
    assert str(problem).startswith(f"ops.yaml:{line}: ")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")
