"""Closing a response before its end closes the connection, with every upstream client.

Preemption (and a client leaving) relies on it: an engine stops generating when its HTTP
connection closes (llama.cpp's server cancels the task), so a cut non-streamed request must
not go back to the keep-alive pool to be drained. Checked against a real socket: the scripted
upstream sees the disconnect.
"""

from __future__ import annotations

import pytest

from gateway.policy.spec import Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.client import ClientKind, create_client
from tests.support.scripted_upstream import Script, ScriptedUpstream, left_mid_answer

# A non-streamed JSON answer that takes 5 s to arrive, in pieces.
SLOW_JSON = Script(
    [b'{"x": "' + b"a" * 10, *[b"a" * 10] * 99, b'"}'],
    content_type="application/json",
    delay_s=0.05,
)


@pytest.mark.parametrize("kind", ["lean", "aiohttp", "httpx"])
async def test_closing_an_unfinished_answer_disconnects_the_upstream(kind: ClientKind) -> None:
    with ScriptedUpstream(lambda request: SLOW_JSON) as upstream:
        spec = UpstreamSpec("up", "local", UpstreamKind.OPENAI, upstream.url, 4, Timeouts())
        client = create_client(spec, kind)
        try:
            response = await client.open("POST", "/v1/chat/completions", b"{}", {})
            chunks = response.chunks()
            await anext(chunks)  # part of the body: the answer is under way
            await response.aclose()
            assert await left_mid_answer(upstream), f"{kind}: the connection went to the pool"
        finally:
            await client.aclose()
