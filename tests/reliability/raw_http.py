"""Raw HTTP/1.1 on a socket, and the contract for a gateway's answer, for hostile-input tests
(HTTP clients refuse to send much of what these tests send)."""

from __future__ import annotations

import json
import socket
from typing import Any


def assert_gateway_answer_ok(status: int, headers: Any, path: str, content: bytes) -> None:
    """The contract for any answer: see the module docstring."""
    if "x-lanegate-upstream" in headers:
        return  # the upstream's own answer, relayed
    assert status < 500, f"{status} from the gateway itself on {path}: {content[:300]!r}"
    if status >= 400:
        assert_error_shape(
            json.loads(content),
            ollama=path.startswith("/api/"),
            anthropic=path.startswith("/v1/messages"),
        )


def assert_error_shape(body: Any, *, ollama: bool, anthropic: bool = False) -> None:
    """gateway/errors.py's shapes (the OpenAIError / OllamaError / AnthropicError schemas)."""
    if anthropic:
        assert isinstance(body, dict) and set(body) == {"type", "error"}, body
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
        return
    assert isinstance(body, dict) and set(body) == {"error"}, body
    if ollama:
        assert isinstance(body["error"], str) and body["error"], body
        return
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}, body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str)
    assert all(error[k] is None or isinstance(error[k], str) for k in ("code", "param"))


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send one request (`connection: close`), read until the gateway closes. A reset is
    fine (the gateway answered, e.g. 413, before reading all of an oversized request)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)
