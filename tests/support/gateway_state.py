"""What a test can observe of a running gateway's lanes and budgets from the outside.

`assert_lanes_idle` proves that no slot leaked: it opens as many held streams in each lane as
the lane allows and checks that every one was admitted at once (`x-lanegate-queue-ms: 0.0`)
— a leaked slot would make the last one queue or be refused. `stuck_reservations` proves that
no budget reservation is stuck: a graceful restart drops reservations and keeps settled spend,
so comparing `x-ratelimit-remaining-tokens` across it leaves only what was reserved and never
settled.

With the admin key, `assert_lanes_idle` first reads `/admin/status`: every lane at zero in
flight and zero queued, and no budget window holding a reservation. The end-to-end probes
then prove the slots are usable, not only counted free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.processes import Service


@dataclass(frozen=True)
class LaneProbe:
    """A request that holds a slot in `lane` for a few seconds (a long stream)."""

    lane: str
    slots: int  # the lane's max_concurrency (must fit the pool's capacity)
    path: str = "/v1/chat/completions"
    body: dict[str, Any] = field(
        default_factory=lambda: {
            "model": "m",
            "stream": True,
            "max_tokens": 400,
            "messages": [{"role": "user", "content": "hold a slot"}],
        }
    )


async def _held_queue_ms(url: str, probe: LaneProbe, wait_s: float) -> list[str]:
    """Open `probe.slots` streams at once, wait for all their headers, then drop them."""
    headers = {"x-lane": probe.lane}
    limits = httpx.Limits(max_connections=probe.slots + 1)
    async with httpx.AsyncClient(base_url=url, timeout=wait_s, limits=limits) as http:
        requests = [
            http.build_request("POST", probe.path, json=probe.body, headers=headers)
            for _ in range(probe.slots)
        ]
        responses = await asyncio.gather(*(http.send(r, stream=True) for r in requests))
        try:
            return [
                r.headers.get("x-lanegate-queue-ms", f"status {r.status_code}") for r in responses
            ]
        finally:
            await asyncio.gather(*(r.aclose() for r in responses))


def assert_lanes_idle(
    service: Service, probes: list[LaneProbe], admin_key: str | None = None, timeout: float = 30
) -> None:
    """Every lane can take its full concurrency again, at once: no slot leaked, none queued."""
    if admin_key is not None:
        status = httpx.get(
            f"{service.url}/admin/status",
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=10,
        ).json()
        for lane in status["lanes"]:
            assert (lane["in_flight"], lane["queued"]) == (0, 0), lane
            assert all(window["reserved"] == 0 for window in lane["budget"]), lane
    for probe in probes:
        queue_ms = asyncio.run(_held_queue_ms(service.url, probe, timeout))
        assert queue_ms == ["0.0"] * probe.slots, (probe.lane, queue_ms)


@dataclass(frozen=True)
class BudgetProbe:
    """A non-streamed request in a lane with a token budget; its usage is what it spent."""

    lane: str
    path: str = "/v1/chat/completions"
    body: dict[str, Any] = field(
        default_factory=lambda: {
            "model": "m",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "budget probe"}],
        }
    )

    def run(self, service: Service) -> tuple[int, int]:
        """(x-ratelimit-remaining-tokens while this probe was reserved, tokens it spent)."""
        response = httpx.post(
            service.url + self.path, json=self.body, headers={"x-lane": self.lane}, timeout=30
        )
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        spent = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
        return int(response.headers["x-ratelimit-remaining-tokens"]), spent


def stuck_reservations(
    service: Service, probe: BudgetProbe, restart: Callable[[Service], Service]
) -> tuple[int, Service]:
    """Tokens held by reservations that were never settled or released, and the restarted
    gateway. `restart` stops `service` gracefully (SIGTERM flushes settled spend) and starts
    it again on the same state directory.

    Before: remaining = L - used - stuck - e (e: the probe's own estimate). The probe spends
    s; after the restart (reservations gone): remaining' = L - used - s - e.
    So stuck = s - (remaining - remaining'). The budget must be far from exhausted.
    """
    remaining, spent = probe.run(service)
    restarted = restart(service)
    remaining_after, _ = probe.run(restarted)
    return spent - (remaining - remaining_after), restarted
