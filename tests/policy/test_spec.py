"""What a policy works out once for the request path: the headers and counts it reads."""

from __future__ import annotations

from gateway.policy.loader import load_policy_text

UPSTREAM = "upstreams:\n  - {name: a, kind: ollama, base_url: 'http://127.0.0.1:9'}\n"


def test_only_headers_the_rules_read_are_decoded() -> None:
    policy = load_policy_text(
        UPSTREAM
        + """lanes:
  - {name: chat, priority: 10, max_concurrency: 2}
  - {name: bots, priority: 1, max_concurrency: 2}
classify:
  default_lane: chat
  rules:
    - {name: tagged, lane: bots, match: {headers: {X-Team: "ops*"}}}
    - {name: agents, lane: bots, match: {user_agent: "agent"}}
""",
        "p.yaml",
    )
    assert policy.header_names == {b"x-lane", b"x-team", b"user-agent"}
    assert not policy.counts_prompt


def test_prompt_is_counted_for_a_prompt_rule_or_a_budget() -> None:
    with_rule = load_policy_text(
        UPSTREAM
        + """lanes: [{name: chat, priority: 10, max_concurrency: 2}]
classify:
  default_lane: chat
  rules: [{name: short, lane: chat, match: {prompt_chars: {max: 400}}}]
""",
        "p.yaml",
    )
    with_budget = load_policy_text(
        UPSTREAM
        + """lanes: [{name: chat, priority: 10, max_concurrency: 2, tokens_per_minute: 1000}]
classify: {default_lane: chat}
""",
        "p.yaml",
    )
    plain = load_policy_text(
        UPSTREAM + "lanes: [{name: chat, priority: 10, max_concurrency: 2}]\n"
        "classify: {default_lane: chat}\n",
        "p.yaml",
    )
    assert with_rule.counts_prompt and with_budget.counts_prompt
    assert not plain.counts_prompt and plain.header_names == {b"x-lane"}
