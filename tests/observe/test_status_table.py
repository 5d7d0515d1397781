"""`lanegate status`'s tables, rendered from a sample `/admin/status` document (pure)."""

from __future__ import annotations

from typing import Any

from gateway.observe.status_table import render_status

SAMPLE: dict[str, Any] = {
    "generated_at": 1000.0,
    "version": "0.1.0",
    "policy": {"version": 3, "source": "p.yaml", "loaded_at": 940.0, "reload_error": "x:4: bad"},
    "capacity": 8,
    "in_flight": 3,
    "totals": {
        "in_flight": 5,
        "queued": 1,
        "local": {"in_flight": 3, "capacity": 8},
        "remote": {"in_flight": 2, "capacity": 4},
    },
    "lanes": [
        {
            "name": "interactive",
            "in_flight": 2,
            "max_concurrency": 4,
            "queued": 1,
            "max_queue": 50,
            "requests": {"1m": 41, "5m": 100, "15m": 200},
            "ttft": {
                "1m": {"count": 41, "p50_ms": 120.4, "p95_ms": 340.0, "p99_ms": 1250.0},
                "5m": {"count": 100, "p50_ms": 8.25, "p95_ms": 99.6, "p99_ms": 900.0},
                "15m": {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None},
            },
            "gap_p95": {"1m": {"p95_ms": 12.0}, "5m": {"p95_ms": 11.0}, "15m": {}},
            "queue_wait": {"1m": {"p95_ms": 2500.0}},
            "duration": {"1m": {"p95_ms": 4100.0}},
            "budget": [{"window": "minute", "limit": 5000, "used": 1200, "reserved": 300}],
        },
        {"name": "batch", "in_flight": 1, "max_concurrency": 2, "queued": 0, "max_queue": 9},
    ],
    "upstreams": [
        {
            "name": "mini",
            "pool": "local",
            "healthy": True,
            "in_flight": 3,
            "max_concurrency": 4,
            "resident": ["llama3.1:8b", "qwen3:4b"],
            "breaker": {"state": "closed"},
            "ttft": {"1m": {"p95_ms": 350.0}},
        },
        {
            "name": "m4",
            "pool": "remote",
            "healthy": False,
            "in_flight": 0,
            "max_concurrency": 8,
            "resident": [],
            "breaker": {"state": "open", "reason": "5 consecutive failures", "retry_in_s": 7.5},
        },
    ],
    "host": {
        "source": "macos",
        "pressure": "warn",
        "swap_used_bytes": 3 * 1024**3,
        "swap_total_bytes": 4 * 1024**3,
        "memory_total_bytes": 16 * 1024**3,
        "memory_available_bytes": 512 * 1024**2,
        "swap_trend_bytes_per_s": 1024**2 / 60,
        "error": None,
    },
    "offload": {"configured": True, "state": "offloading", "mode": "auto", "reason": "swap +2GB"},
}


def _row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(first + " "))
    return line.split("  ")


def test_table_renders_the_sample_document() -> None:
    text = render_status(SAMPLE)
    lines = text.splitlines()
    assert lines[0] == (
        "lanegate 0.1.0: 5 requests in flight (3 of 8 local slots, 2 of 4 remote), 1 queued; "
        "policy v3 (p.yaml, loaded 60 s ago)"
    )
    assert lines[1] == "last reload refused: x:4: bad"
    assert lines[2] == "offload: offloading (mode auto): swap +2GB"
    assert "host (macos): pressure warn, swap 3.0 GiB of 4.0 GiB (+1.0 MiB/min)" in text
    assert "memory available 512.0 MiB of 16.0 GiB" in text
    cells = [cell.strip() for cell in _row(text, "interactive") if cell.strip()]
    assert cells == [
        "interactive",
        "2/4",
        "1/50",
        "41",
        "2.50 s",
        "120 ms",
        "340 ms",
        "12 ms",
        "4.10 s",
        "1500/5000 per minute",
    ]
    batch = [cell.strip() for cell in _row(text, "batch") if cell.strip()]
    assert batch == ["batch", "1/2", "0/9", "-", "-", "-", "-", "-", "-", "no budget"]
    assert "interactive  5m      100  8.2 ms    100 ms    900 ms    11 ms" in text
    assert "interactive  15m     0    -         -         -         -" in text
    mini = [cell.strip() for cell in _row(text, "mini") if cell.strip()]
    assert mini == ["mini", "local", "ok", "3/4", "350 ms", "llama3.1:8b, qwen3:4b", "closed"]
    m4 = [cell.strip() for cell in _row(text, "m4") if cell.strip()]
    assert m4[2] == "DOWN"
    assert m4[-1] == "open (5 consecutive failures, retry in 7.5 s)"
    assert "1.25 s" in text  # p99 over a second


def test_table_columns_line_up() -> None:
    lines = render_status(SAMPLE).splitlines()
    header = next(line for line in lines if line.startswith("LANE "))
    row = next(line for line in lines if line.startswith("interactive "))
    assert row.index("2/4") == header.index("IN FLIGHT")
    assert row.index("340 ms") == header.index("TTFT p95")


def test_table_survives_a_sparse_document() -> None:
    text = render_status({"lanes": [], "upstreams": [], "host": None})
    assert "no lanes" in text
    assert "host: no signals" in text
    assert "offload: not configured" in text


def test_header_of_an_older_document_and_an_access_change() -> None:
    older = {k: v for k, v in SAMPLE.items() if k != "totals"}
    assert render_status(older).splitlines()[0].startswith("lanegate 0.1.0: 3/8 in flight;")
    changed = {
        **SAMPLE,
        "policy": {
            **SAMPLE["policy"],
            "access_change": {"version": 3, "at": 990.0, "changes": ["anonymous callers: a -> b"]},
        },
    }
    lines = render_status(changed).splitlines()
    assert lines[2:4] == ["reload to v3 changed who may call:", "  anonymous callers: a -> b"]
