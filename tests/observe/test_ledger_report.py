"""The report's pure arithmetic: durations, percentiles, per-group summaries, the table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.observe import ledger_report
from gateway.observe.ledger_report import (
    COLUMNS,
    GROUPABLE,
    LedgerRow,
    parse_by,
    parse_duration,
    percentile,
    render_summaries,
    render_table,
    render_unclassified,
    retention_cutoff,
    summarize,
    unclassified,
)


def row(
    lane: str = "interactive",
    upstream: str = "mini",
    status: int = 200,
    ttft_ms: float | None = 100.0,
    prompt: int | None = 10,
    completion: int | None = 20,
    *,
    client: str | None = "alice",
    model: str | None = "m",
    path: str = "/v1/chat/completions",
    error: str | None = None,
    queue_ms: float | None = 1.0,
    duration_ms: float = 500.0,
) -> LedgerRow:
    return (
        1000.0,
        "req",
        client,
        lane,
        model,
        upstream,
        path,
        status,
        error if error is not None or status < 400 else "some_code",
        queue_ms,
        ttft_ms,
        5.0,
        duration_ms,
        prompt,
        completion,
        None,
        0,
        0.0,
        0,
    )


def test_typed_positions_match_the_columns() -> None:
    assert COLUMNS[ledger_report._STATUS] == "status"
    assert COLUMNS[ledger_report._TTFT] == "ttft_ms"
    assert COLUMNS[ledger_report._PROMPT] == "prompt_tokens"
    assert COLUMNS[ledger_report._COMPLETION] == "completion_tokens"
    assert len(row()) == len(COLUMNS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("24h", 86400), ("7d", 604800), ("90s", 90), ("1.5h", 5400), ("2W", 1209600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0m", "1y", "1 day", "1h30m"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30m, 24h or 7d"):
        parse_duration(text)


def test_retention_cutoff() -> None:
    assert retention_cutoff(10 * 86400, 14) == -4 * 86400
    assert retention_cutoff(100 * 86400, 0.5) == 100 * 86400 - 43200


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 100))
def test_percentile_is_one_of_the_values_and_monotone(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert p is not None and p <= (percentile(ordered, min(100.0, q + 10)) or 0)


def test_summaries_group_count_errors_and_tokens() -> None:
    rows = [
        row(ttft_ms=float(t))
        for t in range(10, 110, 10)  # 10 ok interactive on mini, 10..100
    ] + [
        row(status=429, ttft_ms=None, prompt=None, completion=None, upstream="-"),
        row(status=499, ttft_ms=50.0, completion=3),
        row(lane="batch", upstream="m4", status=502, ttft_ms=None, prompt=None, completion=None),
        row(lane="batch", upstream="m4", ttft_ms=None),  # non-streamed: no TTFT
    ]
    by_lane = {s.name: s for s in summarize(rows, "lane")}
    assert list(by_lane) == ["batch", "interactive"]
    interactive = by_lane["interactive"]
    assert (interactive.count, interactive.client_errors, interactive.server_errors) == (12, 2, 0)
    assert interactive.error_rate == pytest.approx(2 / 12)
    # TTFTs 10..100 and 50: eleven values, nearest rank
    assert (interactive.ttft_p50_ms, interactive.ttft_p95_ms) == (50, 100)
    assert interactive.prompt_tokens == 10 * 10 + 10  # the 429 had none, the 499 had 10
    assert interactive.completion_tokens == 10 * 20 + 3
    batch = by_lane["batch"]
    assert (batch.count, batch.server_errors, batch.error_rate) == (2, 1, 0.5)
    assert batch.ttft_p50_ms is None and batch.prompt_tokens == 10
    by_upstream = {s.name: s.count for s in summarize(rows, "upstream")}
    assert by_upstream == {"-": 1, "m4": 2, "mini": 11}


def test_a_missing_group_value_is_shown_as_a_dash() -> None:
    no_client = (*row()[:2], None, *row()[3:])
    assert [s.name for s in summarize([no_client], "client")] == ["-"]


def test_no_rows_no_summaries() -> None:
    assert summarize([], "lane") == []


def test_table_aligns_columns() -> None:
    text = render_table(("lane", "requests"), [["interactive", "12"], ["batch", "2"]])
    assert text.splitlines() == [
        "lane         requests",
        "-----------  --------",
        "interactive        12",
        "batch               2",
    ]


def test_rendered_summary_shows_each_figure() -> None:
    rows = [row(ttft_ms=120.0), row(status=503, ttft_ms=None)]
    lines = render_summaries("lane", summarize(rows, "lane")).splitlines()
    assert lines[0].split()[:6] == ["lane", "(ms)", "requests", "4xx", "5xx", "error"]
    assert lines[2].split() == [
        "interactive",
        "2",
        "0",
        "1",
        "50.0",
        "1",  # queue p50, p95
        "1",
        "120",  # ttft p50, p95, p99
        "120",
        "120",
        "500",  # duration p50, p95
        "500",
        "20",
        "40",
    ]
    assert lines[-3:] == [
        "lane         errors: status code  count",
        "-----------  -------------------  -----",
        "interactive  503 some_code            1",
    ]


def test_queue_duration_percentiles_and_errors_by_code() -> None:
    rows = [row(queue_ms=float(q), duration_ms=1000.0 + q, ttft_ms=None) for q in range(1, 21)] + [
        row(status=429, error="queue_full", queue_ms=None, upstream="-", ttft_ms=None),
        row(status=429, error="queue_full", queue_ms=None, upstream="-", ttft_ms=None),
        row(status=502, error="ConnectError", queue_ms=3.0, duration_ms=40.0, ttft_ms=None),
    ]
    (lane,) = summarize(rows, "lane")
    # Queue wait over the 21 admitted requests (1..20 and 3), nearest rank.
    assert (lane.queue_p50_ms, lane.queue_p95_ms) == (10.0, 19.0)
    # Duration over the 21 that reached an upstream: the two 429s never did.
    assert lane.duration_p50_ms == 1010.0 and lane.duration_p95_ms == 1019.0
    assert lane.ttft_p50_ms is None  # none streamed: no TTFT, but a duration
    assert lane.errors == (("429 queue_full", 2), ("502 ConnectError", 1))


def test_group_by_several_columns() -> None:
    rows = [
        row(client="alice", model="llama3.1:8b"),
        row(client="alice", model="qwen2.5:7b"),
        row(client="bob", model="llama3.1:8b"),
        row(client="bob", model="llama3.1:8b", lane="batch"),
    ]
    keys = {s.key: s.count for s in summarize(rows, ("client", "model"))}
    assert keys == {
        ("alice", "llama3.1:8b"): 1,
        ("alice", "qwen2.5:7b"): 1,
        ("bob", "llama3.1:8b"): 2,
    }
    assert [s.name for s in summarize(rows, ("lane", "client"))] == [
        "batch / bob",
        "interactive / alice",
        "interactive / bob",
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "-"]),
            st.sampled_from(["u1", "-"]),
            st.sampled_from([None, "c1", "c2"]),
            st.sampled_from([200, 401, 429, 502]),
        ),
        max_size=40,
    ),
    st.permutations(list(GROUPABLE)).map(lambda names: tuple(names[:2])),
)
def test_groups_add_up_to_the_rows(
    specs: list[tuple[str, str, str | None, int]], by: tuple[str, ...]
) -> None:
    rows = [
        row(lane=lane, upstream=upstream, client=client, status=status)
        for lane, upstream, client, status in specs
    ]
    summaries = summarize(rows, by)
    assert sum(s.count for s in summaries) == len(rows)
    assert sum(n for s in summaries for _, n in s.errors) == sum(r[7] >= 400 for r in rows)
    assert len({s.key for s in summaries}) == len(summaries)


@pytest.mark.parametrize(
    ("given_by", "expected"),
    [
        (["lane"], ("lane",)),
        (["lane,client"], ("lane", "client")),
        (["model", "upstream"], ("model", "upstream")),
    ],
)
def test_parse_by(given_by: list[str], expected: tuple[str, ...]) -> None:
    assert parse_by(given_by) == expected


@pytest.mark.parametrize("given_by", [["path"], ["lane,lane"], [""]])
def test_parse_by_refuses_what_it_cannot_group(given_by: list[str]) -> None:
    with pytest.raises(ValueError, match=r"lane, upstream, client, model|twice"):
        parse_by(given_by)


def test_rows_without_a_lane_are_explained() -> None:
    rows = [
        row(lane="-", upstream="mini", path="/v1/models", ttft_ms=None),
        row(lane="-", upstream="mini", path="/v1/models", ttft_ms=None),
        row(lane="-", upstream="-", status=401, error="invalid_api_key"),
        row(lane="-", upstream="-", status=400, error="invalid_json"),
        row(lane="-", upstream="-", status=400, error="something_new"),
        row(),  # a classified row: not part of it
    ]
    found = unclassified(rows)
    assert found.count == 5
    assert found.metadata == (("/v1/models", 2),)
    labels = {label: meaning for label, _, meaning in found.refused}
    assert "no API key" in labels["401 invalid_api_key"]
    assert "JSON" in labels["400 invalid_json"]
    assert labels["400 something_new"] == "refused before a lane"
    text = render_unclassified(found)
    assert text.splitlines()[0] == "5 rows have no lane (lane -):"
    assert "metadata call" in text and "refused before a lane was chosen" in text
    assert render_unclassified(unclassified([row()])) == ""
