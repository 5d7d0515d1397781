"""Pure reload decisions: the diff of two policies, and when a watched file has settled."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from gateway.offload.controller import OffloadConfig
from gateway.policy.change import ANONYMOUS, FileWatch, access_changes, diff, who_may_call
from gateway.policy.spec import (
    ClientSpec,
    LaneSpec,
    Policy,
    Timeouts,
    UpstreamKind,
    UpstreamSpec,
)

LOCAL = UpstreamSpec("mac", "local", UpstreamKind.OLLAMA, "http://a:1", 4, Timeouts())
REMOTE = UpstreamSpec("studio", "remote", UpstreamKind.OLLAMA, "http://b:1", 8, Timeouts())
CHAT = LaneSpec("chat", priority=100, max_concurrency=4)
BATCH = LaneSpec("batch", priority=10, max_concurrency=2, offloadable=True)
OLD = Policy("p.yaml", (LOCAL,), (CHAT, BATCH), default_lane="chat")


def test_no_change() -> None:
    change = diff(OLD, replace(OLD))
    assert not change.lanes and not change.upstreams
    assert not (change.clients or change.rules or change.offload)
    assert change.summary() == "no change"


def test_lanes_and_upstreams_by_name() -> None:
    new = replace(
        OLD,
        upstreams=(replace(LOCAL, base_url="http://c:1"), REMOTE),
        lanes=(replace(CHAT, max_concurrency=2), LaneSpec("embed", 50, 1)),
    )
    change = diff(OLD, new)
    assert change.lanes.added == ("embed",)
    assert change.lanes.removed == ("batch",)
    assert change.lanes.changed == ("chat",)
    assert change.upstreams.added == ("studio",) and change.upstreams.changed == ("mac",)
    assert change.summary().startswith("lanes +embed -batch ~chat; upstreams +studio ~mac")


def test_offload_rebuilt_only_when_its_inputs_change() -> None:
    offloading = replace(OLD, upstreams=(LOCAL, REMOTE), offload=OffloadConfig())
    assert not diff(OLD, replace(OLD, lanes=(replace(CHAT, max_concurrency=1), BATCH))).offload
    assert diff(OLD, offloading).offload
    cap_only = replace(offloading, lanes=(replace(CHAT, max_concurrency=1), BATCH))
    assert not diff(offloading, cap_only).offload  # a cap is not an offload input
    moved = replace(offloading, lanes=(CHAT, replace(BATCH, offloadable=False)))
    assert diff(offloading, moved).offload


def test_file_watch_loads_a_settled_edit_once() -> None:
    watch = FileWatch(loaded="a")
    assert not watch.observe("a") and not watch.observe("a")  # unchanged
    assert not watch.observe("b")  # changed: wait one poll for the edit to settle
    assert watch.observe("b")  # settled: load it
    assert not watch.observe("b")  # loaded once, valid or not
    assert not watch.observe(None) and not watch.observe("b")  # missing mid-rename: nothing
    assert not watch.observe("c") and not watch.observe("d")  # still being written
    assert watch.observe("d")


@given(st.lists(st.sampled_from(["a", "b", "c", None]), max_size=60))
def test_file_watch_loads_only_settled_new_content(digests: list[str | None]) -> None:
    watch = FileWatch(loaded="a")
    previous: str | None = None
    loaded = "a"
    for digest in digests:
        load = watch.observe(digest)
        assert load == (digest is not None and digest == previous and digest != loaded)
        if load:
            assert digest is not None
            loaded = digest
        previous = digest


ALICE = ClientSpec("alice", "env:ALICE_KEY", ("chat",))


def test_adding_the_first_client_locks_out_anonymous_callers() -> None:
    open_ = replace(OLD, anonymous_lanes=("chat", "batch"))
    locked = replace(OLD, clients=(ALICE,))
    changes = access_changes(open_, locked)
    assert changes[0] == (
        f"{ANONYMOUS}: allowed without a key (lane 'chat' unless a rule says otherwise; "
        "X-Lane may pick: chat, batch) -> refused: every call needs a client key (401)"
    )
    assert changes[1] == "client 'alice': not in the policy -> lanes chat"
    # And back: each change read the other way.
    assert [c.split(" -> ")[0] for c in access_changes(locked, open_)] == [
        f"{ANONYMOUS}: refused: every call needs a client key (401)",
        "client 'alice': lanes chat",
    ]


def test_a_clients_lanes_cap_and_key() -> None:
    before = replace(OLD, clients=(ALICE,))
    wider = replace(ALICE, lanes=("chat", "batch"), max_concurrency=2, key_ref="env:NEW")
    changes = access_changes(before, replace(OLD, clients=(wider,)))
    assert changes == (
        "client 'alice': lanes chat -> lanes chat, batch, at most 2 at once",
        "client 'alice': key changed (the old key is refused)",
    )
    assert access_changes(before, replace(OLD, clients=()))[1] == (
        "client 'alice': lanes chat -> removed: its key is refused (401)"
    )


def test_nothing_about_access_no_change() -> None:
    more_lanes = replace(OLD, lanes=(*OLD.lanes, LaneSpec("bulk", priority=1, max_concurrency=1)))
    assert access_changes(OLD, more_lanes) == ()
    assert list(who_may_call(OLD)) == [ANONYMOUS]
