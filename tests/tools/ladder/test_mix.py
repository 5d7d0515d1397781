"""`--mix`, `--rungs` and `--lane-key` parsing (pure)."""

from __future__ import annotations

import pytest

from gateway.tools.ladder.mix import LaneShare, parse_assignments, parse_mix, parse_rungs


def test_parse_mix() -> None:
    assert parse_mix("interactive=2,batch=8,heartbeat=1/s") == (
        LaneShare("interactive", concurrency=2),
        LaneShare("batch", concurrency=8),
        LaneShare("heartbeat", rate_per_s=1.0),
    )
    for bad in ("interactive", "a=0", "a=x", "a=1,a=2", "hb=1/s", "a=-1/s"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_parse_rungs_and_assignments() -> None:
    assert parse_rungs("1,2,4,8") == (1, 2, 4, 8)
    for bad in ("", "0,1", "4,2", "1,1", "a"):
        with pytest.raises(ValueError):
            parse_rungs(bad)
    assert parse_assignments(["batch=sk-1"], "--lane-key") == {"batch": "sk-1"}
    with pytest.raises(ValueError):
        parse_assignments(["batch"], "--lane-key")
