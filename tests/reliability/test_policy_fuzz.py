"""Random mutations of the shipped policies: each gives a valid policy or a precise error
(file, line, field, message), never a crash and never a half-built policy.

The loader builds the frozen `Policy` only after the whole document validated, so a refused
file yields no policy at all; a running gateway keeps the one it has (reload swaps the whole
`Runtime` or nothing). Integrator: once reload is merged, add the end-to-end half — a
mutated file on SIGHUP either bumps the policy version or leaves it and reports the error.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.loader import PolicyError, check_policy_text
from gateway.policy.spec import Policy
from tests.support.processes import REPO

pytestmark = pytest.mark.fuzz

SHIPPED = sorted((REPO / "policies").glob("*.yaml"))
Path_ = tuple[str | int, ...]

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["*", "env:", "sha256:00", "http://", "-1", "1e999", "interactive", "local"]),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=8,
)


def _paths(node: Any, path: Path_ = ()) -> list[Path_]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _parent(root: Any, path: Path_) -> Any:
    for step in path[:-1]:
        root = root[step]
    return root


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent, key = _parent(data, path), path[-1]
        operation = draw(st.sampled_from(["delete", "replace", "add", "duplicate", "retype"]))
        if operation == "delete":
            del parent[key]
        elif operation == "replace":
            parent[key] = draw(VALUES)
        elif operation == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
        elif operation == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif operation == "retype":
            value = parent[key]
            parent[key] = [value] if not isinstance(value, list) else {"x": value}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_shipped_policies_are_valid(shipped: Path) -> None:
    assert isinstance(check_policy_text(shipped.read_text(), shipped.name).policy, Policy)


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_mutated_policy_is_valid_or_precisely_refused(shipped: Path) -> None:
    outcomes = {"valid": 0, "refused": 0}

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(text=mutated(shipped.read_text()))
    def check(text: str) -> None:
        try:
            checked = check_policy_text(text, "mutated.yaml")
        except PolicyError as error:
            outcomes["refused"] += 1
            assert error.problems
            for problem in error.problems:
                assert problem.file == "mutated.yaml" and problem.message
                assert problem.line is not None or problem.field, problem
            return
        outcomes["valid"] += 1
        assert isinstance(checked.policy, Policy)
        assert checked.policy.upstreams and checked.policy.lanes
        assert all(warning.warning for warning in checked.warnings)

    check()
    assert outcomes["refused"] > 0 and outcomes["valid"] > 0, outcomes
