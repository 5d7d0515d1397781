"""`lanegate keys new NAME`, and the key references it produces."""

from __future__ import annotations

import argparse
import re

import pytest
import yaml

from gateway.commands import keys as keys_command
from gateway.policy import load_policy_text
from gateway.serving.keys import KEY_PREFIX, hash_key, is_key_ref, key_matches, new_key


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lanegate")
    keys_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def new(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(key, printed output) of `lanegate keys new NAME`."""
    assert run(["keys", "new", name]) == 0
    out = capsys.readouterr().out
    found = re.findall(r"^    (lg-\S+)$", out, flags=re.MULTILINE)
    assert len(found) == 1, out  # the key is printed exactly once
    return found[0], out


def test_keys_new_prints_key_once_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    key, out = new("alice", capsys)
    assert key.startswith(KEY_PREFIX)
    assert len(key) == len(KEY_PREFIX) + 43  # 32 random bytes, URL-safe base64
    assert f"    key: {hash_key(key)}\n" in out
    assert "  - name: alice\n" in out
    assert key_matches(key, hash_key(key), {})


def test_keys_new_snippet_pastes_into_a_policy(capsys: pytest.CaptureFixture[str]) -> None:
    key, out = new("ci-runner", capsys)
    snippet = out[out.index("clients:") :]
    assert yaml.safe_load(snippet)["clients"][0]["name"] == "ci-runner"
    policy = load_policy_text(
        "upstreams:\n  - {name: a, base_url: 'http://127.0.0.1:1'}\n" + snippet, "p.yaml"
    )
    (client,) = policy.clients
    assert client.lanes == ("default",)
    assert key_matches(key, client.key_ref, {})
    assert not key_matches(key + "x", client.key_ref, {})


def test_keys_are_fresh_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert new("a", capsys)[0] != new("a", capsys)[0]


@pytest.mark.parametrize("name", ["Alice", "a b", "_x", ""])
def test_keys_new_refuses_names_the_policy_would(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "new", name]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not a policy name" in captured.err


def test_keys_without_action_shows_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys"]) == 2
    assert "new" in capsys.readouterr().err


# -- gateway.keys ------------------------------------------------------------------------------


def test_hash_key_is_a_sha256_reference() -> None:
    ref = hash_key("lg-test")
    assert ref.startswith("sha256:") and ref == hash_key("lg-test")
    assert is_key_ref(ref) and len(ref) == len("sha256:") + 64
    assert new_key() != new_key()


@pytest.mark.parametrize(
    ("key", "ref", "env", "expected"),
    [
        ("secret", "env:KEY", {"KEY": "secret"}, True),
        ("secret", "env:KEY", {"KEY": "other"}, False),
        ("secret", "env:KEY", {}, False),  # unset variable matches nothing
        ("", "env:KEY", {"KEY": ""}, False),  # empty variable matches nothing, not ""
        ("secret", hash_key("secret"), {}, True),
        ("Secret", hash_key("secret"), {}, False),
        ("secret", "sha256:zz" + "0" * 62, {}, False),  # malformed: never matches
        ("secret", "sha256:" + "0" * 10, {}, False),
        ("secret", "secret", {}, False),  # a plain "reference" is not a reference
        ("\udcff", hash_key("x"), {}, False),  # undecodable header bytes never raise
    ],
)
def test_key_matches(key: str, ref: str, env: dict[str, str], expected: bool) -> None:
    assert key_matches(key, ref, env) is expected


@pytest.mark.parametrize(
    ("ref", "valid"),
    [
        ("env:LANEGATE_KEY", True),
        ("env:_x1", True),
        ("sha256:" + "a" * 64, True),
        ("sha256:" + "A" * 64, False),
        ("env:1X", False),
        ("sk-abc", False),
        ("lg-abc", False),
    ],
)
def test_is_key_ref(ref: str, valid: bool) -> None:
    assert is_key_ref(ref) is valid
