"""Comparable runs: the facts two reports must share, and `ladder history`'s table."""

from __future__ import annotations

import copy
from typing import Any

from gateway.tools.ladder.provenance import history_table, mismatches


def report(started: str = "2026-12-01T09:00:00+00:00", p95: float = 110.0) -> dict[str, Any]:
    return {
        "started_at": started,
        "note": "mac mini, shelf",
        "tool": {"version": "0.1.0", "git_revision": "abc123"},
        "target": {"model": "llama3:8b", "digest": "d" * 64, "server_version": "0.12.6"},
        "host": {"os_build": "24F74", "machine_sku": "Mac16,10"},
        "contract": {"prompt_set_sha256": "p" * 64, "max_tokens": 32, "stream": True},
        "rungs": [
            {"concurrency": 1, "ttft_ms": {"p95": p95}},
            {"concurrency": 2, "ttft_ms": {"p95": 2 * p95}},
        ],
    }


def test_identical_facts_compare_cleanly() -> None:
    assert mismatches(report(), report(p95=200.0)) == []


def test_each_differing_fact_is_named_with_both_values() -> None:
    b = copy.deepcopy(report())
    b["tool"]["version"] = "0.2.0"
    b["host"]["os_build"] = "25A354"
    b["target"]["digest"] = "e" * 64
    found = mismatches(report(), b)
    assert found == [
        "lanegate version: 0.1.0 → 0.2.0",
        "OS build: 24F74 → 25A354",
        "model digest: dddddddddddd… → eeeeeeeeeeee…",
    ]


def test_unknown_digests_are_not_proof_of_the_same_model_and_old_reports_read() -> None:
    a, b = report(), report()
    a["target"]["digest"] = b["target"]["digest"] = "unknown"
    assert mismatches(a, b) == ["model digest: unknown → unknown"]
    old = {"rungs": []}  # a schema-1 report without these facts
    assert "OS build: 24F74 → unknown" in mismatches(report(), old)


def test_history_is_one_line_per_run_oldest_first() -> None:
    later = report("2026-12-03T09:00:00+00:00", p95=150.0)
    later["rungs"].append({"concurrency": 4, "ttft_ms": {"p95": 400.0}})
    table = history_table([later, report()]).splitlines()
    assert table[0].startswith("| started | model |") and table[0].endswith("p95 @4 |")
    assert table[2].startswith("| 2026-12-01") and table[2].endswith("| 110 | 220 | – |")
    assert table[3].startswith("| 2026-12-03") and table[3].endswith("| 150 | 300 | 400 |")
