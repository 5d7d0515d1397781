"""One relayed request from arrival to record: who, which lane, budget, slot, relay, settle.

The order matters and is the same for every request:
1. authenticate (401 before reading a large body from a stranger),
2. read and validate the body,
3. classify into a lane (pure), apply the lane's model rules,
4. reserve the token budget estimate (pure ledger), then wait for a slot in the lane gate,
5. relay, and on every exit path release the slot and settle or release the budget.
A queued request sends nothing until admitted; if its client leaves meanwhile it leaves the
queue. Errors before the relay are answered in the route's error shape with lane headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from gateway.errors import (
    BadRequest,
    ErrorShape,
    Forbidden,
    GatewayError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from gateway.lanes.budget_store import Budgets
from gateway.lanes.budgets import Refusal, Reservation
from gateway.lanes.classify import (
    LaneRefusal,
    classify,
    model_allowed,
    request_view,
    rewrite_model,
)
from gateway.lanes.gate import Ticket
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.recorder import Recorder
from gateway.ops.drain import cut_error
from gateway.policy.spec import ClientSpec, LaneSpec, Policy, UpstreamSpec
from gateway.runtime import Runtime
from gateway.serving import anthropic_headers
from gateway.serving.exchange import CLIENT_LEFT, DRAINING, Exchange
from gateway.serving.relay import Relay, send_error, trace_of
from gateway.serving.request_body import RequestFacts
from gateway.serving.routes import Route
from gateway.shared.plan import SharedReservation
from gateway.upstreams.client import UpstreamClient
from gateway.upstreams.router import UpstreamRouter
from gateway.upstreams.selection import first_serving, not_served_message, serving

if TYPE_CHECKING:  # imports the redis client: only gateways with LANEGATE_REDIS_URL load it
    from gateway.shared.budgets import SharedBudgets

log = logging.getLogger("lanegate")

# Prompt characters per token, for the budget estimate before the upstream counts for real.
CHARS_PER_TOKEN = 4


@dataclass
class Admitted:
    lane: LaneSpec
    client: ClientSpec | None
    ticket: Ticket
    reservation: Reservation | SharedReservation | None
    prompt_estimate: int
    estimate: int


class RequestFlow:
    def __init__(
        self,
        relay: Relay,
        budgets: Budgets,
        recorder: Recorder,
        clients: dict[str, UpstreamClient],
        router: UpstreamRouter,
        clock: Callable[[], float],
    ) -> None:
        self.router = router
        self.shared_budgets: SharedBudgets | None = None  # set by the app with LANEGATE_REDIS_URL
        self.relay = relay
        self.budgets = budgets
        self.recorder = recorder
        self.clients = clients
        self.clock = clock
        # Requests being handled: the drain waits for them, then interrupts the rest; a reload
        # retires removed upstream clients once those handled under the old policy are done.
        self.active: set[Exchange] = set()

    async def handle(
        self, runtime: Runtime, route: Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        received_at = self.clock()
        request_id = self.relay.request_ids.of(scope)
        exchange = Exchange(request_id, received_at, self.clock)
        self.active.add(exchange)
        admitted: Admitted | None = None
        lane_name, upstream_name, model = "-", "-", None
        client: ClientSpec | None = None
        extra: list[tuple[bytes, bytes]] = []
        try:
            client = runtime.auth.client_for(scope["headers"])
            raw, facts = await self.relay.read(route, receive, exchange)
            model = facts.model
            exchange.watch(receive)
            if route.inference:
                lane, raw, model, chars = self._lane(runtime.policy, scope, facts, client, raw)
                lane_name = lane.name
                extra.append((b"x-lanegate-lane", lane.name.encode()))
                pool = _offload_pool(runtime, lane)
                _served(route, pool or self.router.pool_of(runtime.policy))  # before queueing
                admitted = await self._admit(runtime, route, lane, client, facts, chars, pool)
                pool = await self._hop_if_offloaded(runtime, admitted, pool)
                extra += self._admission_headers(route, admitted)

            async def attempt(spec: UpstreamSpec, retryable: bool) -> RequestRecord:
                nonlocal upstream_name
                upstream_name = spec.name
                return await self.relay.forward(
                    route,
                    scope,
                    send,
                    raw=_body_for(runtime.policy, facts, raw, model, spec),
                    client=self.clients[spec.name],
                    exchange=exchange,
                    extra_headers=extra,
                    retryable=retryable,
                )

            if route.inference:
                lane_of = admitted.lane.name if admitted else None
                served = _served(route, pool or self.router.pool_of(runtime.policy))
                record = await self.router.run(runtime.policy, model, attempt, served, lane_of)
            else:  # metadata: the default upstream (that serves the API) answers, no slot
                record = await attempt(_metadata_upstream(runtime.policy, route), False)
        except GatewayError as error:
            error.headers.update({k.decode(): v.decode() for k, v in extra})
            await send_error(send, error, route.shape, request_id)
            record = _rejected(error.status, error.code, received_at, self.clock())
        except asyncio.CancelledError:
            if exchange.reason not in (CLIENT_LEFT, DRAINING):
                raise
            if exchange.task is not None:
                exchange.task.uncancel()
            if exchange.reason == DRAINING:  # cut before the relay started: a plain 503
                await _try_send(send, cut_error(), route, request_id)
            status = 499 if exchange.reason == CLIENT_LEFT else 503  # 499: left while queued
            record = _rejected(status, exchange.reason, received_at, self.clock())
        finally:
            self.active.discard(exchange)
            exchange.close()
            if admitted is not None:
                admitted.ticket.release()
        if admitted is not None:
            self._settle(admitted.reservation, _tokens_used(record, admitted))
        queue_s = admitted.ticket.queue_s if admitted is not None else None
        labels = RequestLabels(
            request_id,
            route.method,
            scope["path"],
            lane_name,
            upstream_name,
            model,
            client=client.name if client is not None else None,
            queue_s=queue_s,
            trace_id=trace.trace_id if (trace := trace_of(scope)) is not None else None,
        )
        self.recorder.record(labels, record, self.clock())

    def _lane(
        self,
        policy: Policy,
        scope: Scope,
        facts: RequestFacts,
        client: ClientSpec | None,
        raw: bytes,
    ) -> tuple[LaneSpec, bytes, str | None, int]:
        """The lane, the body to send (model rewritten if the lane says so), the model, and
        the prompt's size in characters (for the budget estimate)."""
        wanted = policy.header_names  # only what the rules read (ASGI names are lower-case)
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in wanted
        }
        name = client.name if client else None
        view = request_view(scope["path"], facts, name, headers, count_prompt=policy.counts_prompt)
        decision = classify(policy, view, headers.get("x-lane"))
        if isinstance(decision, LaneRefusal):
            raise decision.error()
        lane = policy.lane(decision.lane)
        model = rewrite_model(lane, facts.model)
        if not model_allowed(lane, model):
            raise Forbidden(
                f"model {model!r} is not allowed in lane {lane.name!r}; "
                "ask the operator, or use a model the lane allows",
                code="model_not_allowed",
                param="model",
            )
        if model != facts.model and facts.body is not None:
            raw = json.dumps({**facts.body, "model": model}, separators=(",", ":")).encode()
        return lane, raw, model, view.prompt_chars

    async def _admit(
        self,
        runtime: Runtime,
        route: Route,
        lane: LaneSpec,
        client: ClientSpec | None,
        facts: RequestFacts,
        chars: int,
        pool: tuple[UpstreamSpec, ...] | None,
    ) -> Admitted:
        prompt = math.ceil(chars / CHARS_PER_TOKEN)
        estimate = prompt + (facts.max_tokens or lane.default_max_tokens)
        shared = self.shared_budgets
        reservation: Reservation | SharedReservation | Refusal | None
        if shared is None:
            reservation = self.budgets.reserve(lane, client, estimate)
        else:
            reservation = await shared.reserve(lane, client, estimate)
        if isinstance(reservation, Refusal):
            anthropic = route.shape is ErrorShape.ANTHROPIC
            raise _over_budget(reservation, self.budgets.wall_clock() if anthropic else None)
        gate = runtime.remote_gate if pool is not None and runtime.remote_gate else runtime.gate
        try:
            ticket = await gate.acquire(lane, client)
        except BaseException:
            self._settle(reservation, None)
            raise
        return Admitted(lane, client, ticket, reservation, prompt, estimate)

    async def _hop_if_offloaded(
        self, runtime: Runtime, admitted: Admitted, pool: tuple[UpstreamSpec, ...] | None
    ) -> tuple[UpstreamSpec, ...] | None:
        """A request queued locally before its lane was offloaded: it goes remote now, and
        trades its local slot for one of the remote pool's (the local one frees at once)."""
        if pool is not None or admitted.ticket.gate is not runtime.gate:
            return pool
        pool = _offload_pool(runtime, admitted.lane)
        if pool is not None and runtime.remote_gate is not None:
            admitted.ticket.release()
            admitted.ticket = await runtime.remote_gate.acquire(admitted.lane, admitted.client)
        return pool

    def _settle(
        self, reservation: Reservation | SharedReservation | None, used: int | None
    ) -> None:
        """Settle real usage, or release (``used`` None) a reservation that never ran."""
        if self.shared_budgets is not None:
            if used is None:
                self.shared_budgets.release(reservation)
            else:
                self.shared_budgets.settle(reservation, used)
        elif not isinstance(reservation, SharedReservation):
            if used is None:
                self.budgets.release(reservation)
            else:
                self.budgets.settle(reservation, used)

    def _admission_headers(self, route: Route, admitted: Admitted) -> list[tuple[bytes, bytes]]:
        queued = (b"x-lanegate-queue-ms", f"{admitted.ticket.queue_s * 1000:.1f}".encode())
        if isinstance(admitted.reservation, SharedReservation):
            limits = list(admitted.reservation.headers)
        else:
            limits = self.budgets.rate_limit_headers(admitted.lane, admitted.client)
        if route.shape is ErrorShape.ANTHROPIC and limits:  # and in Anthropic's words
            limits += anthropic_headers.from_openai(limits, self.budgets.wall_clock())
        return [queued, *limits]


async def _try_send(send: Send, error: GatewayError, route: Route, request_id: str) -> None:
    try:
        await send_error(send, error, route.shape, request_id)
    except (OSError, RuntimeError):  # the client is gone, or the response had started
        log.debug("request %s: could not send %s", request_id, error.code)


def _body_for(
    policy: Policy, facts: RequestFacts, raw: bytes, model: str | None, spec: UpstreamSpec
) -> bytes:
    """The body for this upstream: the model under the name that upstream uses for it."""
    if model is None or facts.body is None:
        return raw
    upstream_id = policy.model_id(model, spec.name)
    if upstream_id == model:
        return raw
    return json.dumps({**facts.body, "model": upstream_id}, separators=(",", ":")).encode()


def _served(route: Route, pool: tuple[UpstreamSpec, ...]) -> tuple[UpstreamSpec, ...]:
    """The upstreams of the pool that serve the route's API; none: a 404 saying who serves what."""
    served = serving(pool, route.family)
    if not served:
        raise _not_served(route, pool)
    return served


def _metadata_upstream(policy: Policy, route: Route) -> UpstreamSpec:
    spec = first_serving(policy, route.family)
    if spec is None:
        raise _not_served(route, policy.upstreams)
    return spec


def _not_served(route: Route, pool: tuple[UpstreamSpec, ...]) -> NotFound:
    what = f"{route.method} {route.path}"
    return NotFound(not_served_message(what, route.family, pool), code="api_not_served")


def _over_budget(refusal: Refusal, anthropic_now: float | None = None) -> GatewayError:
    scope = f"{refusal.scope[0]} {refusal.scope[1]!r}"
    if refusal.never_fits:
        return BadRequest(
            f"this request may use up to {refusal.requested} tokens, more than the "
            f"{refusal.limit} per {refusal.window} that {scope} allows; lower max_tokens",
            code="token_budget",
            param="max_tokens",
        )
    seconds = max(1, math.ceil(refusal.retry_after_s))
    headers = {"retry-after": str(seconds)}
    if anthropic_now is not None:  # Anthropic clients read the window from these
        left = refusal.limit - refusal.used - refusal.reserved
        window = anthropic_headers.tokens_headers(refusal.limit, left, seconds, anthropic_now)
        headers.update((k.decode(), v.decode()) for k, v in window)
    return RateLimited(
        f"{scope} has used its token budget for this {refusal.window} "
        f"({refusal.used + refusal.reserved}/{refusal.limit}); retry in {seconds} s",
        code="token_budget",
        headers=headers,
    )


def _tokens_used(record: RequestRecord, admitted: Admitted) -> int:
    """Real usage when the upstream said; otherwise the prompt estimate plus what was counted."""
    if record.prompt_tokens is not None and record.completion_tokens is not None:
        return record.prompt_tokens + record.completion_tokens
    if record.completion_tokens is not None:
        return admitted.prompt_estimate + record.completion_tokens
    if record.status >= 400 or record.status == 0:
        return 0  # refused or failed before generating: nothing was spent upstream
    return admitted.estimate


def _rejected(status: int, code: str, received_at: float, now: float) -> RequestRecord:
    return RequestRecord(
        ttft_s=None,
        gap_max_s=None,
        gap_p95_s=None,
        duration_s=now - received_at,
        prompt_tokens=None,
        completion_tokens=None,
        tokens_estimated=False,
        chunks=0,
        status=status,
        error=code,
        rejected=True,
    )


def _offload_pool(runtime: Runtime, lane: LaneSpec) -> tuple[UpstreamSpec, ...] | None:
    """The remote pool while offloading (offloadable lanes only); None: the local pool."""
    offload = runtime.offload
    if offload is None:
        return None
    where = offload.route(lane)
    if where == "shed":
        raise ServiceUnavailable(
            f"lane {lane.name!r} is shed: the local Mac is overloaded and the remote pool "
            f"is unavailable ({offload.controller.last_reason}); retry later",
            code="offload_shed",
            headers={"retry-after": "30"},
        )
    return offload.remote if where == "remote" else None
