"""What every request to an upstream carries: its own key (never a client's), and for a
`kind: anthropic` upstream the key and API version the way Anthropic's API reads them."""

from __future__ import annotations

import pytest

from gateway.policy.spec import Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.client import ANTHROPIC_VERSION, default_headers


def spec(kind: UpstreamKind, key_ref: str | None) -> UpstreamSpec:
    return UpstreamSpec("u", "local", kind, "http://127.0.0.1:1", 1, Timeouts(), key_ref)


def test_anthropic_upstream_gets_x_api_key_and_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_UPSTREAM_KEY", "sk-upstream")
    headers = default_headers(spec(UpstreamKind.ANTHROPIC, "env:LG_UPSTREAM_KEY"))
    assert headers["x-api-key"] == "sk-upstream"
    assert headers["authorization"] == "Bearer sk-upstream"
    assert headers["anthropic-version"] == ANTHROPIC_VERSION


def test_other_kinds_get_neither(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_UPSTREAM_KEY", "sk-upstream")
    headers = default_headers(spec(UpstreamKind.LLAMACPP, "env:LG_UPSTREAM_KEY"))
    assert "x-api-key" not in headers and "anthropic-version" not in headers
    assert "x-api-key" not in default_headers(spec(UpstreamKind.ANTHROPIC, None))
