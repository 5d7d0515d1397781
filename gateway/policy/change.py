"""Pure reload decisions: what a new policy changes, and when a watched file has settled.

`diff` compares two validated policies by name, so the reload shell knows which upstream
clients to open or retire and whether the offload loop must be rebuilt, and can log one line
saying what changed. `FileWatch` decides, from successive content digests of the policy file,
when an edit is complete enough to load. Must not: read files, hash, or know about asyncio.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway.policy.spec import LaneSpec, Policy, UpstreamSpec

Spec = TypeVar("Spec", LaneSpec, UpstreamSpec)


@dataclass(frozen=True, slots=True)
class Changes:
    """Names added, removed and changed (same name, different settings)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self, what: str) -> str:
        parts = [
            f"{sign}{', '.join(names)}"
            for sign, names in (("+", self.added), ("-", self.removed), ("~", self.changed))
            if names
        ]
        return f"{what} {' '.join(parts)}" if parts else ""


@dataclass(frozen=True, slots=True)
class PolicyChange:
    lanes: Changes
    upstreams: Changes
    clients: bool  # keys, lanes or caps of clients differ
    rules: bool  # classification rules or defaults differ
    offload: bool  # the offload loop must be rebuilt (its config, pools or lanes differ)

    def summary(self) -> str:
        parts = [self.lanes.describe("lanes"), self.upstreams.describe("upstreams")]
        parts += ["clients changed"] * self.clients + ["classification changed"] * self.rules
        parts += ["offload rebuilt"] * self.offload
        return "; ".join(part for part in parts if part) or "no change"


def diff(old: Policy, new: Policy) -> PolicyChange:
    lanes = _changes(old.lanes, new.lanes)
    upstreams = _changes(old.upstreams, new.upstreams)
    rules = (old.rules, old.default_lane, old.anonymous_lanes, old.models) != (
        new.rules,
        new.default_lane,
        new.anonymous_lanes,
        new.models,
    )
    return PolicyChange(
        lanes=lanes,
        upstreams=upstreams,
        clients=(old.clients, old.admin_key_ref) != (new.clients, new.admin_key_ref),
        rules=rules,
        offload=_offload_differs(old, new),
    )


def _changes(old: Iterable[Spec], new: Iterable[Spec]) -> Changes:
    before: Mapping[str, Spec] = {spec.name: spec for spec in old}
    after: Mapping[str, Spec] = {spec.name: spec for spec in new}
    return Changes(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(name for name in after if name in before and after[name] != before[name]),
    )


def _offload_differs(old: Policy, new: Policy) -> bool:
    """The offload loop caches its config, the local and remote pools and which lane is
    interactive (by priority and offloadable); any of those changing means a rebuild."""
    if old.offload is None and new.offload is None:
        return False

    def inputs(policy: Policy) -> tuple[object, ...]:
        lanes = tuple((lane.name, lane.priority, lane.offloadable) for lane in policy.lanes)
        return (policy.offload, policy.offload_sample_s, policy.upstreams, lanes)

    return inputs(old) != inputs(new)


@dataclass(slots=True)
class FileWatch:
    """Successive digests of a watched file → "load it now" once an edit has settled.

    An editor may write a file in several steps (truncate, write, rename), so a new digest is
    loaded only when the next poll sees it again. A content is loaded once, valid or not: an
    invalid file is not retried every poll, only when it changes again. A missing file (mid
    rename) is ignored.
    """

    loaded: str | None  # digest of the content last loaded (or refused)
    seen: str | None = None  # digest at the previous poll

    def observe(self, digest: str | None) -> bool:
        settled = digest is not None and digest == self.seen and digest != self.loaded
        self.seen = digest
        if settled:
            self.loaded = digest
        return settled


# -- who may call ------------------------------------------------------------------------------
ANONYMOUS = "anonymous callers"


def who_may_call(policy: Policy) -> dict[str, str]:
    """Each kind of caller (anonymous, each client by name) → what it may do, in words.

    With no clients every caller is let in without a key (`serving.auth`); with clients, a call
    without a valid client key is a 401, whatever `anonymous_lanes` says."""
    if not policy.clients:
        picks = ", ".join(policy.anonymous_lanes) or "none"
        return {
            ANONYMOUS: f"allowed without a key (lane {policy.default_lane!r} unless a rule "
            f"says otherwise; X-Lane may pick: {picks})"
        }
    access = {ANONYMOUS: "refused: every call needs a client key (401)"}
    for client in policy.clients:
        text = f"lanes {', '.join(client.lanes)}"
        if client.default_lane is not None:
            text += f", default {client.default_lane}"
        if client.max_concurrency is not None:
            text += f", at most {client.max_concurrency} at once"
        access[f"client {client.name!r}"] = text
    return access


def access_changes(old: Policy, new: Policy) -> tuple[str, ...]:
    """`who: before -> after` for every caller whose access differs, and key rotations."""
    before, after = who_may_call(old), who_may_call(new)
    changes = []
    for who in dict.fromkeys([*before, *after]):
        was = before.get(who, "not in the policy")
        now = after.get(who, "removed: its key is refused (401)")
        if was != now:
            changes.append(f"{who}: {was} -> {now}")
    old_keys = {client.name: client.key_ref for client in old.clients}
    for client in new.clients:
        if old_keys.get(client.name, client.key_ref) != client.key_ref:
            changes.append(f"client {client.name!r}: key changed (the old key is refused)")
    return tuple(changes)
