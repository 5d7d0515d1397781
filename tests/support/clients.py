"""SDK clients for a test, closed when it ends.

An `openai.OpenAI` client that is never closed keeps its pooled connection until the garbage
collector gets to it, and then the socket warns (a ResourceWarning, an error in this suite)
in whichever test happens to be running. The `openai_client` fixture (tests/conftest.py)
hands out clients and closes every one at teardown.
"""

from __future__ import annotations

from typing import Protocol

import openai


class Served(Protocol):
    """A server on loopback: a lanegate process (`Service`) or an in-process simulator."""

    @property
    def url(self) -> str: ...


class OpenAIClients:
    def __init__(self) -> None:
        self._made: list[openai.OpenAI] = []

    def __call__(self, service: Served, key: str = "any", **headers: str) -> openai.OpenAI:
        """A client of `service`'s /v1 with `key`, sending `headers` on every request."""
        client = openai.OpenAI(
            base_url=f"{service.url}/v1",
            api_key=key,
            max_retries=0,
            default_headers=headers or None,
        )
        self._made.append(client)
        return client

    def close(self) -> None:
        for client in self._made:
            client.close()
