"""The whole policy file as pydantic models: one section per module, assembled here.

Each section validates itself; `findings()` then checks what only the whole document can tell
(lanes named by clients and rules exist, reserved slots fit the upstreams, names are unique),
each finding with the precise field path the loader turns into `file:line: field: message`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.policy.classify_rules import ClassifyModel
from gateway.policy.clients import ClientModel, check_key_ref
from gateway.policy.lanes import LaneModel, implicit_lane
from gateway.policy.models import ModelsModel
from gateway.policy.offload_section import OffloadModel
from gateway.policy.slo_section import SloModel
from gateway.policy.spec import ANTHROPIC_API, Policy, Protection, UpstreamKind
from gateway.policy.suggest import did_you_mean
from gateway.policy.upstreams import UpstreamModel

Location = tuple[str | int, ...]
LOCAL_POOL = "local"
# The openai SDK gives up after 600 s; a lane queue should answer (429) well before that.
CLIENT_READ_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Finding:
    loc: Location  # field path, as pydantic spells error locations
    message: str
    warning: bool = False  # True: usable, but probably not what was meant
    anchor: Location = ()  # where to point when `loc` is not written in the file


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, title="lanegate policy")

    version: Annotated[Literal[1], Field(description="Schema version; always 1 for now")] = 1
    upstreams: Annotated[
        list[UpstreamModel], Field(min_length=1, description="Inference servers, by pool")
    ]
    lanes: Annotated[
        list[LaneModel],
        Field(description="Traffic classes (unset: one lane `default` over the local pool)"),
    ] = []
    clients: Annotated[
        list[ClientModel], Field(description="Named callers and their keys (unset: anyone)")
    ] = []
    classify: Annotated[
        ClassifyModel, Field(description="Rules that put each request into a lane")
    ] = ClassifyModel()
    admin_key: Annotated[
        str | None,
        Field(description="Reference to the key every /admin/* call needs: sha256:… or env:VAR"),
    ] = None
    models: Annotated[
        ModelsModel,
        Field(description="Logical model names and what each upstream calls them"),
    ] = ModelsModel()
    offload: Annotated[
        OffloadModel | None,
        Field(description="When offloadable lanes move to the remote pool (unset: never)"),
    ] = None
    slo: Annotated[
        SloModel | None,
        Field(
            description="Chats' TTFT target for lower lanes' adaptive limits, and the gate "
            "thresholds `lanegate ladder --policy` checks a run against"
        ),
    ] = None

    @field_validator("upstreams")
    @classmethod
    def _unique_upstream_names(cls, upstreams: list[UpstreamModel]) -> list[UpstreamModel]:
        seen: set[str] = set()
        for upstream in upstreams:
            if upstream.name in seen:
                raise ValueError(f"upstream name {upstream.name!r} is used twice")
            seen.add(upstream.name)
        return upstreams

    @field_validator("admin_key")
    @classmethod
    def _admin_key_reference(cls, value: str | None) -> str | None:
        return None if value is None else check_key_ref(value)

    # -- derived facts ----------------------------------------------------------------------

    def lane_names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self.lanes) if self.lanes else ("default",)

    def default_lane(self) -> str | None:
        """The policy's fallback lane, or None when several lanes leave it ambiguous."""
        if self.classify.default_lane is not None:
            return self.classify.default_lane
        names = self.lane_names()
        return names[0] if len(names) == 1 else None

    def local_pool(self) -> str:
        """`local`, or the first upstream's pool (where requests go when no pool is local)."""
        pools = {u.pool for u in self.upstreams}
        return LOCAL_POOL if LOCAL_POOL in pools else self.upstreams[0].pool

    def local_slots(self) -> int:
        return sum(u.max_concurrency for u in self.upstreams if u.pool == self.local_pool())

    # -- cross-section checks ---------------------------------------------------------------

    def findings(self) -> list[Finding]:
        """Every cross-section error and warning; the document is usable if none is an error."""
        return [
            *self._unique_names(),
            *self._lane_capacity(),
            *self._lane_models(),
            *self._client_lanes(),
            *self._classify_lanes(),
            *self._rule_clients(),
            *self._model_upstreams(),
            *self._offload_pool(),
        ]

    def _offload_pool(self) -> Iterator[Finding]:
        if self.offload is not None and not any(
            u.pool != self.local_pool() for u in self.upstreams
        ):
            yield Finding(
                ("offload",),
                "offload needs a second pool to move to: give a remote upstream `pool: remote`",
            )

    def _model_upstreams(self) -> Iterator[Finding]:
        known = {upstream.name for upstream in self.upstreams}
        for model, ids in self.models.root.items():
            for upstream in ids:
                if upstream not in known:
                    yield Finding(
                        ("models", model, upstream),
                        f"unknown upstream {upstream!r} (upstreams: {', '.join(sorted(known))})"
                        + did_you_mean(upstream, known),
                    )

    def _unique_names(self) -> Iterator[Finding]:
        sections: list[tuple[str, list[str | None]]] = [
            ("lanes", [lane.name for lane in self.lanes]),
            ("clients", [client.name for client in self.clients]),
        ]
        for section, names in sections:
            yield from _duplicates((section,), "name", names, f"{section[:-1]} name")
        rule_names = [rule.name for rule in self.classify.rules]
        yield from _duplicates(("classify", "rules"), "name", rule_names, "rule name")
        keys: list[str | None] = [client.key for client in self.clients]
        yield from _duplicates(("clients",), "key", keys, "key reference")
        for index, client in enumerate(self.clients):
            if self.admin_key is not None and client.key == self.admin_key:
                yield Finding(
                    ("clients", index, "key"),
                    "same key reference as admin_key: the admin key must be nobody's client key",
                )

    def _lane_capacity(self) -> Iterator[Finding]:
        local, pool = self.local_slots(), self.local_pool()
        reserved = sum(lane.reserved for lane in self.lanes)
        if reserved > local:
            yield self._over_reserved(reserved, local, pool)
        for index, lane in enumerate(self.lanes):
            yield from self._lane_cap(index, lane, pool)
            yield from self._preempts_llamacpp(index, lane, pool)
            if lane.queue_timeout >= CLIENT_READ_TIMEOUT_S:
                yield Finding(
                    ("lanes", index, "queue_timeout"),
                    f"{lane.queue_timeout:g} s is not below the 600 s the openai SDK waits: "
                    "clients would time out before lanegate answers 429",
                    warning=True,
                )
        yield from self._starved_lanes(reserved, local)

    def _lane_cap(self, index: int, lane: LaneModel, pool: str) -> Iterator[Finding]:
        """A hand cap that contradicts the slots: more than the lane can reach, or (with
        adaptive limits) less than the local slots a lower lane could use while no chat runs."""
        if lane.max_concurrency is None:
            return
        reach = self.reach(lane)
        if lane.max_concurrency > reach:
            where = f"the {pool!r} pool less other lanes' reserved slots"
            if lane.offloadable:
                where += ", plus the other pools"
            yield Finding(
                ("lanes", index, "max_concurrency"),
                f"{lane.max_concurrency} is more than the {_slots(reach)} this lane can reach "
                f"({where}): the extra requests would wait inside the upstream, where lane "
                "priorities cannot reorder them",
                warning=True,
            )
        elif self._adapts(lane) and lane.max_concurrency < (
            local := self.reach(lane, local_only=True)
        ):
            yield self._hand_cap(index, lane.max_concurrency, local, pool)

    def _preempts_llamacpp(self, index: int, lane: LaneModel, pool: str) -> Iterator[Finding]:
        """A top-priority lane is never preempted; llama.cpp's server may go on generating a
        cut non-streamed request (docs/policy.md, Preemption): only Messages ones, as
        chat/completions requests go upstream as streams (serving.upstream_body)."""
        if lane.preemptible and lane.priority == max(other.priority for other in self.lanes):
            yield Finding(
                ("lanes", index, "preemptible"),
                "this lane has the top priority, so nothing outranks it and its requests are "
                "never preempted; give it a lower priority than the chats' lane, or unset it",
                warning=True,
            )
        llama = [u for u in self.upstreams if u.pool == pool and u.kind is UpstreamKind.LLAMACPP]
        names = [u.name for u in llama if u.apis is None or ANTHROPIC_API in u.apis]
        if lane.preemptible and names:
            yield Finding(
                ("lanes", index, "preemptible"),
                f"llama.cpp's server ({', '.join(names)}) does not reliably stop a non-streamed "
                "generation whose connection closed while other requests run; lanegate streams "
                "chat/completions requests upstream so a cut stops them, but not Anthropic "
                "Messages ones (/v1/messages): a preempted one frees lanegate's slot but may keep "
                "the engine's busy until its max_tokens; have those clients stream, leave "
                "anthropic out of the upstream's apis, or leave preemptible unset",
                warning=True,
            )

    def reach(self, lane: LaneModel, *, local_only: bool = False) -> int:
        """The slots a lane can use: the local pool less the slots other lanes reserve, plus
        the other pools when it is offloadable (unless `local_only`)."""
        local = self.local_slots()
        reserved = sum(other.reserved for other in self.lanes) - lane.reserved
        reach = max(local - reserved, 0)
        if lane.offloadable and not local_only:
            reach += sum(u.max_concurrency for u in self.upstreams) - local
        return reach

    def _adapts(self, lane: LaneModel) -> bool:
        """Is this lane below the top priority, with adaptive limits on (the default)?"""
        top = max(other.priority for other in self.lanes)
        enabled = self.slo.adaptive_limits if self.slo is not None else True
        return enabled and lane.priority < top

    def _hand_cap(self, index: int, cap: int, reach: int, pool: str) -> Finding:
        return Finding(
            ("lanes", index, "max_concurrency"),
            f"a hand cap of {cap} holds this lane below the {_slots(reach)} of the {pool!r} "
            "pool it could use while no chat runs; its adaptive limit already shrinks when "
            "chats slow down (slo.interactive_ttft_ratio): leave max_concurrency unset unless "
            "this lane must never use more",
            warning=True,
        )

    def _over_reserved(self, reserved: int, local: int, pool: str) -> Finding:
        """Pointed at the lane whose reservation first goes past the pool's slots."""
        running = itertools.accumulate(lane.reserved for lane in self.lanes)
        index = next(i for i, total in enumerate(running) if total > local)
        shares = ", ".join(f"{x.name} {x.reserved}" for x in self.lanes if x.reserved)
        return Finding(
            ("lanes", index, "reserved"),
            f"reserved slots add up to {reserved} ({shares}) but the {pool!r} pool has only "
            f"{local} (its upstreams' max_concurrency); lower `reserved`",
        )

    def _starved_lanes(self, reserved: int, local: int) -> Iterator[Finding]:
        if not self.lanes or reserved < local:
            return
        for index, lane in enumerate(self.lanes):
            if reserved == local and not lane.reserved and not lane.offloadable:
                yield Finding(
                    ("lanes", index, "reserved"),
                    "every local slot is reserved for other lanes and this lane is not "
                    "offloadable: it can never run",
                    warning=True,
                )

    def _lane_models(self) -> Iterator[Finding]:
        for index, lane in enumerate(self.lanes):
            if lane.allowed_models is None:
                continue
            for glob, target in lane.model_map.items():
                if not any(fnmatchcase(target, allowed) for allowed in lane.allowed_models):
                    yield Finding(
                        ("lanes", index, "model_map", glob),
                        f"rewrites to {target!r}, which this lane's allowed_models does not "
                        "allow (allowed_models is checked after model_map)",
                    )

    def _client_lanes(self) -> Iterator[Finding]:
        lanes, fallback = self.lane_names(), self.default_lane()
        for index, client in enumerate(self.clients):
            where: Location = ("clients", index)
            for position, lane in enumerate(client.lanes or ()):
                if lane not in lanes:
                    yield Finding((*where, "lanes", position), self._unknown_lane(lane))
            allowed = client.lanes if client.lanes is not None else lanes
            if client.default_lane is not None:
                if client.default_lane not in lanes:
                    yield Finding((*where, "default_lane"), self._unknown_lane(client.default_lane))
                elif client.default_lane not in allowed:
                    yield Finding(
                        (*where, "default_lane"),
                        f"lane {client.default_lane!r} is not in this client's lanes "
                        f"({', '.join(allowed)})",
                    )
            elif fallback is not None and fallback not in allowed:
                yield Finding(
                    (*where, "lanes"),
                    f"requests no rule matches go to classify.default_lane {fallback!r}, which "
                    "this client may not use: add it to `lanes` or set the client's default_lane",
                )

    def _classify_lanes(self) -> Iterator[Finding]:
        lanes = self.lane_names()
        default = self.classify.default_lane
        if default is not None and default not in lanes:
            yield Finding(("classify", "default_lane"), self._unknown_lane(default))
        if self.default_lane() is None:
            yield Finding(
                ("classify", "default_lane"),
                f"required when there are several lanes: name the lane for requests no rule "
                f"matches (one of: {', '.join(dict.fromkeys(lanes))})",
                anchor=("lanes",),
            )
        for position, lane in enumerate(self.classify.anonymous_lanes):
            if lane not in lanes:
                yield Finding(("classify", "anonymous_lanes", position), self._unknown_lane(lane))
        for index, rule in enumerate(self.classify.rules):
            if rule.lane not in lanes:
                yield Finding(("classify", "rules", index, "lane"), self._unknown_lane(rule.lane))

    def _rule_clients(self) -> Iterator[Finding]:
        clients = {client.name: client for client in self.clients}
        known = ", ".join(clients) or "none: the policy has no clients section"
        for index, rule in enumerate(self.classify.rules):
            where: Location = ("classify", "rules", index)
            for position, name in enumerate(rule.match.client or ()):
                client = clients.get(name)
                if client is None:
                    yield Finding(
                        (*where, "match", "client", position),
                        f"unknown client {name!r} (clients: {known})" + did_you_mean(name, clients),
                    )
                elif client.lanes is not None and rule.lane not in client.lanes:
                    yield Finding(
                        (*where, "lane"),
                        f"client {name!r} may not use lane {rule.lane!r} (its lanes: "
                        f"{', '.join(client.lanes)}), so this rule never applies to it",
                    )

    def _unknown_lane(self, lane: str) -> str:
        if not self.lanes:
            return f"unknown lane {lane!r}: without a lanes section the only lane is 'default'"
        names = self.lane_names()
        return f"unknown lane {lane!r} (lanes: {', '.join(names)}){did_you_mean(lane, names)}"

    # -- the core's view --------------------------------------------------------------------

    def to_spec(self, source: str) -> Policy:
        """The frozen policy; call only when `findings()` holds no error."""
        lanes = tuple(lane.to_spec(self.reach(lane)) for lane in self.lanes)
        lanes = lanes or (implicit_lane(self.local_slots()),)
        names = tuple(lane.name for lane in lanes)
        return Policy(
            source=source,
            upstreams=tuple(u.to_spec() for u in self.upstreams),
            lanes=lanes,
            clients=tuple(client.to_spec(names) for client in self.clients),
            rules=self.classify.to_spec(),
            default_lane=self.default_lane() or names[0],
            anonymous_lanes=tuple(self.classify.anonymous_lanes),
            admin_key_ref=self.admin_key,
            models=self.models.to_spec(),
            offload=self.offload.to_spec() if self.offload else None,
            offload_sample_s=self.offload.sample_interval if self.offload else 5.0,
            slo=self.slo.to_spec() if self.slo else None,
            protection=self.slo.to_protection() if self.slo else Protection(),
        )


def _duplicates(
    where: Location, field: str, values: list[str | None], what: str
) -> Iterator[Finding]:
    first: dict[str, int] = {}
    for index, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            yield Finding(
                (*where, index, field),
                f"{what} {value!r} is used twice (first at {dotted((*where, first[value]))})",
            )
        else:
            first.setdefault(value, index)


def _slots(count: int) -> str:
    return f"{count} slot" if count == 1 else f"{count} slots"


def dotted(loc: Location) -> str:
    """A field path as operators read it: `lanes[0].model_map.*`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
