"""Parsing `--mix interactive=2,batch=8,heartbeat=1/s` and `--rungs 1,2,4,8`. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LaneShare:
    lane: str
    concurrency: int = 0  # closed loop: requests in flight
    rate_per_s: float = 0.0  # open loop: requests started per second


def parse_rungs(text: str) -> tuple[int, ...]:
    try:
        rungs = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--rungs takes concurrencies like 1,2,4,8, got {text!r}") from None
    if not rungs or any(r < 1 for r in rungs):
        raise ValueError(f"--rungs needs concurrencies of at least 1, got {text!r}")
    if list(rungs) != sorted(set(rungs)):
        raise ValueError(f"--rungs must climb: each rung above the one before, got {text!r}")
    return rungs


def parse_mix(text: str) -> tuple[LaneShare, ...]:
    """`lane=N` keeps N requests in flight; `lane=R/s` starts R requests a second."""
    shares = []
    for part in (p.strip() for p in text.split(",")):
        lane, sep, value = part.partition("=")
        if not sep or not lane.strip() or not value.strip():
            raise ValueError(f"--mix entries look like lane=4 or lane=1/s, got {part!r}")
        shares.append(_share(lane.strip(), value.strip()))
    names = [share.lane for share in shares]
    if len(set(names)) != len(names):
        raise ValueError(f"--mix names a lane twice: {text!r}")
    if not any(share.concurrency for share in shares):
        raise ValueError(f"--mix needs at least one closed-loop lane (lane=N): {text!r}")
    return tuple(shares)


def _share(lane: str, value: str) -> LaneShare:
    try:
        if value.endswith("/s"):
            rate = float(value[:-2])
            if rate <= 0:
                raise ValueError
            return LaneShare(lane, rate_per_s=rate)
        count = int(value)
        if count < 1:
            raise ValueError
        return LaneShare(lane, concurrency=count)
    except ValueError:
        raise ValueError(
            f"--mix {lane}={value}: want a whole number of requests in flight (4) or a "
            "rate (1/s, 0.5/s)"
        ) from None


def parse_assignments(items: list[str], flag: str) -> dict[str, str]:
    """`--lane-key interactive=sk-1` repeated → {lane: value}."""
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} takes LANE=VALUE, got {item!r}")
        found[name] = value
    return found
