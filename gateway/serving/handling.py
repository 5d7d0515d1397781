"""The state of one request in the flow: where it is going (`Sending`), the slot and budget it
holds (`Admitted`), and what its handling has learned for its record (`Handling`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.types import Scope, Send

from gateway.lanes.budget_store import Held
from gateway.lanes.gate import Ticket
from gateway.policy.spec import ClientSpec, LaneSpec
from gateway.serving.exchange import Exchange
from gateway.serving.request_body import RequestFacts
from gateway.serving.rerun import Reruns
from gateway.serving.routes import Route


@dataclass(slots=True)
class Sending:
    """One request on its way upstream: what every attempt sends, and where it went."""

    route: Route
    scope: Scope
    send: Send
    exchange: Exchange
    facts: RequestFacts
    raw: bytes
    model: str | None
    extra: list[tuple[bytes, bytes]]
    upstream: str = "-"  # the upstream of the latest attempt
    alone: bool = False  # it had its upstream to itself from start to end
    source: str | None = None  # who asks (client name, else address): the breaker's evidence


@dataclass
class Admitted:
    lane: LaneSpec
    client: ClientSpec | None
    ticket: Ticket
    reservation: Held
    prompt_estimate: int
    estimate: int


@dataclass(slots=True)
class Handling:
    """What one request's handling has learned so far; its record is made from it at the end."""

    route: Route
    scope: Scope
    exchange: Exchange
    lane: str = "-"
    model: str | None = None
    client: ClientSpec | None = None
    admitted: Admitted | None = None
    sending: Sending | None = None
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)
    reruns: Reruns = field(default_factory=Reruns)
