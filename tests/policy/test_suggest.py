"""Near names and prunable fields: what lets `policy check` say everything at once."""

from __future__ import annotations

import pytest

from gateway.policy.document import PolicyDocument
from gateway.policy.suggest import did_you_mean, field_names, without


@pytest.mark.parametrize(
    ("name", "known", "hint"),
    [
        ("max_queu", ["max_queue", "max_concurrency"], "; did you mean 'max_queue'?"),
        ("interactiv", ["interactive", "batch"], "; did you mean 'interactive'?"),
        ("zzz", ["interactive", "batch"], ""),  # nothing close: no guess
        ("x", [], ""),
    ],
)
def test_did_you_mean(name: str, known: list[str], hint: str) -> None:
    assert did_you_mean(name, known) == hint


def test_field_names_follow_the_models() -> None:
    assert "max_queue" in field_names(PolicyDocument, ("lanes", 3, "max_queu"))
    assert "base_url" in field_names(PolicyDocument, ("upstreams", 0, "base_ur"))
    assert "default_lane" in field_names(PolicyDocument, ("classify", "default_lan"))
    assert "upstreams" in field_names(PolicyDocument, ("upstream",))
    assert field_names(PolicyDocument, ("nowhere", 0, "x")) == ()


def test_without_removes_one_field_and_keeps_positions() -> None:
    data = {"lanes": [{"name": "a", "max_queu": 1}, {"name": "b"}]}
    assert without(data, ("lanes", 0, "max_queu")) == {"lanes": [{"name": "a"}, {"name": "b"}]}
    assert data["lanes"][0] == {"name": "a", "max_queu": 1}  # a copy: the input is untouched
    assert without(data, ("lanes", 0)) is None  # a list item: positions would shift
    assert without(data, ("lanes", 5, "name")) is None
    assert without(data, ("lanes", 0, "absent")) is None
