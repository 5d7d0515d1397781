"""API key references and their constant-time check (pure): what a policy may hold, what
matches it, and that nothing a client sends can make the check raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.serving.keys import KEY_PREFIX, hash_key, is_key_ref, key_matches, new_key


def test_a_key_matches_its_hash_and_nothing_else() -> None:
    key = new_key()
    ref = hash_key(key)
    assert ref.startswith("sha256:") and len(ref) == len("sha256:") + 64
    assert is_key_ref(ref) and not is_key_ref(key)
    assert key_matches(key, ref, {})
    assert not key_matches(key + "x", ref, {})
    assert not key_matches("", ref, {})


def test_new_keys_are_prefixed_and_distinct() -> None:
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(k.startswith(KEY_PREFIX) and len(k) > 40 for k in keys)


def test_an_env_reference_reads_the_given_environment_only() -> None:
    assert key_matches("s3cret", "env:T_KEY", {"T_KEY": "s3cret"})
    assert not key_matches("s3cret", "env:T_KEY", {"T_KEY": "other"})
    # An unset or empty variable matches nothing, not even an empty key.
    assert not key_matches("", "env:T_KEY", {})
    assert not key_matches("", "env:T_KEY", {"T_KEY": ""})


@pytest.mark.parametrize(
    "ref",
    [
        "hunter2",  # a key pasted where its reference belongs
        "env:1BAD",
        "env:",
        "sha256:" + "A" * 64,  # upper-case hex is not what `lanegate keys new` writes
        "sha256:" + "a" * 63,
        "sha256:" + "g" * 64,
    ],
)
def test_malformed_references_are_refused(ref: str) -> None:
    assert not is_key_ref(ref)  # the policy loader's check: such a file does not load


@pytest.mark.parametrize("ref", ["hunter2", "sha256:" + "a" * 63, "sha256:" + "g" * 64, "x:y"])
def test_a_reference_that_is_no_digest_matches_nothing(ref: str) -> None:
    assert not key_matches("hunter2", ref, {"hunter2": "hunter2"})


@given(st.text(), st.text())
def test_any_presented_key_is_checked_without_raising(key: str, other: str) -> None:
    # Header values decoded with surrogateescape reach the check too: it must not raise.
    ref = hash_key(key)
    assert key_matches(key, ref, {})
    assert key_matches(other, ref, {}) == (other == key)
    assert not key_matches(other + "\udcff", ref, {}) or other + "\udcff" == key
