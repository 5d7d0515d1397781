"""Shared state of several gateways in one Redis: the connection, its health, concurrency leases.

Owns: the redis asyncio client and its connection pool; a health check (PING every second) that
marks Redis up or down, logs once per outage (not per request) and, on reconnect, re-counts
this gateway's leases and wakes its gates; the per-lane and per-client leases (acquire with one
Lua script, renew all of this gateway's leases in one call every TTL/3, release with a
"freed" message); one pub/sub subscription per gateway that wakes local waiters when a slot
frees on any gateway; the writes that follow a request (lease release, budget settle), sent
together in one pipeline per event-loop turn. Must not: decide admission order (the local
`LaneGate` and the pure `admission` do) or keep queues (they stay local to each gateway).

A lease is a member of a sorted set scored by its expiry (Redis time, ms). A gateway that dies
stops renewing, so its leases drop out of every count within the TTL. While Redis is down every
lease admitted under local limits is still remembered, and the first renewal after the
reconnect counts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.ops.periodic import Periodic
from gateway.policy.spec import ClientSpec, LaneSpec
from gateway.shared import scripts as redis_scripts
from gateway.shared.plan import Keys, LeaseOutcome, fails_open, lease_request, outcome_of
from gateway.shared.plan import unavailable as unavailable_error

log = logging.getLogger("lanegate.shared")

# What "Redis is unreachable" looks like from the client: refused, reset, timed out, loading.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
)
HEALTH_INTERVAL_S = 1.0
SOCKET_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 64


class FreedListener(Protocol):
    def on_shared_freed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Write:
    """One script call off the request path; `on_failure` runs if Redis could not take it."""

    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int]
    on_failure: Callable[[], None] | None = None


class SharedState:
    def __init__(
        self,
        url: str,
        *,
        lease_ttl_s: float = 10.0,
        prefix: str = "lanegate",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = Keys(prefix)
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.wall_clock = wall_clock
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # One immediate retry only: it replaces a pooled connection that a Redis restart broke,
        # and anything slower would hold requests up while Redis is away.
        self.client = Redis.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._acquire = self.client.register_script(redis_scripts.ACQUIRE)
        self._renew = self.client.register_script(redis_scripts.RENEW)
        self._release = self.client.register_script(redis_scripts.RELEASE)
        self.healthy = False  # until the first PING answers
        self.down_since: float | None = None
        self.outages = 0
        self.local_admissions = 0  # admitted under local limits because Redis was down
        self._held: dict[str, tuple[str, str | None]] = {}  # lease → (lane, capped client)
        self._ids = itertools.count(1)
        self._listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reconnect_hooks: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: list[Write] = []  # sent together at the end of this event-loop turn
        self._health = Periodic(self._check, HEALTH_INTERVAL_S)
        self._renewer = Periodic(self.renew, lease_ttl_s / 3)
        self._subscriber: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect if Redis answers; if not, start down (fail modes apply) and keep trying."""
        await self._check()
        if not self.healthy:
            log.warning("shared state: Redis is not reachable at start-up; will keep trying")
        self._health.start()
        self._renewer.start()
        self._subscriber = asyncio.create_task(self._subscribe())

    async def stop(self) -> None:
        await self._health.stop()
        await self._renewer.stop()
        if self._subscriber is not None:
            self._subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._subscriber
        if self._tasks:  # releases and settles already scheduled: give them a moment
            await asyncio.wait(self._tasks, timeout=2.0)
        await self.client.aclose()

    def status(self) -> dict[str, object]:
        """For status pages and metrics: `redis_ok` is False while limits are local only."""
        now = self.wall_clock()
        return {
            "redis_ok": self.healthy,
            "down_for_s": None if self.down_since is None else round(now - self.down_since, 1),
            "outages": self.outages,
            "local_admissions": self.local_admissions,
            "leases_held": len(self._held),
            "lease_ttl_s": self.lease_ttl_ms / 1000,
            "gateway_id": self.gateway_id,
        }

    def listen(self, listener: FreedListener) -> None:
        """Call `listener.on_shared_freed()` when a slot frees anywhere (held weakly)."""
        self._listeners.add(listener)

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._reconnect_hooks.append(hook)

    def write_soon(self, write: Write) -> None:
        """Queue a script call for the pipeline sent at the end of this event-loop turn: a
        request's release and settle (and those of requests ending together) cost one trip."""
        if not self._writes:
            asyncio.get_running_loop().call_soon(self._send_writes)
        self._writes.append(write)

    def _send_writes(self) -> None:
        writes, self._writes = self._writes, []
        self.spawn(self._pipeline(writes))

    async def _pipeline(self, writes: list[Write]) -> None:
        if not self.healthy:
            _failed(writes)
            return
        pipe = self.client.pipeline(transaction=False)
        for write in writes:  # by digest: the scripts were loaded by their first direct call
            pipe.evalsha(write.script.sha, len(write.keys), *write.keys, *write.args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except REDIS_DOWN as error:
            self.mark_down(error)
            _failed(writes)
            return
        unloaded = []
        for write, result in zip(writes, results, strict=True):
            if isinstance(result, NoScriptError):  # first use, or Redis restarted empty
                unloaded.append(write)
            elif isinstance(result, Exception):
                log.error("shared state: a %s script failed: %s", write.script.sha[:8], result)
        for index, write in enumerate(unloaded):
            try:
                await write.script(keys=write.keys, args=write.args)  # loads it, then runs it
            except REDIS_DOWN as error:
                self.mark_down(error)
                _failed(unloaded[index:])
                return

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run Redis work off the request path (releases, settles), kept until it finishes."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- health -----------------------------------------------------------------------------
    def mark_down(self, error: BaseException) -> None:
        if self.healthy or self.down_since is None:
            self.outages += 1
            self.down_since = self.wall_clock()
            log.warning(
                "shared state: Redis unreachable (%s: %s); lanes with on_redis_down: open now "
                "run under this gateway's local limits, closed ones answer 503 until it is back",
                type(error).__name__,
                error,
            )
        self.healthy = False

    async def _mark_up(self) -> None:
        if self.healthy:
            return
        if self.down_since is not None:
            log.warning(
                "shared state: Redis reachable again after %.1f s; limits are shared again",
                self.wall_clock() - self.down_since,
            )
        self.healthy, self.down_since = True, None
        await self.renew()
        for hook in self._reconnect_hooks:
            await hook()
        self._wake()

    async def _check(self) -> None:
        try:
            await asyncio.wait_for(self.client.ping(), SOCKET_TIMEOUT_S)
        except REDIS_DOWN as error:
            self.mark_down(error)
            return
        await self._mark_up()

    # -- leases -----------------------------------------------------------------------------
    def new_lease(self) -> str:
        return f"{self.gateway_id}:{next(self._ids)}"

    async def take(
        self,
        lease: str,
        lane: LaneSpec,
        client: ClientSpec | None,
        lanes: Mapping[str, LaneSpec],
        capacity: int,
    ) -> LeaseOutcome:
        """Try to hold one slot of `lane` (and `client`) across all gateways.

        Raises the 503 `shared_state_unavailable` for a fail-closed lane while Redis is down.
        """
        if not self.healthy:
            return self._without_redis(lease, lane, client)
        keys, args = lease_request(self.keys, lane, client, lanes, capacity)
        try:
            head: list[str | int] = [lease, self.lease_ttl_ms, len(lanes)]
            reply = await self._acquire(keys=keys, args=[*head, *args])
        except REDIS_DOWN as error:
            self.mark_down(error)
            return self._without_redis(lease, lane, client)
        outcome = outcome_of(int(reply))
        if outcome is LeaseOutcome.WON:
            self._held[lease] = (lane.name, _capped(client))
        return outcome

    def give_back(self, lease: str, lane: LaneSpec, client: ClientSpec | None) -> None:
        """Release a lease (idempotent); waiters on every gateway hear of the freed slot."""
        self._held.pop(lease, None)
        if not self.healthy:  # no longer renewed: the lease expires within the TTL
            return
        keys = [self.keys.lane_leases(lane.name)]
        capped = _capped(client)
        if capped is not None:
            keys.append(self.keys.client_leases(capped))
        keys.append(self.keys.waiting)
        self.write_soon(Write(self._release, keys, [lease, self.keys.freed_channel, lane.name]))

    async def renew(self) -> None:
        """Push the expiry of every lease this gateway holds, in one script call."""
        if not self.healthy or not self._held:
            return
        keys, ids = [], []
        for lease, (lane, client) in list(self._held.items()):
            keys.append(self.keys.lane_leases(lane))
            ids.append(lease)
            if client is not None:
                keys.append(self.keys.client_leases(client))
                ids.append(lease)
        try:
            await self._renew(keys=keys, args=[self.lease_ttl_ms, *ids])
        except REDIS_DOWN as error:
            self.mark_down(error)

    def _without_redis(self, lease: str, lane: LaneSpec, client: ClientSpec | None) -> LeaseOutcome:
        if not fails_open(lane):
            down_for = None if self.down_since is None else self.wall_clock() - self.down_since
            raise unavailable_error(lane, down_for)
        self.local_admissions += 1
        self._held[lease] = (lane.name, _capped(client))  # counted again after the reconnect
        return LeaseOutcome.LOCAL

    # -- freed slots elsewhere --------------------------------------------------------------
    async def _subscribe(self) -> None:
        """One subscription per gateway; re-subscribes after an outage and then wakes waiters
        (they may have missed a message meanwhile)."""
        while True:
            try:
                async with self.client.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.freed_channel)
                    self._wake()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=HEALTH_INTERVAL_S
                        )
                        if message is not None:
                            self._wake()
            except REDIS_DOWN as error:
                log.debug("shared state: freed-slot subscription lost (%s); retrying", error)
                await asyncio.sleep(HEALTH_INTERVAL_S)

    def _wake(self) -> None:
        for listener in list(self._listeners):
            listener.on_shared_freed()


def _failed(writes: list[Write]) -> None:
    for write in writes:
        if write.on_failure is not None:
            write.on_failure()


def _capped(client: ClientSpec | None) -> str | None:
    """The client whose leases are counted: only clients with a concurrency cap need it."""
    if client is None or client.max_concurrency is None:
        return None
    return client.name
