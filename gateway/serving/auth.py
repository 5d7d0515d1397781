"""Who is calling: the client a request's API key belongs to, and admin checks.

With no clients in the policy every key is accepted (the demo, a single-user Mac): requests
then have no client and only lane rules apply. With clients, a missing or unknown key is a 401.
Keys are compared in constant time (`keys.key_matches`, sha256 digests + hmac.compare_digest),
and every client is checked, so timing reveals neither which client nor how much matched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from gateway.errors import Forbidden, Unauthorized
from gateway.policy.spec import ClientSpec, Policy
from gateway.serving.keys import key_matches

Headers = Iterable[tuple[bytes, bytes]]


def presented_key(headers: Headers) -> str | None:
    """The key from `Authorization: Bearer …` (OpenAI SDKs) or `x-api-key`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class Authenticator:
    def __init__(self, policy: Policy, env: Mapping[str, str] | None = None) -> None:
        self.clients = policy.clients
        self.admin_ref = policy.admin_key_ref
        self.env = env if env is not None else os.environ

    @property
    def open(self) -> bool:
        return not self.clients

    def client_for(self, headers: Headers) -> ClientSpec | None:
        if not self.clients:
            return None
        key = presented_key(headers)
        if key is None:
            raise Unauthorized(
                "this gateway needs an API key: send `Authorization: Bearer <key>` (or "
                "`x-api-key: <key>`, as Anthropic clients do) "
                "(ask the operator for one; `lanegate keys new NAME` makes them)"
            )
        found = None
        for client in self.clients:  # no early exit: the same work whoever matches
            if key_matches(key, client.key_ref, self.env) and found is None:
                found = client
        if found is None:
            raise Unauthorized(
                "the API key is not valid for this gateway; check it, or ask for one"
            )
        return found

    def check_admin(self, headers: Headers) -> None:
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("admin calls need the admin key: `Authorization: Bearer <key>`")
        if self.admin_ref is not None and key_matches(key, self.admin_ref, self.env):
            return
        if any(key_matches(key, c.key_ref, self.env) for c in self.clients):
            raise Forbidden(
                "a client key cannot make admin calls; use the admin key", code="admin_only"
            )
        raise Unauthorized("the admin key is not valid")
