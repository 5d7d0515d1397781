"""A real HTTP/1.1 upstream on a loopback port that answers by script, for relay tests.

It sends exactly the bytes it is told, in the chunks it is told, and can misbehave on
purpose (close before headers, hang, abort mid-stream), so tests can check byte-for-byte
relaying and fault handling against a real socket. Runs its own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


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


class ScriptedUpstream:
    def __init__(self, script_for: Callable[[SeenRequest], Script]) -> None:
        self.script_for = script_for
        self.requests: list[SeenRequest] = []
        self.disconnects: list[float] = []  # time.monotonic() when a client left mid-answer
        # POSTs (inference, not the gateway's GET probes) being answered now, and the most ever.
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedUpstream:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports' connection_lost callbacks run now

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._serve_requests(reader, writer)
        finally:  # also when cancelled at shutdown (a hanging script)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            request = await _read_request(reader)
            if request is None:
                return
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
        finally:
            eof.cancel()
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
