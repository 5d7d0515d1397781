"""The lean upstream client against real loopback servers, on asyncio's loop and on uvloop.

Two servers: `ScriptedUpstream` (chunked streams, delays, faults) and `Plain` below, a raw
asyncio server in the test's own loop for what the scripted one cannot do: content-length
and close-delimited bodies, counting TCP connections, closing idle ones, HEAD, 204, garbage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.policy.spec import Timeouts, UpstreamKind, UpstreamSpec
from gateway.upstreams.client import UPSTREAM_ERRORS, UpstreamResponse, create_client
from gateway.upstreams.http11 import (
    LeanUpstream,
    UpstreamConnectFailed,
    UpstreamDisconnected,
    UpstreamProtocolError,
)
from tests.support.processes import free_port
from tests.support.scripted_upstream import Script, ScriptedUpstream, left_mid_answer

Runner = Callable[[Coroutine[Any, Any, None]], None]
JSON = {"content-type": "application/json"}


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return uvloop.run if request.param == "uvloop" else asyncio.run  # type: ignore[return-value]


def _spec(url: str, name: str = "up", key_ref: str | None = None) -> UpstreamSpec:
    return UpstreamSpec(
        name, "local", UpstreamKind.OPENAI, url, 4, Timeouts(connect_s=1.0), api_key_ref=key_ref
    )


async def _read(response: UpstreamResponse) -> list[bytes]:
    try:
        return [chunk async for chunk in response.chunks()]
    finally:
        await response.aclose()


class Plain:
    """A loopback HTTP/1.1 server in the running loop; `answer` writes each reply itself and
    returns whether to keep the connection open for the next request."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]) -> None:
        self.answer = answer
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Plain:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in self._handlers:  # connections kept alive: closed before the loop is
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports' connection_lost callbacks run now

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                if not await self.answer(head, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            self._handlers.discard(handler)
            writer.close()


def _reply(raw: bytes, keep: bool = True) -> Callable[[bytes, asyncio.StreamWriter], Any]:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        return keep

    return answer


OK = b"HTTP/1.1 200 OK\r\ncontent-type: Application/JSON\r\ncontent-length: 2\r\n\r\nok"


# -- bodies ---------------------------------------------------------------------------------


def test_chunked_stream_arrives_chunk_by_chunk(run: Runner) -> None:
    chunks = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    script = Script(chunks=chunks, delay_s=0.02, headers={"X-Custom": "Yes"})
    with ScriptedUpstream(lambda request: script) as upstream:

        async def main() -> None:
            client = LeanUpstream(_spec(upstream.url))
            response = await client.open("POST", "/v1/chat/completions", b"{}", JSON)
            assert response.status == 200
            assert response.content_type == b"text/event-stream"
            assert (b"X-Custom", b"Yes") in response.raw_headers  # as received
            assert await _read(response) == chunks  # one chunk per arrival, none merged
            await client.aclose()

        run(main())


def test_request_head_and_body_as_sent(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "sk-upstream")
    with ScriptedUpstream(lambda request: Script(chunks=[b"x"])) as upstream:

        async def main() -> None:
            client = create_client(_spec(upstream.url, key_ref="env:UP_KEY"), "lean")
            headers = {"x-request-id": "r1", "content-type": "application/json"}
            await _read(await client.open("POST", "/v1/models/a b%", b'{"a":1}', headers))
            await _read(await client.open("GET", "/v1/models", None, {}))
            await client.aclose()

        run(main())
        post, get = upstream.requests
    assert post.path == "/v1/models/a%20b%25"  # ASGI paths come decoded: encoded again
    assert post.body == b'{"a":1}' and post.headers["content-length"] == "7"
    assert post.headers["host"] == f"127.0.0.1:{upstream.port}"
    assert post.headers["accept-encoding"] == "identity"
    assert post.headers["authorization"] == "Bearer sk-upstream"
    assert post.headers["x-request-id"] == "r1"
    assert get.method == "GET" and "content-length" not in get.headers


def test_content_length_body_over_several_writes(run: Runner) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"world")
        return True

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url))
            for _ in range(3):
                assert b"".join(await _read(await client.open("GET", "/", None, {}))) == (
                    b"helloworld"
                )
            assert server.connections == 1
            await client.aclose()

    run(main())


def test_close_delimited_body(run: Runner) -> None:
    async def main() -> None:
        async with Plain(_reply(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", keep=False)) as server:
            client = LeanUpstream(_spec(server.url))
            for _ in range(2):
                response = await client.open("GET", "/", None, {})
                assert b"".join(await _read(response)) == b"until the end"
            assert server.connections == 2  # the end of the body was the end of the connection
            await client.aclose()

    run(main())


def test_content_type_is_lowercased_and_1xx_is_skipped(run: Runner) -> None:
    async def main() -> None:
        async with Plain(_reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)) as server:
            client = LeanUpstream(_spec(server.url))
            response = await client.open("POST", "/v1/embeddings", b"{}", JSON)
            assert (response.status, response.content_type) == (200, b"application/json")
            assert await _read(response) == [b"ok"]
            await client.aclose()

    run(main())


# -- keep-alive and the pool ----------------------------------------------------------------


def test_one_connection_serves_sequential_requests(run: Runner) -> None:
    async def main() -> None:
        async with Plain(_reply(OK)) as server:
            client = LeanUpstream(_spec(server.url))
            for _ in range(20):
                assert await _read(await client.open("POST", "/v1/x", b"{}", JSON)) == [b"ok"]
            assert server.connections == 1 and len(server.heads) == 20
            await client.aclose()

    run(main())


def test_head_and_204_leave_the_connection_reusable(run: Runner) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if head.startswith(b"HEAD"):  # announces a body it does not send, as HEAD answers do
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        elif b" /nothing " in head:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(OK)
        return True

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url))
            for method, path, body in [("HEAD", "/", []), ("GET", "/", [b"ok"])] * 2 + [
                ("GET", "/nothing", []),
                ("GET", "/", [b"ok"]),
            ]:
                response = await client.open(method, path, None, {})
                assert response.status in (200, 204)
                assert await _read(response) == body
            assert server.connections == 1
            await client.aclose()

    run(main())


def test_idle_connection_closed_by_server_is_dropped(run: Runner) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)  # a short keep-alive timeout, as uvicorn's is 5 s
        return False

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url))
            for _ in range(3):
                assert await _read(await client.open("GET", "/", None, {})) == [b"ok"]
                await asyncio.sleep(0.15)
            assert server.connections == 3 and len(server.heads) == 3  # never sent into a dead one
            await client.aclose()

    run(main())


def test_stale_connection_is_resent_once_on_a_fresh_one(run: Runner) -> None:
    served: dict[int, int] = {}

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        served[id(writer)] = served.get(id(writer), 0) + 1
        if served[id(writer)] == 2:
            return False  # closed just as our reuse arrived: it never answers this one
        writer.write(OK)
        return True

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url))
            assert await _read(await client.open("GET", "/", None, {})) == [b"ok"]
            assert await _read(await client.open("POST", "/v1/x", b"{}", JSON)) == [b"ok"]
            assert server.connections == 2 and len(server.heads) == 3
            await client.aclose()

    run(main())


def test_no_resend_on_a_fresh_connection_or_after_response_bytes(run: Runner) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/partial" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
        return False

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url, name="flaky"))
            with pytest.raises(UpstreamDisconnected, match=r"flaky .* before sending a response"):
                await client.open("GET", "/", None, {})
            with pytest.raises(UpstreamDisconnected, match="middle of the response headers"):
                await client.open("GET", "/partial", None, {})
            assert len(server.heads) == 2  # each sent once
            await client.aclose()

    run(main())


def test_concurrent_requests_share_a_capped_pool(run: Runner) -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.002)
        writer.write(OK)
        return True

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url), max_connections=32)

            async def one() -> list[bytes]:
                return await _read(await client.open("POST", "/v1/x", b"{}", JSON))

            results = await asyncio.gather(*(one() for _ in range(200)))
            assert results == [[b"ok"]] * 200
            assert server.connections <= 32 and server.most_open <= 32
            # A waiter that gives up does not leak its turn or a connection.
            blockers = [await client.open("GET", "/", None, {}) for _ in range(32)]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.open("GET", "/", None, {}), 0.05)
            await asyncio.gather(*(_read(response) for response in blockers))
            assert await one() == [b"ok"]
            await client.aclose()

    run(main())


# -- failures -------------------------------------------------------------------------------


def test_connection_refused_names_the_upstream(run: Runner) -> None:
    async def main() -> None:
        port = free_port()
        client = LeanUpstream(_spec(f"http://127.0.0.1:{port}", name="dead"))
        with pytest.raises(UpstreamConnectFailed, match=r"upstream dead: cannot connect") as info:
            await client.open("GET", "/", None, {})
        assert isinstance(info.value, ConnectionError) and isinstance(info.value, UPSTREAM_ERRORS)
        # By its policy name only: the message may reach a client (issue 18).
        assert "127.0.0.1" not in str(info.value) and str(port) not in str(info.value)
        await client.aclose()

    run(main())


def test_malformed_status_line(run: Runner) -> None:
    async def main() -> None:
        async with Plain(_reply(b"HTTP/1.1 abc Nope\r\n\r\n")) as server:
            client = LeanUpstream(_spec(server.url, name="odd"))
            with pytest.raises(UpstreamProtocolError, match=r"upstream odd .*malformed response"):
                await client.open("GET", "/", None, {})
            await client.aclose()

    run(main())


def test_eof_mid_body_raises_after_the_bytes_that_came(run: Runner) -> None:
    script = Script(chunks=[b"data: a\n\n", b"data: b\n\n"], after_chunks="abort")
    with ScriptedUpstream(lambda request: script) as upstream:

        async def main() -> None:
            client = LeanUpstream(_spec(upstream.url))
            response = await client.open("POST", "/v1/chat/completions", b"{}", JSON)
            received = []
            with pytest.raises(UpstreamDisconnected, match="middle of the response body"):
                async for chunk in response.chunks():
                    received.append(chunk)
            await response.aclose()
            assert b"".join(received) == b"data: a\n\ndata: b\n\n"
            await client.aclose()

        run(main())


def test_truncated_content_length_body_is_an_error(run: Runner) -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"
        async with Plain(_reply(raw, keep=False)) as server:
            client = LeanUpstream(_spec(server.url))
            response = await client.open("GET", "/", None, {})
            with pytest.raises(UpstreamDisconnected):
                await _read(response)
            await client.aclose()

    run(main())


# -- cancellation and flow control ----------------------------------------------------------


def test_aclose_mid_stream_disconnects_the_upstream_at_once(run: Runner) -> None:
    script = Script(chunks=[b"data: tok\n\n"] * 100, delay_s=0.05)
    with ScriptedUpstream(lambda request: script) as upstream:

        async def main() -> None:
            client = LeanUpstream(_spec(upstream.url))
            response = await client.open("POST", "/v1/chat/completions", b"{}", JSON)
            stream = response.chunks()
            await anext(stream)
            await anext(stream)
            await response.aclose()
            assert await left_mid_answer(upstream)  # closed mid-answer, not drained to the pool
            await client.aclose()

        run(main())


def test_cancel_while_waiting_for_headers_frees_the_connection(run: Runner) -> None:
    replies = iter([Script(before_headers="hang"), Script(chunks=[b"x"])])
    with ScriptedUpstream(lambda request: next(replies)) as upstream:

        async def main() -> None:
            client = LeanUpstream(_spec(upstream.url), max_connections=1)
            with pytest.raises(TimeoutError):  # the relay's first-byte timer does this
                await asyncio.wait_for(client.open("GET", "/", None, {}), 0.1)
            assert await _read(await client.open("GET", "/", None, {})) == [b"x"]
            await client.aclose()

        run(main())


def test_a_reader_that_stops_pauses_the_upstream(run: Runner) -> None:
    block = b"x" * 65536
    total = 50 * 1024 * 1024
    written = [0]

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        written[0] = 0
        while written[0] < total:
            writer.write(block)
            written[0] += len(block)
            await writer.drain()
        return True

    async def main() -> None:
        async with Plain(answer) as server:
            client = LeanUpstream(_spec(server.url))
            response = await client.open("GET", "/big", None, {})
            stream = response.chunks()
            received = len(await anext(stream))
            await asyncio.sleep(0.5)  # the consumer stalls; the upstream keeps trying to send
            conn = response._conn  # type: ignore[attr-defined]
            assert conn.paused and conn.buffered < 1024 * 1024
            assert written[0] < total / 2  # the server is held back by TCP, not buffered here
            async for chunk in stream:
                received += len(chunk)
            assert received == total
            await response.aclose()
            assert await _read(await client.open("GET", "/big", None, {})) != []
            assert server.connections == 1
            await client.aclose()

    run(main())
