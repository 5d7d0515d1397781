"""Bounds a policy must fit before anything walks it (issue 18: "billion laughs")."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.loader import PolicyError, check_policy_text
from gateway.policy.yaml_bounds import (
    MAX_POLICY_BYTES,
    MAX_POLICY_NODES,
    TooLarge,
    check_expanded_size,
    check_text_size,
)


def _expanded(node: yaml.Node) -> int:
    """Brute force: walk every alias as written out."""
    if isinstance(node, yaml.MappingNode):
        return 1 + sum(_expanded(k) + _expanded(v) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode):
        return 1 + sum(_expanded(child) for child in node.value)
    return 1


def _nested(levels: int, width: int) -> str:
    lines = ["l0: &l0 [x]"]
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@given(st.integers(1, 5), st.integers(1, 4))
def test_small_documents_pass_and_the_count_matches_brute_force(levels: int, width: int) -> None:
    root = yaml.compose(_nested(levels, width), Loader=yaml.SafeLoader)
    assert _expanded(root) < MAX_POLICY_NODES
    check_expanded_size(root)  # no error


@pytest.mark.parametrize(("levels", "width"), [(6, 9), (9, 9), (40, 2)])
def test_expansions_past_the_bound_are_refused_with_a_line(levels: int, width: int) -> None:
    root = yaml.compose(_nested(levels, width), Loader=yaml.SafeLoader)
    with pytest.raises(TooLarge) as caught:
        check_expanded_size(root)
    assert "alias" in str(caught.value) and caught.value.line is not None


def test_a_node_that_contains_itself_is_refused() -> None:
    root = yaml.compose("a: &a [1, *a]\n", Loader=yaml.SafeLoader)
    with pytest.raises(TooLarge, match="contains it"):
        check_expanded_size(root)


def test_the_walk_itself_does_not_recurse() -> None:
    text = "[" * 150 + "]" * 150  # as deep as PyYAML's own composer goes comfortably
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    check_expanded_size(root)


def test_a_policy_nested_past_the_yaml_parsers_depth_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="nests too deeply"):
        check_policy_text("version: 1\nx: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")


def test_text_size() -> None:
    check_text_size("x" * MAX_POLICY_BYTES)
    with pytest.raises(TooLarge, match="MiB"):
        check_text_size("x" * (MAX_POLICY_BYTES + 1))
