"""A minimal, fast OpenAI-style upstream for overhead benchmarks (raw asyncio on uvloop).

The simulator models a Mac; this only answers, as cheaply as a server can, so that what a
benchmark measures is the gateway and not the upstream. Streams: wait `ttft`, then `chunks`
SSE chunks `interval` apart, then `[DONE]`. Non-streamed: one small chat.completion at once.

Run: python -m tests.bench.responder --port P [--ttft-ms 20 --interval-ms 5 --chunks 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop

_CHUNK = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
)
_LAST = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
    b'"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\n'
    b"data: [DONE]\n\n"
)
_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    },
    separators=(",", ":"),
).encode()
_JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_BODY)
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responder(asyncio.Protocol):
    def __init__(self, ttft: float, interval: float, chunks: int) -> None:
        self.ttft, self.interval, self.chunks = ttft, interval, chunks
        self.buffer = b""
        self.streams: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self._answer(body)

    def _answer(self, body: bytes) -> None:
        assert self.transport is not None
        if b'"stream":true' in body or b'"stream": true' in body:
            task = asyncio.ensure_future(self._stream())
            self.streams.add(task)
            task.add_done_callback(self.streams.discard)
        else:
            self.transport.write(_JSON_HEAD + _BODY)

    async def _stream(self) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(_SSE_HEAD)
        if self.ttft:
            await asyncio.sleep(self.ttft)
        for i in range(self.chunks):
            if i and self.interval:
                await asyncio.sleep(self.interval)
            if transport.is_closing():
                return
            transport.write(_chunked(_CHUNK))
        n = self.chunks
        transport.write(_chunked(_LAST % (n, n + 8)) + b"0\r\n\r\n")


async def serve(port: int, ttft: float, interval: float, chunks: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Responder(ttft, interval, chunks), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=32)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.ttft_ms / 1000, args.interval_ms / 1000, args.chunks))


if __name__ == "__main__":
    main()
