"""A real HTTP/1.1 upstream on a loopback port that answers by script, for relay tests.

It sends exactly the bytes it is told, in the chunks it is told, and can misbehave on
purpose (close before headers, hang, abort mid-stream), so tests can check byte-for-byte
relaying and fault handling against a real socket. Runs its own asyncio loop in a thread
(`LoopServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.loop_server import LoopServer


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    chunks: list[bytes] = field(default_factory=list)
    status: int = 200
    content_type: str = "text/event-stream"
    delay_s: float = 0.0  # before each chunk
    before_headers: str = "respond"  # respond | close | hang
    after_chunks: str = "end"  # end | abort | hang
    headers: dict[str, str] = field(default_factory=dict)


class Scenario:
    """What the scripted upstream answers next: every request gets `script`, which a test sets
    before its request (the `scenario` and `upstream` fixtures of tests/conftest.py)."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def __call__(self, request: SeenRequest) -> Script:
        return self.script


class ScriptedUpstream(LoopServer):
    def __init__(self, script_for: Callable[[SeenRequest], Script]) -> None:
        super().__init__()
        self.script_for = script_for
        self.requests: list[SeenRequest] = []
        self.disconnects: list[float] = []  # time.monotonic() when a client left mid-answer
        # POSTs (inference, not the gateway's GET probes) being answered now, and the most ever.
        self.in_flight = 0
        self.max_in_flight = 0
        self.chunks_sent = 0  # chunks written, over all requests

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                counted = int(request.method == "POST")
                self.in_flight += counted
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    answered = await self._answer(self.script_for(request), reader, writer)
                finally:
                    self.in_flight -= counted
                if not answered:
                    return

    async def _answer(
        self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if script.before_headers == "close":
            return False
        if script.before_headers == "hang":
            await asyncio.sleep(3600)
        head = [
            f"HTTP/1.1 {script.status} X",
            f"content-type: {script.content_type}",
            "transfer-encoding: chunked",
        ]
        head += [f"{k}: {v}" for k, v in script.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        eof = asyncio.ensure_future(reader.read(1))
        try:
            for chunk in script.chunks:
                if script.delay_s:
                    await asyncio.wait({eof}, timeout=script.delay_s)
                if eof.done():  # the gateway dropped the connection mid-answer
                    self.disconnects.append(time.monotonic())
                    return False
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                self.chunks_sent += 1
        finally:
            eof.cancel()
            # Let the read end before the next request is read (one reader at a time).
            with contextlib.suppress(asyncio.CancelledError):
                await eof
        if script.after_chunks == "abort":
            writer.transport.abort()
            return False
        if script.after_chunks == "hang":
            await asyncio.sleep(3600)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> SeenRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return SeenRequest(method, path, headers, body)


async def left_mid_answer(upstream: ScriptedUpstream, polls: int = 400) -> bool:
    """Did a client leave this upstream mid-answer? (Its server thread records it: poll.) A
    record means the connection closed before the script's end, not drained into the pool."""
    for _ in range(polls):
        if upstream.disconnects:
            return True
        await asyncio.sleep(0.005)
    return bool(upstream.disconnects)
