"""Client and admin API keys: references in the policy, constant-time checks. Pure.

The policy never holds a key, only a reference to one: `sha256:<64 hex>` (the digest of the
key, made by `lanegate keys new NAME`) or `env:VAR` (the key is in that environment variable
of the gateway process). The environment comes in as a mapping, so this module reads nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

KEY_PREFIX = "lg-"
KEY_REF_PATTERN = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|sha256:[0-9a-f]{64})$")
KEY_REF_HELP = (
    "write sha256:<64 hex digits> (run `lanegate keys new NAME` to make a key and its hash) "
    "or env:VARIABLE_NAME (the key is read from that environment variable)"
)


def new_key() -> str:
    """A fresh client key: `lg-` and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The reference to paste into the policy for this key: `sha256:<hex digest>`."""
    return "sha256:" + _digest(key).hex()


def is_key_ref(value: str) -> bool:
    return KEY_REF_PATTERN.match(value) is not None


def key_matches(key: str, ref: str, env: Mapping[str, str]) -> bool:
    """Does the presented `key` match the policy's `ref`? Constant time in the key's content.

    Both sides are compared as sha256 digests, so neither the length nor a prefix of the
    expected key leaks through timing. An `env:` reference to an unset or empty variable
    matches nothing.
    """
    expected = _expected_digest(ref, env)
    if expected is None:
        return False
    return hmac.compare_digest(_digest(key), expected)


def _expected_digest(ref: str, env: Mapping[str, str]) -> bytes | None:
    if ref.startswith("sha256:"):
        try:
            digest = bytes.fromhex(ref.removeprefix("sha256:"))
        except ValueError:
            return None
        return digest if len(digest) == 32 else None
    if ref.startswith("env:"):
        secret = env.get(ref.removeprefix("env:"), "")
        return _digest(secret) if secret else None
    return None


def _digest(text: str) -> bytes:
    # surrogatepass: a header decoded with errors never makes the check raise
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
