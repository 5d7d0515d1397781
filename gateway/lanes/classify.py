"""Which lane a request belongs to. Pure: a function of the policy and of what the request says.

The order, first answer wins:
  1. an `X-Lane` header naming a lane the caller may use (another lane is refused, not ignored:
     a client that asks for a lane should learn it cannot have it);
  2. the first rule that matches, skipping rules whose lane the caller may not use;
  3. the client's own `default_lane`;
  4. the policy's `default_lane`.

This module must stay standard-library only and cheap: it runs on every request. Rule globs
and regexes are compiled when the policy is built (`Match.__post_init__`); lane model globs go
through `fnmatchcase`, which caches its compiled patterns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from gateway.errors import BadRequest, Forbidden, GatewayError
from gateway.policy.spec import ClientSpec, LaneSpec, Match, Policy
from gateway.serving.request_body import RequestFacts

Reason = Literal["x_lane", "rule", "client_default", "default"]

# A prompt given as token ids counts this many characters per token (about right for English).
CHARS_PER_TOKEN_ID = 4
# Only this much of a User-Agent is searched, so an unlucky regex stays cheap on a long header.
USER_AGENT_SEARCH_LIMIT = 512
_MAX_DEPTH = 4  # content parts nest at most ~3 deep; odd shapes deeper are not prompt text


@dataclass(frozen=True, slots=True)
class RequestView:
    """What classification may look at; built by the shell from the request."""

    path: str
    client: str | None  # the named client the key belongs to; None: anonymous
    model: str | None
    stream: bool
    max_tokens: int | None
    prompt_chars: int
    headers: Mapping[str, str]  # lower-case names
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    lane: str
    rule: str | None  # the rule's name when a rule decided
    reason: Reason


@dataclass(frozen=True, slots=True)
class LaneRefusal:
    """An X-Lane header the caller may not use: 403 lane_not_allowed or 400 unknown_lane."""

    code: Literal["lane_not_allowed", "unknown_lane"]
    lane: str
    message: str

    def error(self) -> GatewayError:
        if self.code == "unknown_lane":
            return BadRequest(self.message, code=self.code)
        return Forbidden(self.message, code=self.code)


def request_view(
    path: str,
    facts: RequestFacts,
    client: str | None,
    headers: Mapping[str, str],
    *,
    count_prompt: bool = True,
) -> RequestView:
    """The view of a parsed request; `headers` must have lower-case names. Without
    `count_prompt` (no rule or budget reads it: `Policy.counts_prompt`) prompt_chars is 0."""
    counted = count_prompt and facts.body is not None
    return RequestView(
        path=path,
        client=client,
        model=facts.model,
        stream=facts.stream,
        max_tokens=facts.max_tokens,
        prompt_chars=prompt_chars(facts.body) if counted and facts.body is not None else 0,
        headers=headers,
        user_agent=headers.get("user-agent", ""),
    )


def classify(
    policy: Policy, view: RequestView, requested_lane: str | None
) -> Decision | LaneRefusal:
    """The lane for this request, or a refusal when X-Lane names a lane the caller may not use."""
    client = _client(policy, view.client)
    if requested_lane is not None and requested_lane.strip():
        return _requested(policy, view, client, requested_lane.strip().lower())
    allowed = client.lanes if client is not None else None
    for rule in policy.rules:
        if allowed is not None and rule.lane not in allowed:
            continue
        if matches(rule.match, view):
            return Decision(rule.lane, rule.name, "rule")
    if client is not None and client.default_lane is not None:
        return Decision(client.default_lane, None, "client_default")
    return Decision(policy.default_lane, None, "default")


def matches(match: Match, view: RequestView) -> bool:
    """True when every matcher the rule sets holds for this request."""
    if match.clients is not None and view.client not in match.clients:
        return False
    if match.path_re is not None and not match.path_re.match(view.path):
        return False
    if match.model_re is not None and (view.model is None or not match.model_re.match(view.model)):
        return False
    if match.stream is not None and view.stream is not match.stream:
        return False
    if not _within(view.max_tokens, match.max_tokens_min, match.max_tokens_max):
        return False
    if not _within(view.prompt_chars, match.prompt_chars_min, match.prompt_chars_max):
        return False
    for name, pattern in match.header_res:
        value = view.headers.get(name)
        if value is None or not pattern.match(value):
            return False
    return match.user_agent_re is None or bool(
        match.user_agent_re.search(view.user_agent[:USER_AGENT_SEARCH_LIMIT])
    )


def rewrite_model(lane: LaneSpec, model: str | None) -> str | None:
    """The model to run: the target of the lane's first matching `model_map` glob, else as asked."""
    if model is None:
        return None
    for glob, target in lane.model_map:
        if fnmatchcase(model, glob):
            return target
    return model


def model_allowed(lane: LaneSpec, model: str | None) -> bool:
    """May this lane run `model` (the model after `rewrite_model`)? No model: nothing to check."""
    if lane.allowed_models is None or model is None:
        return True
    return any(fnmatchcase(model, glob) for glob in lane.allowed_models)


def prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of prompt text in an OpenAI, Anthropic or Ollama request body; never raises.

    Counts chat `messages` (string content or text parts), completions `prompt` (string, list
    of strings, or token ids at CHARS_PER_TOKEN_ID each), responses `input` and `instructions`,
    embeddings `input`, Ollama `messages`, `prompt` and `system`, Anthropic `messages` (text
    and tool_result blocks) and `system`, and rerank `query` and `documents`. Images count
    nothing.
    """
    if not isinstance(body, Mapping):
        return 0
    fields = ("messages", "prompt", "system", "input", "instructions", "query", "documents")
    return sum(_text_size(body.get(name), 0) for name in fields)


def _text_size(value: object, depth: int) -> int:
    if isinstance(value, str):
        return len(value)
    if depth >= _MAX_DEPTH:
        return 0
    if isinstance(value, list):
        return sum(_item_size(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return _part_size(value, depth + 1)
    return 0


def _item_size(item: object, depth: int) -> int:
    if isinstance(item, int) and not isinstance(item, bool):
        return CHARS_PER_TOKEN_ID
    return _text_size(item, depth)


def _part_size(part: Mapping[Any, Any], depth: int) -> int:
    """A message (`content`) or a content part (`text`); other keys are not prompt text."""
    text = part.get("text")
    size = len(text) if isinstance(text, str) else 0
    return size + _text_size(part.get("content"), depth)


def _requested(
    policy: Policy, view: RequestView, client: ClientSpec | None, lane: str
) -> Decision | LaneRefusal:
    if client is not None:
        allowed = client.lanes
    elif view.client is None:
        allowed = policy.anonymous_lanes
    else:
        allowed = ()  # a name the policy does not know: trust it with nothing
    if lane in allowed:
        return Decision(lane, None, "x_lane")
    known = tuple(spec.name for spec in policy.lanes)
    usable = ", ".join(allowed) or "none"
    if lane not in known:
        message = f"X-Lane: {lane!r} is not a lane of this gateway; lanes you may use: {usable}"
        return LaneRefusal("unknown_lane", lane, message)
    who = f"client {client.name!r}" if client is not None else "a caller without a client key"
    message = f"X-Lane: {who} may not use lane {lane!r}; lanes it may use: {usable}"
    return LaneRefusal("lane_not_allowed", lane, message)


def _client(policy: Policy, name: str | None) -> ClientSpec | None:
    if name is None:
        return None
    for client in policy.clients:
        if client.name == name:
            return client
    return None


def _within(value: int | None, low: int | None, high: int | None) -> bool:
    if low is None and high is None:
        return True
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)
