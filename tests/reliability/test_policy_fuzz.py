"""Random mutations of the shipped policies: each gives a valid policy or a precise error
(file, line, field, message), never a crash and never a half-built policy.

The loader builds the frozen `Policy` only after the whole document validated, so a refused
file yields no policy at all; a running gateway keeps the one it has (reload swaps the whole
`Runtime` or nothing); the last test checks that end to end, on a running gateway.
"""

from __future__ import annotations

import copy
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.loader import PolicyError, check_policy_text
from gateway.policy.spec import Policy
from tests.support.processes import REPO, Service, start_gateway

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


def _metric(service: Service, name: str) -> float:
    for line in httpx.get(f"{service.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_live_reloads_of_mutated_policies_swap_whole_or_not_at_all(
    output_dir: Path, tmp_path: Path
) -> None:
    """The running half: each mutated file, reloaded through the admin call, is either
    swapped in whole (200, the version goes up) or refused with the same precise errors as
    the loader's while the old policy keeps serving; the original is then put back (SIGHUP)."""
    original = (REPO / "policies" / "demo.yaml").read_text()
    path = tmp_path / "policy.yaml"
    path.write_text(original)
    admin = {"authorization": "Bearer fuzz-admin"}
    env = {"LANEGATE_ADMIN_KEY": "fuzz-admin"}
    gateway = start_gateway("gw-policy-fuzz", path, output_dir, env=env)
    outcomes = {"valid": 0, "refused": 0}

    @settings(
        max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(text=mutated(original))
    def check(text: str) -> None:
        version = _metric(gateway, "lanegate_policy_version")
        path.write_text(text)
        answer = httpx.post(f"{gateway.url}/admin/reload", headers=admin, timeout=10)
        try:
            check_policy_text(text, str(path))
        except PolicyError:
            outcomes["refused"] += 1
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_policy"
            assert f"{path}:" in answer.json()["error"]["message"]
            assert _metric(gateway, "lanegate_policy_version") == version
            assert _metric(gateway, "lanegate_config_last_reload_successful") == 0
            assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
            return
        outcomes["valid"] += 1
        assert answer.status_code == 200, answer.text
        assert answer.json()["policy_version"] == version + 1
        path.write_text(original)  # back to the original (the new one may have no admin key)
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _metric(gateway, "lanegate_policy_version") < version + 2:
            assert time.monotonic() < deadline, "the restoring SIGHUP reload never landed"
            time.sleep(0.05)

    try:
        check()
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0
    print("live reloads:", outcomes)
    assert outcomes["refused"] > 0 and outcomes["valid"] > 0, outcomes
