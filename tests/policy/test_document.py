"""The whole policy document: sections assembled, cross-section checks (file, line, field),
defaults, the schema, and the shipped policies."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.lanes.classify import Decision, RequestView, classify, model_allowed, rewrite_model
from gateway.policy import PolicyError, load_policy, load_policy_text
from gateway.policy.loader import check_policy_text, policy_schema
from gateway.policy.spec import Policy
from gateway.serving.keys import key_matches
from tests.lanes.test_classify import view
from tests.support.processes import REPO

UPSTREAMS = """\
upstreams:
  - {name: mini, base_url: "http://127.0.0.1:11434", max_concurrency: 4}
  - {name: studio, pool: remote, base_url: "http://192.0.2.10:11434", max_concurrency: 8}
"""  # lines 1-3
LANES = """\
lanes:
  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 1}
  - {name: batch, priority: 10, max_concurrency: 3, offloadable: true}
"""  # lines 4-6
CLASSIFY = """\
classify:
  default_lane: interactive
"""  # lines 7-8
BASE = UPSTREAMS + LANES + CLASSIFY
SHA = "sha256:" + "ab" * 32

# (id, text, line, field path, part of the message)
BROKEN = [
    (
        "yaml-unquoted-star",
        UPSTREAMS + "lanes:\n  - name: hb\n    priority: 1\n    max_concurrency: 1\n"
        "    model_map:\n      *: llama3.2:3b\n",
        9,
        "",
        'quote globs, e.g. "*"',
    ),
    (
        "yaml-bad-indent",
        BASE + "  rules:\n   - lane: batch\n    match: {stream: false}\n",
        11,
        "",
        "YAML syntax",
    ),
    ("yaml-duplicate-key", BASE + "lanes: []\n", 9, "lanes", "written twice (also on line 4)"),
    (
        "unknown-lane-in-rule",
        BASE + "  rules:\n    - name: fast\n      lane: turbo\n      match: {stream: true}\n",
        11,
        "classify.rules[0].lane",
        "unknown lane 'turbo' (lanes: interactive, batch)",
    ),
    (
        "negative-cap",
        UPSTREAMS + "lanes:\n  - name: interactive\n    priority: 100\n    max_concurrency: -2\n",
        7,
        "lanes[0].max_concurrency",
        "greater than or equal to 1",
    ),
    (
        "reserved-over-lane-cap",
        UPSTREAMS + "lanes:\n  - name: interactive\n    priority: 100\n    max_concurrency: 2\n"
        "    reserved: 3\n",
        8,
        "lanes[0].reserved",
        "more than this lane's max_concurrency (2)",
    ),
    (
        "reserved-over-upstream-slots",
        UPSTREAMS
        + "lanes:\n  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 3}\n"
        "  - {name: batch, priority: 10, max_concurrency: 2, reserved: 2}\n" + CLASSIFY,
        6,
        "lanes[1].reserved",
        "add up to 5 (interactive 3, batch 2) but the 'local' pool has only 4",
    ),
    (
        "plain-text-client-key",
        BASE + "clients:\n  - name: alice\n    key: sk-live-0123456789\n",
        11,
        "clients[0].key",
        "`lanegate keys new NAME`",
    ),
    (
        "plain-text-admin-key",
        BASE + "admin_key: hunter2\n",
        9,
        "admin_key",
        "looks like a plain key",
    ),
    (
        "short-sha256",
        BASE + "clients:\n  - {name: alice, key: 'sha256:abc123'}\n",
        10,
        "clients[0].key",
        "64 lower-case hex digits",
    ),
    (
        "client-unknown-lane",
        BASE + f"clients:\n  - name: alice\n    key: {SHA}\n    lanes: [interactive, bulk]\n",
        12,
        "clients[0].lanes[1]",
        "unknown lane 'bulk'",
    ),
    (
        "client-default-not-allowed",
        BASE + f"clients:\n  - name: ci\n    key: {SHA}\n    lanes: [batch]\n"
        "    default_lane: interactive\n",
        13,
        "clients[0].default_lane",
        "'interactive' is not in this client's lanes (batch)",
    ),
    (
        "client-policy-default-not-allowed",
        BASE + f"clients:\n  - name: ci\n    key: {SHA}\n    lanes: [batch]\n",
        12,
        "clients[0].lanes",
        "classify.default_lane 'interactive', which this client may not use",
    ),
    (
        "rule-unknown-client",
        BASE + "  rules:\n    - lane: batch\n      match:\n        client: [bob]\n",
        12,
        "classify.rules[0].match.client[0]",
        "unknown client 'bob' (clients: none: the policy has no clients section)",
    ),
    (
        "rule-lane-forbidden-for-its-client",
        BASE
        + "  rules:\n    - lane: interactive\n      match: {client: ci}\n"
        + f"clients:\n  - {{name: ci, key: '{SHA}', lanes: [batch], default_lane: batch}}\n",
        10,
        "classify.rules[0].lane",
        "client 'ci' may not use lane 'interactive'",
    ),
    (
        "duplicate-lane-name",
        UPSTREAMS + "lanes:\n  - {name: batch, priority: 1, max_concurrency: 1}\n"
        "  - {name: batch, priority: 2, max_concurrency: 1}\n",
        6,
        "lanes[1].name",
        "lane name 'batch' is used twice (first at lanes[0])",
    ),
    (
        "duplicate-client-key",
        BASE + f"clients:\n  - {{name: a, key: '{SHA}'}}\n  - {{name: b, key: '{SHA}'}}\n",
        11,
        "clients[1].key",
        "is used twice (first at clients[0])",
    ),
    (
        "admin-key-is-a-client-key",
        BASE + "admin_key: env:SHARED\nclients:\n  - {name: a, key: 'env:SHARED'}\n",
        11,
        "clients[0].key",
        "same key reference as admin_key",
    ),
    (
        "no-default-lane-with-several-lanes",
        UPSTREAMS + LANES + "classify:\n  rules: []\n",
        7,
        "classify.default_lane",
        "required when there are several lanes",
    ),
    (
        "misspelt-lane-field",
        UPSTREAMS + "lanes:\n  - name: a\n    priority: 1\n    max_concurency: 2\n",
        7,
        "lanes[0].max_concurency",
        "unknown field",
    ),
    (
        "empty-match",
        BASE + "  rules:\n    - lane: batch\n      match: {}\n",
        11,
        "classify.rules[0].match",
        "use classify.default_lane",
    ),
    (
        "bad-user-agent-regex",
        BASE + "  rules:\n    - lane: batch\n      match:\n        user_agent: '(cron'\n",
        12,
        "classify.rules[0].match.user_agent",
        "not a valid regular expression",
    ),
    (
        "range-upside-down",
        BASE + "  rules:\n    - lane: batch\n      match:\n        max_tokens: {min: 10, max: 5}\n",
        12,
        "classify.rules[0].match.max_tokens.max",
        "below min (10)",
    ),
    (
        "model-map-target-not-allowed",
        UPSTREAMS + "lanes:\n  - name: hb\n    priority: 1\n    max_concurrency: 1\n"
        "    allowed_models: [qwen*]\n    model_map:\n      '*': llama3.2:3b\n",
        10,
        "lanes[0].model_map.*",
        "rewrites to 'llama3.2:3b', which this lane's allowed_models does not allow",
    ),
    (
        "rule-lane-without-lanes-section",
        UPSTREAMS + "classify:\n  rules:\n    - {lane: batch, match: {stream: false}}\n",
        6,
        "classify.rules[0].lane",
        "without a lanes section the only lane is 'default'",
    ),
    (
        "relative-path-glob",
        BASE + "  rules:\n    - lane: batch\n      match: {path: v1/embeddings}\n",
        11,
        "classify.rules[0].match.path",
        "paths start with /",
    ),
    (
        "unknown-anonymous-lane",
        BASE + "  anonymous_lanes: [interactive, heartbeat]\n",
        9,
        "classify.anonymous_lanes[1]",
        "unknown lane 'heartbeat'",
    ),
    (
        "zero-queue-timeout",
        UPSTREAMS + "lanes:\n  - {name: a, priority: 1, max_concurrency: 1, queue_timeout: 0}\n",
        5,
        "lanes[0].queue_timeout",
        "greater than 0",
    ),
    (
        "negative-budget",
        UPSTREAMS + "lanes:\n  - name: a\n    priority: 1\n    max_concurrency: 1\n"
        "    tokens_per_day: -5\n",
        8,
        "lanes[0].tokens_per_day",
        "greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_broken_policy_names_file_line_field(
    text: str, line: int, field: str, message: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "ops.yaml")
    errors = [p for p in caught.value.problems if not p.warning]
    assert errors, caught.value.problems
    found = [p for p in errors if p.field == field and message in p.message]
    assert found, "\n".join(str(p) for p in errors)
    problem = found[0]
    assert problem.file == "ops.yaml"
    assert problem.line == line, str(problem)
    assert str(problem).startswith(f"ops.yaml:{line}: {field or '(top level)'}: ")


def test_plain_key_is_never_echoed() -> None:
    text = BASE + "clients:\n  - {name: alice, key: sk-live-0123456789}\n"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "ops.yaml")
    assert "sk-live" not in str(caught.value)


def test_every_cross_section_error_is_reported_at_once() -> None:
    text = BASE + (
        "  anonymous_lanes: [nope]\n"
        "  rules:\n    - {lane: turbo, match: {stream: true}}\n"
        f"clients:\n  - {{name: a, key: '{SHA}', lanes: [bulk]}}\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "ops.yaml")
    fields = [p.field for p in caught.value.problems]
    assert fields == [
        "classify.anonymous_lanes[0]",
        "classify.rules[0].lane",
        "clients[0].lanes[0]",
        "clients[0].lanes",
    ]
    lines = [p.line for p in caught.value.problems]
    assert lines == sorted(lines)


def test_over_reservation_is_reported_once_at_the_lane_that_tips_it() -> None:
    text = (
        UPSTREAMS
        + (
            "lanes:\n  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 2}\n"
            "  - {name: batch, priority: 10, max_concurrency: 2, reserved: 2}\n"
            "  - {name: heartbeat, priority: 50, max_concurrency: 1, reserved: 1}\n"
            "  - {name: bulk, priority: 1, max_concurrency: 1, reserved: 1}\n"
        )
        + CLASSIFY
    )
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "ops.yaml")
    errors = [p for p in caught.value.problems if not p.warning]
    assert [(p.line, p.field) for p in errors] == [(7, "lanes[2].reserved")]
    assert "add up to 6 (interactive 2, batch 2, heartbeat 1, bulk 1)" in errors[0].message


# -- warnings: usable, but probably not meant ------------------------------------------------------


def test_lane_cap_beyond_reachable_slots_is_a_warning() -> None:
    text = (
        UPSTREAMS
        + (
            "lanes:\n  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 2}\n"
            "  - {name: batch, priority: 10, max_concurrency: 6}\n"
            "  - {name: bulk, priority: 5, max_concurrency: 9, offloadable: true}\n"
        )
        + CLASSIFY
    )
    checked = check_policy_text(text, "ops.yaml")
    assert [(w.line, w.field) for w in checked.warnings] == [(6, "lanes[1].max_concurrency")]
    warning = checked.warnings[0]
    assert "6 is more than the 2 slots this lane can reach" in warning.message
    assert str(warning).startswith("ops.yaml:6: lanes[1].max_concurrency: warning: ")
    assert checked.policy.lane("batch").max_concurrency == 6


def test_hand_cap_below_the_slots_of_a_lower_lane_is_a_warning() -> None:
    lanes = (
        "lanes:\n  - {name: interactive, priority: 100}\n"
        "  - {name: batch, priority: 10, max_concurrency: 2}\n"
        "  - {name: bulk, priority: 5}\n"
    )
    checked = check_policy_text(UPSTREAMS + lanes + CLASSIFY, "ops.yaml")
    assert [(w.line, w.field) for w in checked.warnings] == [(6, "lanes[1].max_concurrency")]
    assert "a hand cap of 2 holds this lane below the 4 slots" in checked.warnings[0].message
    # Unset caps are the slots each lane can reach; the adaptive limits are on by default.
    assert checked.policy.lane("interactive").max_concurrency == 4
    assert checked.policy.lane("bulk").max_concurrency == 4
    assert checked.policy.protection.enabled
    # With adaptive limits off, a hand cap is the operator's only tool: no warning.
    off = check_policy_text(UPSTREAMS + lanes + CLASSIFY + "slo: {adaptive_limits: false}\n", "x")
    assert off.warnings == () and not off.policy.protection.enabled


def test_preemptible_lane_in_front_of_llamacpp_serving_messages_is_a_warning() -> None:
    lanes = (
        "lanes:\n  - {name: interactive, priority: 100}\n"
        "  - {name: batch, priority: 10, preemptible: true}\n"
        "  - {name: bulk, priority: 5}\n"
    )
    llama = UPSTREAMS.replace("max_concurrency: 4}", "max_concurrency: 4, kind: llamacpp}")
    checked = check_policy_text(llama + lanes + CLASSIFY, "ops.yaml")
    assert [(w.line, w.field) for w in checked.warnings] == [(6, "lanes[1].preemptible")]
    assert "llama.cpp's server (mini) does not reliably stop" in checked.warnings[0].message
    assert "not Anthropic Messages ones (/v1/messages)" in checked.warnings[0].message
    # Chat/completions requests are streamed upstream and stop when cut: without the Messages
    # API nothing stays uncut, so no warning.
    no_messages = llama.replace("kind: llamacpp}", "kind: llamacpp, apis: [openai, rerank]}")
    assert check_policy_text(no_messages + lanes + CLASSIFY, "ops.yaml").warnings == ()
    assert checked.policy.lane("batch").preemptible and not checked.policy.lane("bulk").preemptible
    ollama = check_policy_text(UPSTREAMS + lanes + CLASSIFY, "ops.yaml")  # stops on a close
    assert ollama.warnings == ()


def test_preemptible_on_the_top_priority_lane_is_a_warning() -> None:
    # A hostile (or mistaken) policy: nothing outranks the chats' lane, so the flag does nothing.
    lanes = (
        "lanes:\n  - {name: interactive, priority: 100, preemptible: true}\n"
        "  - {name: batch, priority: 10, preemptible: true}\n"
    )
    checked = check_policy_text(UPSTREAMS + lanes + CLASSIFY, "ops.yaml")
    assert [(w.line, w.field) for w in checked.warnings] == [(5, "lanes[0].preemptible")]
    assert "never preempted" in checked.warnings[0].message


@pytest.mark.parametrize(
    ("slo", "field"),
    [
        ("{interactive_ttft_ratio: 1}", "slo.interactive_ttft_ratio"),
        ("{chat_idle: 0}", "slo.chat_idle"),
        ("{baseline_ttft: -0.1}", "slo.baseline_ttft"),
        ("{adaptive_limits: maybe}", "slo.adaptive_limits"),
    ],
)
def test_broken_slo_protection_fields_name_line_and_field(slo: str, field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(BASE + f"slo: {slo}\n", "ops.yaml")
    assert str(caught.value.problems[0]).startswith(f"ops.yaml:9: {field}: ")


def test_long_queue_timeout_and_starved_lane_are_warnings() -> None:
    text = (
        UPSTREAMS
        + (
            "lanes:\n  - {name: interactive, priority: 100, max_concurrency: 4, reserved: 4,"
            " queue_timeout: 900}\n"
            "  - {name: batch, priority: 10, max_concurrency: 1}\n"
        )
        + CLASSIFY
    )
    messages = {w.field: w.message for w in check_policy_text(text, "ops.yaml").warnings}
    assert "600 s the openai SDK waits" in messages["lanes[0].queue_timeout"]
    assert "it can never run" in messages["lanes[1].reserved"]


# -- defaults ---------------------------------------------------------------------------------


def test_upstreams_only_policy_gets_one_default_lane() -> None:
    policy = load_policy_text(UPSTREAMS, "ops.yaml")
    (lane,) = policy.lanes
    assert (lane.name, lane.priority, lane.max_concurrency) == ("default", 0, 4)  # local slots
    assert lane.max_queue >= 500 and lane.queue_timeout_s < 600
    assert policy.default_lane == "default"
    assert (policy.clients, policy.rules, policy.anonymous_lanes) == ((), (), ())
    assert classify(policy, _view(), None) == Decision("default", None, "default")


def test_default_lane_without_a_local_pool_uses_the_first_upstreams_pool() -> None:
    text = (
        "upstreams:\n  - {name: a, pool: studio, base_url: 'http://x:1', max_concurrency: 6}\n"
        "  - {name: b, pool: studio, base_url: 'http://y:1', max_concurrency: 2}\n"
        "  - {name: c, pool: far, base_url: 'http://z:1', max_concurrency: 9}\n"
    )
    assert load_policy_text(text, "ops.yaml").lanes[0].max_concurrency == 8


def test_single_lane_is_the_default_and_client_lanes_default_to_all() -> None:
    text = UPSTREAMS + (
        "lanes:\n  - {name: only, priority: 1, max_concurrency: 2}\n"
        f"clients:\n  - {{name: a, key: '{SHA}'}}\n"
        "classify:\n  rules:\n    - {lane: only, match: {stream: true}}\n"
        "    - name: named\n      lane: only\n      match:\n        headers: {X-App: 'cron*'}\n"
    )
    policy = load_policy_text(text, "ops.yaml")
    assert policy.default_lane == "only"
    assert policy.clients[0].lanes == ("only",)
    assert [rule.name for rule in policy.rules] == ["rules[0]", "named"]
    assert policy.rules[1].match.headers == (("x-app", "cron*"),)


def test_lane_fields_reach_the_spec() -> None:
    text = UPSTREAMS + (
        "lanes:\n  - name: hb\n    priority: 50\n    max_concurrency: 1\n    max_queue: 0\n"
        "    queue_timeout: 2.5\n    default_max_tokens: 64\n    tokens_per_minute: 100\n"
        "    tokens_per_hour: 1000\n    model_map: {'llama3.3:*': 'llama3.1:8b', '*': 'tiny'}\n"
        "    allowed_models: ['llama3.1:*', tiny]\n    offloadable: true\n"
    )
    lane = load_policy_text(text, "ops.yaml").lane("hb")
    assert lane.max_queue == 0 and lane.queue_timeout_s == 2.5 and lane.default_max_tokens == 64
    assert lane.budget.limits() == (("minute", 60.0, 100), ("hour", 3600.0, 1000))
    assert lane.model_map == (("llama3.3:*", "llama3.1:8b"), ("*", "tiny"))
    assert rewrite_model(lane, "llama3.3:70b") == "llama3.1:8b"
    assert model_allowed(lane, rewrite_model(lane, "qwen"))
    assert lane.offloadable
    with pytest.raises(dataclasses.FrozenInstanceError):
        lane.priority = 1  # type: ignore[misc]


def test_schema_names_every_section() -> None:
    schema = policy_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {
        "version",
        "upstreams",
        "lanes",
        "clients",
        "classify",
        "admin_key",
        "models",
        "offload",
        "slo",
    }
    lane = schema["$defs"]["LaneModel"]["properties"]
    assert {"reserved", "queue_timeout", "tokens_per_day", "model_map", "offloadable"} <= set(lane)
    assert all("description" in field for field in lane.values())


# -- the shipped policies --------------------------------------------------------------------------


def _view(**changes: Any) -> RequestView:
    return view(**{"prompt_chars": 1200, "user_agent": "python-httpx/0.27", **changes})


SAMPLES = [
    ({"stream": True}, "interactive", "streaming-chat"),
    ({"path": "/api/chat", "stream": True}, "interactive", "streaming-chat"),
    ({"path": "/v1/embeddings", "model": "nomic-embed-text"}, "batch", "embeddings"),
    ({"path": "/api/embed"}, "batch", "embeddings"),
    ({"max_tokens": 4096}, "batch", "long-non-streaming"),
    ({"max_tokens": 256}, "interactive", None),
]


@pytest.mark.parametrize(("changes", "lane", "rule"), SAMPLES)
@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_shipped_policies_classify_samples(
    name: str, changes: dict[str, Any], lane: str, rule: str | None
) -> None:
    policy = load_policy(REPO / "policies" / name)
    client = "alice-laptop" if policy.clients else None
    decision = classify(policy, _view(client=client, **changes), None)
    assert isinstance(decision, Decision)
    assert (decision.lane, decision.rule) == (lane, rule)


def test_default_policy_clients() -> None:
    policy = load_policy(REPO / "policies" / "default.yaml")
    heartbeat = classify(policy, _view(client="agent-runner", prompt_chars=40), None)
    assert heartbeat == Decision("heartbeat", "agent-heartbeat", "rule")
    assert rewrite_model(policy.lane(heartbeat.lane), "llama3.3:70b") == "llama3.2:3b"
    # CI may only use batch: the streaming-chat rule is skipped, its default lane applies.
    ci = classify(policy, _view(client="ci", stream=True), None)
    assert ci == Decision("batch", None, "client_default")
    refused = classify(policy, _view(client="ci"), "interactive")
    assert not isinstance(refused, Decision) and refused.code == "lane_not_allowed"
    assert policy.admin_key_ref == "env:LANEGATE_ADMIN_KEY"
    agents = next(c for c in policy.clients if c.name == "agent-runner")
    assert key_matches("k-123", agents.key_ref, {"LANEGATE_KEY_AGENTS": "k-123"})


def test_demo_policy_lanes_and_x_lane_for_everybody() -> None:
    policy = load_policy(REPO / "policies" / "demo.yaml")
    lanes = {lane.name: lane for lane in policy.lanes}
    assert (lanes["interactive"].priority, lanes["interactive"].reserved) == (100, 0)
    # Intent, not caps: batch's bound is every slot it can reach (4 local + 8 remote), and
    # the adaptive limits (on by default) keep chats fast.
    assert (lanes["batch"].priority, lanes["batch"].max_concurrency) == (10, 12)
    assert policy.protection.enabled and policy.protection.ttft_ratio == 1.3
    assert lanes["batch"].offloadable
    assert lanes["heartbeat"].priority == 50
    assert rewrite_model(lanes["heartbeat"], "llama3.1:8b") == "llama3.2:3b"
    assert policy.clients == ()
    for lane in lanes:
        assert classify(policy, _view(), lane) == Decision(lane, None, "x_lane")
    agent = _view(user_agent="my-agent/0.3", prompt_chars=30, stream=True)
    assert classify(policy, agent, None) == Decision("heartbeat", "agent-heartbeat", "rule")


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_shipped_policies_have_no_warnings(name: str) -> None:
    path = REPO / "policies" / name
    checked = check_policy_text(path.read_text(), name)
    assert checked.warnings == ()
    assert isinstance(checked.policy, Policy)


# -- docs/policy.md ------------------------------------------------------------------------------


def test_docs_document_every_field() -> None:
    docs = (REPO / "docs" / "policy.md").read_text()
    schema = policy_schema()
    models = [schema, *schema["$defs"].values()]
    fields = {name for model in models for name in model.get("properties", {})}
    missing = sorted(name for name in fields if f"`{name}" not in docs)
    assert not missing, f"docs/policy.md does not document: {missing}"


def test_docs_compact_example_is_a_valid_policy() -> None:
    docs = (REPO / "docs" / "policy.md").read_text()
    section = docs[docs.index("## A compact example") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start : section.index("\n```", start)]
    checked = check_policy_text(example, "docs/policy.md")
    assert checked.warnings == ()
    assert [lane.name for lane in checked.policy.lanes] == ["interactive", "batch", "heartbeat"]
