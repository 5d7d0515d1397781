"""The state of one relayed request: its id, its one timer, and how it is interrupted.

Cancellation has one mechanism: `Exchange.interrupt(reason)` cancels the handler task while
the exchange is active; the relay turns the reason into the right answer (nothing for a
client that left, 504 or a final stream error event for a timeout). A disconnect watcher task
and one timer per request (first byte, then idle gap) are its only sources.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable

from starlette.types import Receive, Scope

from gateway.ops.drain import DRAINING_CODE

CLIENT_LEFT = "client_disconnected"
# A client that takes no bytes for the idle timeout: treated as gone, so it cannot hold a
# slot (and an upstream) forever, and the upstream is not blamed for the silence.
CLIENT_STALLED = "client_stalled"
FIRST_BYTE = "first_byte_timeout"
IDLE = "idle_timeout"
DRAINING = DRAINING_CODE  # the drain timeout passed: end with the stream error event
BODY = "body_timeout"
# Its slot went to a chat (gateway.lanes.preemption): the relay raises `Preempted`, the flow
# runs the request again later. Only while nothing went to the client (`preemptible`).
PREEMPTED = "preempted"
_REQUEST_ID = "lanegate.request_id"  # where the scope keeps the request's id


class RequestIds:
    """Request ids: the client's `X-Request-Id` when it sent a sane one, else a fresh id.

    A fresh id is 128 random bits as 32 hex digits, like `uuid4().hex`, drawn from a
    generator seeded once per process from the OS: ~0.3 µs, where `uuid4` makes a
    `getrandom` syscall per request on the TTFT path (docs/performance.md). Random rather
    than a counter, so ids do not tell clients how busy the gateway is. The id is kept in
    the scope: every part of the gateway that asks about one request gets the same id.
    """

    def __init__(self) -> None:
        self._random = random.Random(secrets.randbits(128))

    def of(self, scope: Scope) -> str:
        known: str | None = scope.get(_REQUEST_ID)
        if known is not None:
            return known
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
                known = value.decode("ascii")
                break
        else:
            known = f"{self._random.getrandbits(128):032x}"
        scope[_REQUEST_ID] = known
        return known


class Exchange:
    """The state of one relayed request; the only mutable thing the relay shares per request.

    Lives from the moment the body is read (so a client leaving while queued is noticed) to
    the end of the response. Times come from the gateway's clock; the loop only schedules.
    """

    __slots__ = (
        "active",
        "clock",
        "first_byte_at",
        "first_byte_s",
        "headers_sent",
        "idle_s",
        "last_activity",
        "loop",
        "preemptible",
        "reason",
        "received_at",
        "request_id",
        "sending_since",
        "task",
        "timer",
        "watcher",
    )

    def __init__(self, request_id: str, received_at: float, clock: Callable[[], float]) -> None:
        self.request_id = request_id
        self.received_at = received_at
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.active = True
        self.reason: str | None = None
        self.headers_sent = False
        # May its slot be taken back (a non-streamed request of a preemptible lane)? The relay
        # clears it, synchronously, before it sends anything to the client.
        self.preemptible = False
        self.first_byte_at: float | None = None
        self.last_activity = received_at
        self.sending_since: float | None = None  # set while a send waits on the client
        self.first_byte_s = self.idle_s = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Future[None] | None = None

    def watch(self, receive: Receive) -> None:
        """Notice the client leaving from the handler's first wait on (queued, or relaying).

        The watcher task is made when the handler first yields to the loop: on the fast path
        (an idle pooled upstream connection) that is after the request went upstream, so
        making it is off the TTFT path.
        """
        self.loop.call_soon(self._start_watcher, receive)

    def _start_watcher(self, receive: Receive) -> None:
        if self.active:
            self.watcher = asyncio.ensure_future(_watch_disconnect(receive, self))

    def arm(self, first_byte_s: float, idle_s: float) -> None:
        """Start the upstream timer: first byte within `first_byte_s`, then gaps < `idle_s`."""
        self.first_byte_s, self.idle_s = first_byte_s, idle_s
        self.disarm()  # a retry on another upstream re-arms the same exchange
        self.timer = self.loop.call_later(first_byte_s, self._check_deadline)

    def arm_body(self, body_s: float) -> None:
        """The client must finish sending its body within `body_s` (a slow upload → 408)."""
        self.timer = self.loop.call_later(body_s, self.interrupt, BODY)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def interrupt(self, reason: str) -> None:
        if self.active and self.reason == PREEMPTED:
            # The cancel is on its way; the client leaving (or a timeout) meanwhile wins, so
            # the request ends instead of running again for nobody.
            self.reason = reason
        elif self.active and self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()

    def preempt(self) -> bool:
        """Interrupt for a preemption, if still allowed: True when it was."""
        if not (self.preemptible and self.active and self.reason is None and self.task):
            return False
        self.preemptible = False
        self.interrupt(PREEMPTED)
        return True

    def take_preemption(self) -> bool:
        """Was the cancellation being handled a preemption, before anything reached the client?
        Then the exchange goes on (its reason cleared) and the request is sent again; the
        caller uncancels its task."""
        if self.reason != PREEMPTED or self.headers_sent:
            return False
        self.reason = None
        return True

    def done(self) -> None:
        """The response went out whole: nothing interrupts the request any more. (uvicorn's
        `receive` answers `http.disconnect` from then on, which is not the client leaving.)"""
        self.active = False
        if self.watcher is not None:
            self.watcher.cancel()

    def close(self) -> None:
        self.done()
        self.disarm()

    def _check_deadline(self) -> None:
        # One timer per request, re-armed lazily: chunks only write `last_activity`.
        if self.sending_since is not None:  # waiting on the client, not on the upstream
            stalled = self.clock() - self.sending_since
            if stalled >= self.idle_s:
                self.interrupt(CLIENT_STALLED)
            else:  # the upstream gets a whole idle window once the client takes the bytes
                self.last_activity = self.clock()
                self.timer = self.loop.call_later(self.idle_s - stalled, self._check_deadline)
            return
        if self.first_byte_at is None:
            self.interrupt(FIRST_BYTE)
            return
        left = self.last_activity + self.idle_s - self.clock()
        if left <= 0:
            self.interrupt(IDLE)
        else:
            self.timer = self.loop.call_later(left, self._check_deadline)

    def mark_first_byte(self, now: float) -> None:
        self.first_byte_at = now
        self.last_activity = now
        self.disarm()
        self.timer = self.loop.call_later(self.idle_s, self._check_deadline)


async def _watch_disconnect(receive: Receive, exchange: Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.interrupt(CLIENT_LEFT)
            return
