"""The `models` section: a logical name, and what each upstream calls it."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyError, load_policy_text

UPSTREAMS = """upstreams:
  - {name: mini, kind: ollama, base_url: "http://127.0.0.1:11434"}
  - {name: lms, kind: lmstudio, base_url: "http://127.0.0.1:1234", pool: remote}
"""


def test_ids_per_upstream_and_fallback_to_the_logical_name() -> None:
    policy = load_policy_text(
        UPSTREAMS + "models:\n  llama3.1:8b:\n    lms: meta-llama-3.1-8b-instruct\n", "m.yaml"
    )
    assert policy.model_id("llama3.1:8b", "lms") == "meta-llama-3.1-8b-instruct"
    assert policy.model_id("llama3.1:8b", "mini") == "llama3.1:8b"
    assert policy.model_id("qwen2.5:7b", "lms") == "qwen2.5:7b"


def test_unknown_upstream_names_file_line_and_field() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(UPSTREAMS + "models:\n  llama3.1:8b:\n    studio: x\n", "m.yaml")
    problem = caught.value.problems[0]
    assert (problem.line, problem.field) == (6, "models.llama3.1:8b.studio")
    assert "unknown upstream 'studio'" in problem.message


def test_ids_must_be_strings() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(UPSTREAMS + "models:\n  llama3.1:8b: [lms]\n", "m.yaml")
    assert caught.value.problems[0].field.startswith("models.llama3.1:8b")
