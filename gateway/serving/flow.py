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
import logging
import math
import time
from collections.abc import Callable
from functools import partial

from starlette.types import Receive, Scope, Send

from gateway.errors import (
    ErrorShape,
    Forbidden,
    GatewayError,
    RetryElsewhere,
    ServiceUnavailable,
    UpstreamUnavailable,
)
from gateway.lanes.budget_store import BudgetService
from gateway.lanes.budgets import Refusal
from gateway.lanes.classify import (
    LaneRefusal,
    classify,
    model_allowed,
    request_view,
    rewrite_model,
)
from gateway.observe.measurement import MAX_USAGE_TOKENS, RequestLabels, RequestRecord
from gateway.observe.recorder import Recorder
from gateway.ops.drain import cut_error
from gateway.policy.spec import ClientSpec, LaneSpec, Policy, UpstreamSpec
from gateway.runtime import Runtime
from gateway.serving import anthropic_headers
from gateway.serving.exchange import CLIENT_LEFT, DRAINING, Exchange
from gateway.serving.handling import Admitted, Handling, Sending
from gateway.serving.outcomes import over_budget, rejected, tokens_used
from gateway.serving.relay import Relay, send_error, trace_of
from gateway.serving.request_body import RequestFacts, check_body_type
from gateway.serving.rerun import queue_header, send_rerunning
from gateway.serving.routes import Route
from gateway.serving.upstream_body import UpstreamBody, body_for
from gateway.upstreams.client import UpstreamClient
from gateway.upstreams.router import UpstreamRouter
from gateway.upstreams.selection import first_serving, serving

log = logging.getLogger("lanegate")

# Prompt characters per token, for the budget estimate before the upstream counts for real.
CHARS_PER_TOKEN = 4
# Paths reach the access log and the ledger; past this they are cut (the request's id stays).
MAX_LOGGED_PATH = 256


class RequestFlow:
    def __init__(
        self,
        relay: Relay,
        budgets: BudgetService,
        recorder: Recorder,
        clients: dict[str, UpstreamClient],
        router: UpstreamRouter,
        clock: Callable[[], float],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.wall_clock = wall_clock  # Anthropic's rate-limit headers name an instant
        self.relay = relay
        self.budgets = budgets
        self.recorder = recorder
        self.clients = clients
        self.clock = clock
        # Requests being handled: the drain waits for them, then interrupts the rest; a reload
        # retires removed upstream clients once those handled under the old policy are done.
        self.active: set[Exchange] = set()
        self.clamped_logged: set[str] = set()  # upstreams whose out-of-range usage was logged

    async def handle(
        self, runtime: Runtime, route: Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        received_at = self.clock()
        request_id = self.relay.request_ids.of(scope)
        exchange = Exchange(request_id, received_at, self.clock)
        self.active.add(exchange)
        handling = Handling(route, scope, exchange)
        try:
            record = await self._serve(runtime, handling, receive, send)
        except GatewayError as error:
            error.headers.update({k.decode(): v.decode() for k, v in handling.extra})
            await send_error(send, error, route.shape, request_id)
            record = rejected(error.status, error.code, received_at, self.clock())
        except asyncio.CancelledError:
            if exchange.reason not in (CLIENT_LEFT, DRAINING):
                raise
            if exchange.task is not None:
                exchange.task.uncancel()
            if exchange.reason == DRAINING:  # cut before the relay started: a plain 503
                await _try_send(send, cut_error(), route, request_id)
            status = 499 if exchange.reason == CLIENT_LEFT else 503  # 499: left while queued
            record = rejected(status, exchange.reason, received_at, self.clock())
        finally:
            self.active.discard(exchange)
            exchange.close()
            if handling.admitted is not None:
                handling.admitted.ticket.release()
        self._finish(handling, record)

    async def _serve(
        self, runtime: Runtime, handling: Handling, receive: Receive, send: Send
    ) -> RequestRecord:
        """Authenticate, read, classify, admit and relay; what it learns goes in `handling`."""
        route, scope, exchange = handling.route, handling.scope, handling.exchange
        client = handling.client = runtime.auth.client_for(scope["headers"])
        check_body_type(scope["headers"])
        raw, facts = await self.relay.read(route, receive, exchange)
        model = handling.model = facts.model
        exchange.watch(receive)
        if not route.inference:  # metadata: the default upstream (that serves the API) answers
            sending = handling.sending = Sending(
                route, scope, send, exchange, facts, raw, model, []
            )
            upstream = first_serving(runtime.policy, route.family, _what(route))
            return await self._forward(runtime.policy, sending, upstream, False)
        lane, model, chars = self._lane(runtime.policy, scope, facts, client)
        handling.lane, handling.model = lane.name, model
        handling.extra.append((b"x-lanegate-lane", lane.name.encode()))
        pool = _offload_pool(runtime, lane, model)
        served_by(route, pool or self.router.pool_of(runtime.policy))  # before queueing
        admitted = handling.admitted = await self._admit(
            runtime, route, lane, client, facts, chars, pool
        )
        pool = await self._hop_if_offloaded(runtime, admitted, pool)
        handling.extra += self._admission_headers(route, admitted)
        sending = Sending(route, scope, send, exchange, facts, raw, model, handling.extra)
        handling.sending = sending
        sending.source = client.name if client else _peer(scope)
        served = served_by(route, pool or self.router.pool_of(runtime.policy))
        preemptible = admitted.lane.preemptible and not facts.stream
        handling.reruns.max_tokens = admitted.estimate - admitted.prompt_estimate
        again = partial(self._send, runtime.policy, sending, served)
        return await send_rerunning(
            again, admitted, sending, preemptible, self.clock, handling.reruns
        )

    def _finish(self, handling: Handling, record: RequestRecord) -> None:
        """Settle the budget with what was used, and record the request."""
        admitted, sending, reruns = handling.admitted, handling.sending, handling.reruns
        if admitted is not None:
            self.budgets.settle(
                admitted.reservation,
                tokens_used(record, admitted.prompt_estimate, admitted.estimate),
            )
        if record.usage_clamped and sending is not None:
            _log_clamped_usage(self.clamped_logged, sending.upstream)
        scope = handling.scope
        labels = RequestLabels(
            handling.exchange.request_id,
            handling.route.method,
            scope["path"][:MAX_LOGGED_PATH],
            handling.lane,
            sending.upstream if sending is not None else "-",
            handling.model,
            client=handling.client.name if handling.client is not None else None,
            queue_s=admitted.ticket.queue_s if admitted is not None else None,
            trace_id=trace.trace_id if (trace := trace_of(scope)) is not None else None,
            alone=sending is not None and sending.alone,
            preemptions=reruns.preemptions,
            preempted_s=reruns.thrown_s,
            preempted_tokens=reruns.tokens(record.completion_tokens),
        )
        self.recorder.record(labels, record, self.clock())

    def _lane(
        self,
        policy: Policy,
        scope: Scope,
        facts: RequestFacts,
        client: ClientSpec | None,
    ) -> tuple[LaneSpec, str | None, int]:
        """The lane, the model (rewritten if the lane says so), and the prompt's size in
        characters (for the budget estimate)."""
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
        return lane, model, view.prompt_chars

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
        reservation = await self.budgets.hold(lane, client, estimate)
        if isinstance(reservation, Refusal):
            anthropic = route.shape is ErrorShape.ANTHROPIC
            raise over_budget(reservation, self.wall_clock() if anthropic else None)
        gate = runtime.remote_gate if pool is not None and runtime.remote_gate else runtime.gate
        try:
            ticket = await gate.acquire(lane, client)
        except BaseException:
            self.budgets.release(reservation)
            raise
        return Admitted(lane, client, ticket, reservation, prompt, estimate)

    async def _hop_if_offloaded(
        self, runtime: Runtime, admitted: Admitted, pool: tuple[UpstreamSpec, ...] | None
    ) -> tuple[UpstreamSpec, ...] | None:
        """A request queued locally before its lane was offloaded: it goes remote now, and
        trades its local slot for one of the remote pool's (the local one frees at once)."""
        if pool is not None or admitted.ticket.gate is not runtime.gate:
            return pool
        pool = _offload_pool(runtime, admitted.lane, None, early=False)  # it holds a local slot now
        if pool is not None and runtime.remote_gate is not None:
            admitted.ticket.release()
            admitted.ticket = await runtime.remote_gate.acquire(admitted.lane, admitted.client)
        return pool

    def _admission_headers(self, route: Route, admitted: Admitted) -> list[tuple[bytes, bytes]]:
        queued = queue_header(admitted.ticket)
        limits = self.budgets.headers(admitted.lane, admitted.client, admitted.reservation)
        if route.shape is ErrorShape.ANTHROPIC and limits:  # and in Anthropic's words
            limits = [*limits, *anthropic_headers.from_openai(limits, self.wall_clock())]
        return [queued, *limits]

    # -- the retry loop ---------------------------------------------------------------------
    async def _send(
        self, policy: Policy, sending: Sending, pool: tuple[UpstreamSpec, ...] | None
    ) -> RequestRecord:
        """Try upstreams of the pool (default: the local one) until one answers. A failure
        before any byte reached the client goes to another upstream, never the same twice;
        the router picks each attempt and learns how it ended."""
        pool = pool or self.router.pool_of(policy)
        tried: set[str] = set()
        while True:
            attempt = self.router.begin(policy, pool, sending.model, tried, sending.source)
            try:
                record = await self._forward(policy, sending, attempt.spec, attempt.others)
            except RetryElsewhere as failure:
                self.router.failed(attempt, failure)
                if not any(s.name not in tried for s in pool):
                    detail = failure.detail
                    raise UpstreamUnavailable(f"no upstream could take it: {detail}") from failure
                continue
            except BaseException:
                self.router.abandoned(attempt)
                raise
            sending.alone = self.router.finished(attempt, record)
            return record

    async def _forward(
        self, policy: Policy, sending: Sending, spec: UpstreamSpec, retryable: bool
    ) -> RequestRecord:
        sending.upstream = spec.name
        body = _body_for(policy, sending, spec)
        return await self.relay.forward(
            sending.route,
            sending.scope,
            sending.send,
            raw=body.raw,
            client=self.clients[spec.name],
            exchange=sending.exchange,
            extra_headers=sending.extra,
            retryable=retryable,
            strip_usage=body.strip_usage,
            assemble=body.assemble,
        )


def _peer(scope: Scope) -> str | None:
    """Who sent an anonymous request, for the breaker's count of distinct sources."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _log_clamped_usage(logged: set[str], upstream: str) -> None:
    """Once per upstream (and at most 64 names: upstreams come from the policy)."""
    if upstream not in logged and len(logged) < 64:
        logged.add(upstream)
        log.warning(
            "upstream %s reported a token count out of range (negative, or over %d): clamped; "
            "budgets and the ledger use the clamped figure (logged once per upstream)",
            upstream,
            MAX_USAGE_TOKENS,
        )


async def _try_send(send: Send, error: GatewayError, route: Route, request_id: str) -> None:
    try:
        await send_error(send, error, route.shape, request_id)
    except (OSError, RuntimeError):  # the client is gone, or the response had started
        log.debug("request %s: could not send %s", request_id, error.code)


def _body_for(policy: Policy, sending: Sending, spec: UpstreamSpec) -> UpstreamBody:
    """The body for this upstream, and how its answer is relayed (serving.upstream_body)."""
    facts, model = sending.facts, sending.model
    upstream_id = None if model is None else policy.model_id(model, spec.name)
    return body_for(
        sending.raw,
        facts.body,
        facts.model,
        upstream_id,
        api=sending.route.api,
        stream=facts.stream,
        kind=spec.kind,
        preemptible=sending.exchange.preemptible,  # this run may be cut (serving.rerun)
    )


def served_by(route: Route, pool: tuple[UpstreamSpec, ...]) -> tuple[UpstreamSpec, ...]:
    """The upstreams of the pool that serve the route's API (a 404 naming them if none)."""
    return serving(pool, route.family, _what(route))


def _what(route: Route) -> str:
    return f"{route.method} {route.path}"


def _offload_pool(
    runtime: Runtime, lane: LaneSpec, model: str | None, *, early: bool = True
) -> tuple[UpstreamSpec, ...] | None:
    """The remote pool while offloading (offloadable lanes only), or early (see
    `offload/early.py`) for a request not yet admitted locally; None: the local pool."""
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
    if where == "local" and early and _early(runtime, lane, model):  # before a sustained breach
        return offload.remote
    return offload.remote if where == "remote" else None


def _early(runtime: Runtime, lane: LaneSpec, model: str | None) -> bool:
    """Would the local adaptive limit hold this request back while the remote pool is free?"""
    adaptive, remote = runtime.gate.adaptive, runtime.remote_gate
    if not lane.offloadable or runtime.offload is None or adaptive is None or remote is None:
        return False  # chats (never offloadable) do not pay for the question
    held = adaptive.holds_back(lane.name, runtime.gate.by_lane.get(lane.name, 0))
    return runtime.offload.early(lane, held, remote.capacity - remote.in_flight, model)
