"""Classification: every matcher, rule order, defaults, X-Lane, model rewrites, prompt size."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest, Forbidden
from gateway.lanes.classify import (
    CHARS_PER_TOKEN_ID,
    Decision,
    LaneRefusal,
    RequestView,
    classify,
    matches,
    model_allowed,
    prompt_chars,
    request_view,
    rewrite_model,
)
from gateway.policy.spec import ClientSpec, LaneSpec, Match, Policy, Rule
from gateway.serving.request_body import RequestFacts

LANES = (
    LaneSpec("interactive", priority=100, max_concurrency=4, reserved=1),
    LaneSpec("batch", priority=10, max_concurrency=3, offloadable=True),
    LaneSpec("heartbeat", priority=50, max_concurrency=1, model_map=(("*", "llama3.2:3b"),)),
)
CLIENTS = (
    ClientSpec("alice", "env:ALICE", ("interactive", "batch"), default_lane="interactive"),
    ClientSpec("agents", "env:AGENTS", ("interactive", "batch", "heartbeat")),
    ClientSpec("ci", "env:CI", ("batch",), default_lane="batch"),
)


def policy(*rules: Rule, **changes: Any) -> Policy:
    fields: dict[str, Any] = {
        "source": "test",
        "upstreams": (),
        "lanes": LANES,
        "clients": CLIENTS,
        "rules": rules,
        "default_lane": "interactive",
    }
    return Policy(**{**fields, **changes})


def view(**changes: Any) -> RequestView:
    fields: dict[str, Any] = {
        "path": "/v1/chat/completions",
        "client": None,
        "model": "llama3.1:8b",
        "stream": False,
        "max_tokens": None,
        "prompt_chars": 100,
        "headers": {},
        "user_agent": "",
    }
    return RequestView(**{**fields, **changes})


# -- every matcher ----------------------------------------------------------------------------

MATCHERS = [
    (Match(clients=("agents",)), {"client": "agents"}, {"client": "alice"}),
    (Match(clients=("agents", "ci")), {"client": "ci"}, {"client": None}),
    (Match(paths=("/v1/embeddings",)), {"path": "/v1/embeddings"}, {"path": "/v1/embeddingsx"}),
    (Match(paths=("/api/*",)), {"path": "/api/embed"}, {"path": "/v1/api/embed"}),
    (Match(models=("llama3.3:70b*",)), {"model": "llama3.3:70b-q4"}, {"model": "llama3.1:8b"}),
    (Match(models=("qwen*", "phi?")), {"model": "phi4"}, {"model": None}),
    (Match(models=("Llama*",)), {"model": "Llama3"}, {"model": "llama3"}),  # case-sensitive
    (Match(stream=True), {"stream": True}, {"stream": False}),
    (Match(stream=False), {"stream": False}, {"stream": True}),
    (Match(max_tokens_min=2048), {"max_tokens": 2048}, {"max_tokens": 2047}),
    (Match(max_tokens_min=2048), {"max_tokens": 10**6}, {"max_tokens": None}),
    (Match(max_tokens_max=64), {"max_tokens": 64}, {"max_tokens": 65}),
    (Match(max_tokens_min=10, max_tokens_max=20), {"max_tokens": 15}, {"max_tokens": 9}),
    (Match(prompt_chars_max=400), {"prompt_chars": 400}, {"prompt_chars": 401}),
    (Match(prompt_chars_min=1000), {"prompt_chars": 5000}, {"prompt_chars": 999}),
    (Match(headers=(("x-app", "cron*"),)), {"headers": {"x-app": "cron-7"}}, {"headers": {}}),
    (
        Match(headers=(("x-app", "cron*"),)),
        {"headers": {"x-app": "cronjob"}},
        {"headers": {"x-app": "not-cron"}},
    ),
    (
        Match(headers=(("x-a", "1"), ("x-b", "2"))),
        {"headers": {"x-a": "1", "x-b": "2"}},
        {"headers": {"x-a": "1"}},
    ),
    (Match(user_agent=r"(?i)agent"), {"user_agent": "My-Agent/2"}, {"user_agent": "curl/8"}),
    (Match(user_agent=r"^openai/"), {"user_agent": "openai/1.40"}, {"user_agent": "x openai/1"}),
    (
        Match(stream=True, paths=("/api/chat",)),
        {"stream": True, "path": "/api/chat"},
        {"stream": True, "path": "/v1/completions"},
    ),
]


@pytest.mark.parametrize(("match", "hit", "miss"), MATCHERS)
def test_each_matcher_matches_and_misses(
    match: Match, hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    assert matches(match, view(**hit))
    assert not matches(match, view(**miss))


def test_empty_match_matches_everything() -> None:
    assert matches(Match(), view())


def test_user_agent_search_is_bounded() -> None:
    match = Match(user_agent="needle")
    assert not matches(match, view(user_agent="x" * 600 + "needle"))
    assert matches(match, view(user_agent="x" * 100 + "needle"))


def test_globs_and_regexes_are_compiled_once_with_the_match() -> None:
    match = Match(paths=("/v1/*",), models=("a*",), headers=(("x-a", "b"),), user_agent="ua")
    assert match.path_re is not None and match.path_re.match("/v1/chat")
    assert match.model_re is not None and match.header_res[0][0] == "x-a"
    assert match.user_agent_re is not None
    assert match == Match(
        paths=("/v1/*",), models=("a*",), headers=(("x-a", "b"),), user_agent="ua"
    )
    assert dataclasses.replace(match, paths=None).path_re is None


# -- order and defaults -------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    rules = (
        Rule("batch", Match(paths=("/v1/embeddings",)), "embeddings"),
        Rule("heartbeat", Match(prompt_chars_max=10), "tiny"),
        Rule("interactive", Match(), "everything"),
    )
    result = classify(policy(*rules), view(path="/v1/embeddings", prompt_chars=1), None)
    assert result == Decision("batch", "embeddings", "rule")
    assert classify(policy(*rules), view(prompt_chars=1), None) == Decision(
        "heartbeat", "tiny", "rule"
    )
    assert classify(policy(*rules), view(), None).rule == "everything"


def test_rules_whose_lane_the_client_may_not_use_are_skipped() -> None:
    rules = (Rule("heartbeat", Match(), "hb"), Rule("batch", Match(), "b"))
    assert classify(policy(*rules), view(client="agents"), None).lane == "heartbeat"
    assert classify(policy(*rules), view(client="alice"), None) == Decision("batch", "b", "rule")


def test_client_default_lane_then_policy_default() -> None:
    assert classify(policy(), view(client="ci"), None) == Decision("batch", None, "client_default")
    assert classify(policy(), view(client="agents"), None) == Decision(
        "interactive", None, "default"
    )
    assert classify(policy(), view(), None) == Decision("interactive", None, "default")


def test_client_default_applies_only_when_no_rule_matches() -> None:
    rules = (Rule("batch", Match(stream=False), "non-streaming"),)
    assert classify(policy(*rules), view(client="alice"), None).lane == "batch"
    assert classify(policy(*rules), view(client="alice", stream=True), None).reason == (
        "client_default"
    )


# -- X-Lane -----------------------------------------------------------------------------------


def test_x_lane_is_honoured_for_a_lane_the_client_may_use() -> None:
    rules = (Rule("batch", Match(), "all"),)
    assert classify(policy(*rules), view(client="alice"), "interactive") == Decision(
        "interactive", None, "x_lane"
    )
    assert classify(policy(), view(client="alice"), "  Batch ").lane == "batch"


def test_x_lane_for_a_forbidden_lane_is_refused_with_403() -> None:
    result = classify(policy(), view(client="ci"), "interactive")
    assert isinstance(result, LaneRefusal)
    assert result.code == "lane_not_allowed"
    assert "'ci'" in result.message and "batch" in result.message
    error = result.error()
    assert isinstance(error, Forbidden)
    assert (error.status, error.code) == (403, "lane_not_allowed")


def test_x_lane_naming_no_lane_is_400_unknown_lane() -> None:
    result = classify(policy(), view(client="alice"), "turbo")
    assert isinstance(result, LaneRefusal)
    assert result.code == "unknown_lane"
    error = result.error()
    assert isinstance(error, BadRequest)
    assert (error.status, error.code) == (400, "unknown_lane")
    assert "interactive, batch" in error.message


def test_x_lane_for_anonymous_callers_follows_anonymous_lanes() -> None:
    open_policy = policy(clients=(), anonymous_lanes=("interactive", "batch", "heartbeat"))
    assert classify(open_policy, view(), "heartbeat") == Decision("heartbeat", None, "x_lane")
    closed = classify(policy(clients=()), view(), "batch")
    assert isinstance(closed, LaneRefusal) and closed.code == "lane_not_allowed"
    assert "without a client key" in closed.message


def test_x_lane_from_a_client_the_policy_does_not_know_is_refused() -> None:
    result = classify(policy(anonymous_lanes=("batch",)), view(client="mallory"), "batch")
    assert isinstance(result, LaneRefusal) and result.code == "lane_not_allowed"


def test_empty_x_lane_is_ignored() -> None:
    assert classify(policy(), view(), "  ").reason == "default"


# -- model rewrites ------------------------------------------------------------------------------


def test_model_map_first_glob_wins() -> None:
    lane = LaneSpec(
        "hb",
        priority=1,
        max_concurrency=1,
        model_map=(("llama3.3:*", "llama3.1:8b"), ("*", "llama3.2:3b")),
    )
    assert rewrite_model(lane, "llama3.3:70b") == "llama3.1:8b"
    assert rewrite_model(lane, "qwen2.5:32b") == "llama3.2:3b"
    assert rewrite_model(lane, None) is None


def test_no_model_map_keeps_the_model() -> None:
    assert rewrite_model(LANES[0], "llama3.3:70b") == "llama3.3:70b"


def test_allowed_models() -> None:
    lane = LaneSpec("b", priority=1, max_concurrency=1, allowed_models=("llama3.*", "qwen2.5:7b"))
    assert model_allowed(lane, "llama3.1:8b")
    assert model_allowed(lane, "qwen2.5:7b")
    assert not model_allowed(lane, "qwen2.5:72b")
    assert model_allowed(lane, None)  # GET /v1/models: no model to check
    assert model_allowed(LANES[0], "anything")


# -- prompt size ----------------------------------------------------------------------------------

PROMPTS = [
    ({"messages": [{"role": "user", "content": "hello"}]}, 5),
    (
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "abc"}, {"type": "image_url"}],
                },
                {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]},
            ]
        },
        11,
    ),
    ({"prompt": "once upon"}, 9),
    ({"prompt": ["ab", "cd"]}, 4),
    ({"prompt": [1, 2, 3]}, 3 * CHARS_PER_TOKEN_ID),
    ({"prompt": [[1, 2], [3]]}, 3 * CHARS_PER_TOKEN_ID),
    ({"input": "responses api", "instructions": "be kind"}, 20),
    (
        {
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "four"}]},
                {"type": "input_text", "text": "xy"},
            ]
        },
        6,
    ),
    ({"input": ["embed me", "and me"]}, 14),
    ({"model": "m", "prompt": "p", "system": "sys"}, 4),  # Ollama generate
    ({"messages": [{"role": "user", "content": "hi", "images": ["aGVsbG8="]}]}, 2),  # Ollama chat
    ({}, 0),
    ({"messages": "not a list"}, 10),
    ({"messages": [None, 3.5, True, {"content": {"text": "deep"}}]}, 4),  # bools are no tokens
    ({"messages": {"content": "odd"}}, 3),
    ({"prompt": None, "input": 42, "system": {"x": 1}}, 0),
    (  # Anthropic Messages: system blocks, text, a tool call (its input is no prompt text)
        {
            "system": [{"type": "text", "text": "terse"}],
            "messages": [
                {"role": "user", "content": "find x"},
                {"role": "assistant", "content": [{"type": "tool_use", "input": {"q": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "content": "3 hits"}]},
            ],
        },
        5 + 6 + 6,
    ),
    ({"query": "what", "documents": ["ab", {"text": "cde"}]}, 9),  # rerank
]


@pytest.mark.parametrize(("body", "expected"), PROMPTS)
def test_prompt_chars(body: dict[str, Any], expected: int) -> None:
    assert prompt_chars(body) == expected


def test_prompt_chars_stops_at_absurd_nesting() -> None:
    deep: Any = "x" * 10
    for _ in range(5000):
        deep = [deep]
    assert prompt_chars({"prompt": deep}) == 0
    assert prompt_chars("not a mapping") == 0  # type: ignore[arg-type]


def test_request_view_from_parsed_facts() -> None:
    facts = RequestFacts(
        model="m", stream=True, max_tokens=9, body={"messages": [{"content": "abcd"}]}
    )
    headers = {"user-agent": "agent/1", "x-lane": "batch"}
    built = request_view("/v1/chat/completions", facts, "alice", headers)
    assert built == RequestView(
        "/v1/chat/completions", "alice", "m", True, 9, 4, headers, "agent/1"
    )
    bodiless = request_view("/v1/models", RequestFacts(None, False, None, None), None, {})
    assert (bodiless.prompt_chars, bodiless.user_agent) == (0, "")


# -- properties ------------------------------------------------------------------------------------

names = st.sampled_from(["alice", "agents", "ci", "mallory"]) | st.none()
views = st.builds(
    RequestView,
    path=st.text(max_size=40),
    client=names,
    model=st.text(max_size=20) | st.none(),
    stream=st.booleans(),
    max_tokens=st.integers(min_value=-(2**40), max_value=2**40) | st.none(),
    prompt_chars=st.integers(min_value=0, max_value=10**9),
    headers=st.dictionaries(st.sampled_from(["x-app", "user-agent", "x-lane"]), st.text()),
    user_agent=st.text(max_size=700),
)
RULES = (
    Rule("heartbeat", Match(clients=("agents",), prompt_chars_max=400), "hb"),
    Rule("batch", Match(paths=("/v1/embeddings", "/api/embed")), "embeddings"),
    Rule("batch", Match(stream=False, max_tokens_min=2048), "long"),
    Rule("heartbeat", Match(user_agent="(?i)cron", headers=(("x-app", "cron*"),)), "cron"),
    Rule("interactive", Match(stream=True, models=("llama*",)), "chat"),
)


@settings(max_examples=500, deadline=None)
@given(request=views, requested=st.text(max_size=12) | st.none() | st.sampled_from(["batch"]))
def test_classify_never_raises_and_stays_within_allowed_lanes(
    request: RequestView, requested: str | None
) -> None:
    anonymous = policy(*RULES, anonymous_lanes=("interactive",))
    result = classify(anonymous, request, requested)
    lanes = {lane.name for lane in LANES}
    if isinstance(result, LaneRefusal):
        assert requested is not None
        assert result.code in ("lane_not_allowed", "unknown_lane")
        assert result.error().status in (400, 403)
        return
    assert result.lane in lanes
    client = next((c for c in CLIENTS if c.name == request.client), None)
    if client is not None:
        assert result.lane in client.lanes
    if requested is None:
        assert result.reason != "x_lane"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_prompt_chars_never_raises(body: Any) -> None:
    wrapped = {"messages": body, "prompt": body, "input": body, "system": body}
    assert prompt_chars(wrapped) >= 0
