"""The isolation benches' figures: the chats after a moment, a counter from /metrics, the share
of batch's tokens thrown away, a response's token count, the dashboard's view of a status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.bench import figures, remote, report

# What prometheus_client writes for a labelled counter: HELP/TYPE without `_total`, then the
# samples and their `_created` twins.
EXPOSITION = """# HELP lanegate_preempted_tokens Tokens thrown away by preemption (estimated)
# TYPE lanegate_preempted_tokens counter
lanegate_preempted_tokens_total{lane="batch"} 120.0
lanegate_preempted_tokens_created{lane="batch"} 1.7e+09
lanegate_preempted_tokens_total{lane="bulk"} 7.0
# HELP lanegate_preemptions Requests cancelled upstream for a chat
# TYPE lanegate_preemptions counter
lanegate_preemptions_total{lane="batch",upstream="a"} 3.0
lanegate_preemptions_total{lane="batch",upstream="b"} 2.0
lanegate_preemptions_total{lane="batchy",upstream="a"} 50.0
# TYPE lanegate_quiet counter
"""


def test_started_after_keeps_the_values_whose_request_began_at_or_after_the_moment() -> None:
    values, started = [1.0, 2.0, 3.0, 4.0], [10.0, 14.9, 15.0, 20.0]
    assert figures.started_after(values, started, 15.0) == [3.0, 4.0]
    assert figures.started_after(values, started, 0.0) == values
    assert figures.started_after(values, started, 21.0) == []
    with pytest.raises(ValueError, match="3 values but 4 start times"):
        figures.started_after(values[:3], started, 0.0)


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100))), st.floats(0, 100))
def test_started_after_never_keeps_an_earlier_request(
    pairs: list[tuple[float, float]], since: float
) -> None:
    values = [value for value, _ in pairs]
    started = [began for _, began in pairs]
    kept = figures.started_after(values, started, since)
    assert len(kept) == sum(began >= since for began in started)


def test_metric_total_sums_the_matching_samples_only() -> None:
    assert figures.metric_total(EXPOSITION, "lanegate_preemptions_total", {"lane": "batch"}) == 5
    assert figures.metric_total(EXPOSITION, "lanegate_preemptions_total", {}) == 55
    tokens = figures.metric_total(EXPOSITION, "lanegate_preempted_tokens_total", {"lane": "batch"})
    assert tokens == 120  # not the `_created` timestamp, not another lane


def test_metric_total_tells_none_yet_from_unknown() -> None:
    declared = figures.metric_total(EXPOSITION, "lanegate_quiet_total", {"lane": "batch"})
    assert declared == 0  # the family exists, nothing counted yet
    assert figures.metric_total(EXPOSITION, "lanegate_other_total", {}) is None
    assert figures.metric_total("", "lanegate_preemptions_total", {"lane": "batch"}) is None


def test_thrown_share() -> None:
    assert figures.thrown_share(50, 1000) == 0.05
    assert figures.thrown_share(0.0, 10) == 0
    assert figures.thrown_share(None, 1000) is None  # the gateway does not count them
    assert figures.thrown_share(5, 0) is None  # batch generated nothing: no share


def test_completion_tokens_reads_usage_or_nothing() -> None:
    answer = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 256}}
    assert figures.completion_tokens(json.dumps(answer).encode()) == 256
    assert figures.completion_tokens(b'{"usage": {"completion_tokens": true}}') is None
    assert figures.completion_tokens(b'{"choices": []}') is None
    assert figures.completion_tokens(b"[1, 2]") is None
    assert figures.completion_tokens(b"upstream said no") is None


def _status(ttft_p95: float | None) -> dict[str, object]:
    def windows(p50: float | None, p95: float | None, count: int) -> dict[str, object]:
        return {"1m": {"count": count, "p50_ms": p50, "p95_ms": p95, "p99_ms": p95}}

    def lane(name: str, limit: int | None, remote: int) -> dict[str, object]:
        return {
            "name": name,
            "adaptive_limit": limit,
            "remote_in_flight": remote,
            "ttft": windows(40.0, ttft_p95, 30),
            "queue_wait": windows(0.0, 12.5, 30),
        }

    return {
        "lanes": [lane("interactive", None, 0), lane("batch", 1, 8), lane("heartbeat", 2, 0)],
        "offload": {"configured": True, "state": "local", "mode": "auto", "reason": "ok"},
        "adaptive": {
            "upstreams": [
                {
                    "upstream": "mini",
                    "baseline_ttft_ms": 47.5,
                    "engine_floor_ratio": 2.5,
                    "effective_target_ratio": 2.75,
                    "reason": "floor",
                    "lanes": [],
                }
            ]
        },
    }


def test_dashboard_view_reads_what_the_dashboard_draws() -> None:
    view = figures.dashboard_view(_status(88.0))
    assert (view["ttft_p95_ms"], view["ttft_count"], view["queue_wait_p95_ms"]) == (88.0, 30, 12.5)
    assert view["adaptive_limits"] == {"interactive": None, "batch": 1, "heartbeat": 2}
    assert view["remote_in_flight"]["batch"] == 8
    assert view["offload"]["state"] == "local"
    lines = report.s9_lines(
        {
            "baseline_ttft_p95_ms": 44.0,
            "client": {
                "interactive_samples": 40,
                "interactive_ttft_p50_ms": 45.0,
                "interactive_ttft_p95_ms": 99.0,
                "interactive_p95_ratio": 2.25,
                "settled_samples": 36,
                "settled_ttft_p95_ms": 80.0,
                "settled_p95_ratio": 80 / 44,
                "batch_per_s": 1.5,
            },
            "dashboard": view,
            "dashboard_ttft_p95_ratio": 2.0,
            "early_offloads": 12,
            "limit_changes": 3,
            "preemption": {"preemptions": 2.0, "thrown_share": 0.04},
        }
    )
    assert any("preemptions 2 (4.0% of batch's tokens thrown away)" in line for line in lines)
    assert any("| 40 ms / 88 ms | ×2.00 | 12 ms |" in line for line in lines)
    assert view["chat_targets"]["mini"]["effective_target_ratio"] == 2.75
    assert "Chats held to ×2.75 of a learned baseline of 48 ms on mini" in lines[-1]


def test_s7_criteria_pass_fail_and_not_measured() -> None:
    assert remote.criteria({"settled_p95_ratio": 1.9, "batch_share_of_direct": 1.2}) == {
        "chat_p95_within_2x_from_5s": True,
        "batch_at_least_direct": True,
    }
    assert remote.criteria({"settled_p95_ratio": 2.1, "batch_share_of_direct": 0.99}) == {
        "chat_p95_within_2x_from_5s": False,
        "batch_at_least_direct": False,
    }
    missing = remote.criteria({"settled_p95_ratio": None})
    assert set(missing.values()) == {None}


def test_goal_rows_say_not_measured_rather_than_vanish() -> None:
    def scenarios(share: float | None) -> dict[str, Any]:
        return {"S6": {"arms": {"lanegate_preempt": {"thrown_share": share}}}}

    row = "| S6 | arms.lanegate_preempt.thrown_share | {} | <= 0.1 | {} |"
    assert row.format("not measured", "—") in report.goal_rows(scenarios(None))
    assert row.format("0.250", "NO") in report.goal_rows(scenarios(0.25))
    assert row.format("0.050", "yes") in report.goal_rows(scenarios(0.05))
    assert not any("S7" in line for line in report.goal_rows(scenarios(0.05)))  # S7 did not run
