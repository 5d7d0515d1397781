"""Secure defaults over real `lanegate serve` processes (docs/security.md).

Refusing to listen beyond loopback without keys, keys and the admin key, no request-chosen
upstream host (SSRF), what of the client's headers reaches an upstream, header count / size /
time limits and the body timeout, CORS, TLS with a self-signed certificate, and no prompt in
any file the gateway writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.serving.keys import hash_key
from tests.support.policies import policy_text, write_policy
from tests.support.processes import REPO, Service, free_port, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

CLIENT_KEY = "lg-security-client-key"
ADMIN_KEY = "lg-security-admin-key"
UPSTREAM_KEY = "upstream-own-key"
ORIGIN = "https://chat.example.lan"
MARKER = "violet-pangolin-7731"  # a prompt that must never be written anywhere
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "tiny",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CLIENTS = f"""
clients:
  - name: tester
    key: {hash_key(CLIENT_KEY)}
admin_key: env:T_ADMIN_KEY
"""


def _answer(request: SeenRequest) -> Script:
    # The upstream tries to open CORS itself: the gateway must not pass that on.
    return Script(
        chunks=[json.dumps(COMPLETION).encode()],
        content_type="application/json",
        headers={"access-control-allow-origin": "*"},
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(_answer) as server:
        yield server


@pytest.fixture(scope="module")
def evil() -> Iterator[ScriptedUpstream]:
    """A host no request may make the gateway contact."""
    with ScriptedUpstream(_answer) as server:
        yield server


GATEWAY_UPSTREAM = "upstream"
GATEWAY_POLICY = policy_text(
    [{"name": "local", "kind": "openai", "base_url": "{url}", "api_key": "env:T_UP"}], CLIENTS
)
GATEWAY_ENV = {
    "T_ADMIN_KEY": ADMIN_KEY,
    "T_UP": UPSTREAM_KEY,
    "LANEGATE_CORS_ORIGINS": f"{ORIGIN}, http://localhost:3000",
    "LANEGATE_MAX_HEADER_COUNT": "40",
    "LANEGATE_MAX_HEADER_BYTES": "8192",
    "LANEGATE_HEADER_TIMEOUT": "0.5",
    "LANEGATE_BODY_TIMEOUT": "0.5",
}


def _auth(key: str = CLIENT_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _chat(content: str = "hi", model: str = "tiny") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _raw(port: int, data: bytes, *, wait_s: float = 10.0) -> bytes:
    """Send raw bytes, return everything the gateway answers until it closes (or wait_s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def _status_and_body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head.split(b" ")[1]), json.loads(body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]
    return out


# -- listening beyond loopback ---------------------------------------------------------------


def _serve_process(policy: Path, *extra: str, env: dict[str, str] | None = None) -> tuple:
    port = free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--policy", str(policy)]
    process = subprocess.Popen(
        [*command, "--port", str(port), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LANEGATE_STATE_DIR": str(policy.parent / "state"), **(env or {})},
    )
    return process, port


def _wait_up(url: str, process: subprocess.Popen[bytes], **kwargs: object) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            return httpx.get(url, timeout=1, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=10)  # reads the pipe to its end and closes it
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_no_clients_on_all_interfaces_refuses_to_start(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    spec = {"name": "local", "kind": "openai", "base_url": upstream.url}
    policy = write_policy(tmp_path / "open.yaml", [spec])
    process, port = _serve_process(policy, "--host", "0.0.0.0")
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    message = output.decode()
    assert "refusing to listen on 0.0.0.0" in message
    assert "--allow-unauthenticated" in message and "lanegate keys new" in message
    with pytest.raises(OSError):  # nothing was bound
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_allow_unauthenticated_is_an_explicit_choice(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    spec = {"name": "local", "kind": "openai", "base_url": upstream.url}
    policy = write_policy(tmp_path / "open.yaml", [spec])
    process, port = _serve_process(policy, "--host", "0.0.0.0", "--allow-unauthenticated")
    try:
        assert _wait_up(f"http://127.0.0.1:{port}/healthz", process).status_code == 200
    finally:
        _stop(process)


def test_with_clients_it_listens_beyond_loopback(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    spec = {"name": "local", "kind": "openai", "base_url": upstream.url}
    policy = write_policy(tmp_path / "keyed.yaml", [spec], CLIENTS)
    process, port = _serve_process(policy, "--host", "0.0.0.0", env={"T_ADMIN_KEY": "x"})
    try:
        response = _wait_up(f"http://127.0.0.1:{port}/v1/models", process)
        assert response.status_code == 401
    finally:
        _stop(process)


def test_half_a_tls_configuration_is_refused(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", [{"name": "l", "base_url": upstream.url}])
    process, _ = _serve_process(policy, env={"LANEGATE_TLS_CERTFILE": str(policy)})
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert b"LANEGATE_TLS_CERTFILE and LANEGATE_TLS_KEYFILE" in output


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, _auth("lg-wrong"), {"authorization": "Basic eDp5"}])
def test_a_missing_or_unknown_key_is_a_401(gateway: Service, headers: dict[str, str]) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=_chat(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert error["message"]


def test_admin_calls_need_the_admin_key(gateway: Service) -> None:
    url = f"{gateway.url}/admin/offload"
    assert httpx.get(url).status_code == 401
    client = httpx.get(url, headers=_auth())
    assert (client.status_code, client.json()["error"]["code"]) == (403, "admin_only")
    assert httpx.get(url, headers=_auth("lg-wrong")).status_code == 401
    admin = httpx.get(url, headers=_auth(ADMIN_KEY))  # past auth: this policy has no offload
    assert (admin.status_code, admin.json()["error"]["code"]) == (404, "no_offload")


# -- no request-chosen upstream (SSRF) ------------------------------------------------------


def test_absolute_form_targets_and_host_headers_never_choose_the_upstream(
    gateway: Service, upstream: ScriptedUpstream, evil: ScriptedUpstream
) -> None:
    body = json.dumps(_chat()).encode()
    evil_host = f"127.0.0.1:{evil.port}"
    head = (
        f"POST http://{evil_host}/v1/chat/completions HTTP/1.1\r\nHost: {evil_host}\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-Host: {evil_host}\r\nForwarded: host={evil_host}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    before = len(upstream.requests)
    status, answer = _status_and_body(_raw(gateway.port, head.encode() + body))
    assert status == 200 and answer["choices"]
    seen = upstream.requests[before:]
    assert [(r.method, r.path) for r in seen] == [("POST", "/v1/chat/completions")]
    assert seen[0].headers["host"] == upstream.url.removeprefix("http://")
    assert evil.requests == []


@pytest.mark.parametrize(
    "model",
    ["http://127.0.0.1:{evil}/v1/chat/completions", "//127.0.0.1:{evil}/x", "../../../api/pull"],
)
def test_a_url_in_the_model_is_only_a_model_name(
    gateway: Service, upstream: ScriptedUpstream, evil: ScriptedUpstream, model: str
) -> None:
    model = model.format(evil=evil.port)
    before = len(upstream.requests)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=_chat(model=model), headers=_auth()
    )
    assert response.status_code == 200
    seen = upstream.requests[before:]
    assert [r.path for r in seen] == ["/v1/chat/completions"]
    assert json.loads(seen[0].body)["model"] == model  # passed on as data, nothing more
    assert evil.requests == []


@pytest.mark.parametrize(
    "path",
    ["/v1/models/../../api/pull", "/v1/models/%2e%2e/%2e%2e/api/delete", "/v1/models/./x"],
)
def test_dot_segments_never_reach_an_upstream(
    gateway: Service, upstream: ScriptedUpstream, path: str
) -> None:
    before = len(upstream.requests)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
    status, answer = _status_and_body(
        _raw(gateway.port, request.encode() + b"Connection: close\r\n\r\n")
    )
    assert status == 404 and answer["error"]["type"] == "invalid_request_error"
    assert upstream.requests[before:] == []


def test_client_credentials_and_hop_by_hop_headers_stay_at_the_gateway(
    gateway: Service, upstream: ScriptedUpstream
) -> None:
    before = len(upstream.requests)
    headers = {
        **_auth(),
        "x-api-key": "client-second-key",
        "cookie": "session=abc",
        "proxy-authorization": "Basic eDp5",
        "connection": "keep-alive, x-private",
        "x-private": "hop",
        "te": "trailers",
        "x-forwarded-for": "10.6.6.6",
        "openai-organization": "org-client",
    }
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=_chat(), headers=headers)
    assert response.status_code == 200
    (seen,) = upstream.requests[before:]
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # its own, from the policy
    leaked = set(headers) - {"authorization"}
    assert leaked.isdisjoint(seen.headers), leaked & set(seen.headers)
    assert CLIENT_KEY not in json.dumps(seen.headers)


# -- header and body limits ------------------------------------------------------------------


def test_too_many_headers_is_a_431_before_the_app(gateway: Service) -> None:
    many = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(41))
    request = f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{many}\r\n"
    status, body = _status_and_body(_raw(gateway.port, request.encode()))
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"
    assert "LANEGATE_MAX_HEADER_COUNT" in body["error"]["message"]


def test_oversized_headers_are_a_431_and_normal_ones_pass(gateway: Service) -> None:
    big = httpx.get(f"{gateway.url}/v1/models", headers={"x-big": "a" * 9000, **_auth()})
    assert big.status_code == 431 and big.json()["error"]["type"] == "invalid_request_error"
    long_url = httpx.get(f"{gateway.url}/v1/models?q={'b' * 9000}", headers=_auth())
    assert long_url.status_code == 431
    fine = {f"x-filler-{i}": "v" * 100 for i in range(30)}
    assert httpx.get(f"{gateway.url}/healthz", headers=fine).status_code == 200


def test_headers_sent_too_slowly_are_a_408(gateway: Service) -> None:
    status, body = _status_and_body(_raw(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHo"))
    assert status == 408 and body["error"]["code"] == "header_timeout"


def test_an_idle_connection_that_never_sends_is_closed(gateway: Service) -> None:
    answer = _raw(gateway.port, b"")
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_body_sent_too_slowly_is_a_408(gateway: Service) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    status, body = _status_and_body(_raw(gateway.port, head.encode() + b'{"model": "ti'))
    assert status == 408
    error = body["error"]
    assert error["code"] == "body_timeout" and "LANEGATE_BODY_TIMEOUT" in error["message"]


# -- CORS ------------------------------------------------------------------------------------


def _preflight(gateway: Service, origin: str) -> httpx.Response:
    return httpx.options(
        f"{gateway.url}/v1/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )


def test_preflight_from_an_allowed_origin(gateway: Service) -> None:
    response = _preflight(gateway, ORIGIN)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"]
    assert allowed == "authorization, content-type, x-stainless-os"
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_from_another_origin_gets_no_cors_headers(gateway: Service) -> None:
    response = _preflight(gateway, "https://evil.example")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cors_origin_not_allowed"
    assert not any(name.startswith("access-control-") for name in response.headers)


def test_responses_name_only_allowed_origins(gateway: Service) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    allowed = httpx.post(url, json=_chat(), headers={**_auth(), "origin": "http://localhost:3000"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"]
    other = httpx.post(url, json=_chat(), headers={**_auth(), "origin": "https://evil.example"})
    assert other.status_code == 200  # the browser, not the gateway, withholds it
    assert "access-control-allow-origin" not in other.headers  # nor the upstream's "*"
    plain = httpx.post(url, json=_chat(), headers=_auth())
    assert "access-control-allow-origin" not in plain.headers
    refused = httpx.post(url, json=_chat(), headers={"origin": ORIGIN})
    assert refused.status_code == 401  # errors carry it too, so the page can read them
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    health = httpx.get(f"{gateway.url}/healthz", headers={"origin": ORIGIN})
    assert health.headers["access-control-allow-origin"] == ORIGIN


def test_cors_is_off_by_default(
    upstream: ScriptedUpstream, output_dir: Path, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", [{"name": "l", "kind": "openai", "base_url": upstream.url}]
    )
    service = start_gateway("gateway-nocors", policy, output_dir)
    try:
        response = _preflight(service, ORIGIN)
        assert not any(name.startswith("access-control-") for name in response.headers)
        actual = httpx.post(
            f"{service.url}/v1/chat/completions", json=_chat(), headers={"origin": ORIGIN}
        )
        assert actual.status_code == 200
        assert "access-control-allow-origin" not in actual.headers
    finally:
        service.stop()


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_self_signed_certificate(
    upstream: ScriptedUpstream, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    spec = {"name": "local", "kind": "openai", "base_url": upstream.url}
    policy = write_policy(tmp_path / "tls.yaml", [spec], CLIENTS)
    env = {"LANEGATE_TLS_CERTFILE": str(cert), "LANEGATE_TLS_KEYFILE": str(key), "T_ADMIN_KEY": "x"}
    process, port = _serve_process(policy, "--host", "localhost", env=env)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        assert _wait_up(f"https://127.0.0.1:{port}/healthz", process, verify=trust).is_success
        with httpx.Client(verify=trust) as http:
            sdk = openai.OpenAI(
                base_url=f"https://127.0.0.1:{port}/v1",
                api_key=CLIENT_KEY,
                http_client=http,
                max_retries=0,
            )
            reply = sdk.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content == "ok"
        with pytest.raises(httpx.ConnectError):  # an unverified certificate is refused
            httpx.get(f"https://127.0.0.1:{port}/healthz")
        plain = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", wait_s=3)
        assert not plain.startswith(b"HTTP/1.1 200")  # no plain HTTP on the TLS port
    finally:
        _stop(process)


# -- nothing of a prompt on disk --------------------------------------------------------------


def test_prompts_and_completions_are_written_nowhere(gateway: Service, output_dir: Path) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=_chat(content=MARKER), headers=_auth()
    )
    assert response.status_code == 200
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=_chat(content=MARKER))
    assert refused.status_code == 401
    time.sleep(1.5)  # the budget store flushes every second
    state = output_dir / f"state-{gateway.name}-{gateway.port}"  # start_lanegate's default
    files = [gateway.log_path, *(p for p in state.rglob("*") if p.is_file())]
    assert len(files) > 1, files  # the log and at least the budget database
    for path in files:
        data = path.read_bytes()
        assert MARKER.encode() not in data, path
        assert CLIENT_KEY.encode() not in data, path


# -- constant-time key checks ------------------------------------------------------------------


class CountingEnv(dict[str, str]):
    """An environment that records which variables were read."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.read.append(key)
        return super().get(key, default)


def test_every_client_is_checked_whoever_matches() -> None:
    from gateway.errors import Unauthorized
    from gateway.policy.loader import load_policy_text
    from gateway.serving.auth import Authenticator

    clients = "".join(f"  - {{name: c{i}, key: 'env:K{i}'}}\n" for i in range(4))
    policy = load_policy_text(
        "version: 1\nupstreams:\n  - {name: l, base_url: 'http://127.0.0.1:1'}\n"
        f"clients:\n{clients}",
        "inline",
    )
    env = CountingEnv({f"K{i}": f"key-{i}" for i in range(4)})
    auth = Authenticator(policy, env)
    for presented in ("key-0", "key-3", "nobody"):
        env.read.clear()
        try:
            found = auth.client_for([(b"authorization", f"Bearer {presented}".encode())])
        except Unauthorized:  # the unknown key
            found = None
        assert env.read == ["K0", "K1", "K2", "K3"], presented  # no early exit
        assert (found.name if found else None) == {"key-0": "c0", "key-3": "c3"}.get(presented)


def test_dot_segments_are_not_relay_routes() -> None:
    from gateway.serving.routes import is_relay_path, match_route

    for path in ("/v1/models/../x", "/v1/models/./x", "/v1/models/a/../../b", "/v1/models/.."):
        assert match_route("GET", path) is None and not is_relay_path(path), path
    for path in ("/v1/models/llama3.1:8b", "/v1/models/mlx-community/Llama-3.2-3B.4bit"):
        route = match_route("GET", path)
        assert route is not None and route.name == "model", path


def test_the_log_file_rotates_in_process(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    spec = {"name": "local", "kind": "openai", "base_url": upstream.url}
    policy = write_policy(tmp_path / "p.yaml", [spec])
    log = tmp_path / "logs" / "lanegate.log"
    env = {
        "LANEGATE_LOG_FILE": str(log),
        "LANEGATE_LOG_MAX_BYTES": "4096",
        "LANEGATE_LOG_BACKUPS": "2",
    }
    process, port = _serve_process(policy, env=env)
    try:
        _wait_up(f"http://127.0.0.1:{port}/healthz", process)
        for _ in range(40):  # ~400 bytes of access log each
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=_chat(content=MARKER))
    finally:
        _stop(process)
    files = sorted(log.parent.iterdir())
    assert [p.name for p in files] == ["lanegate.log", "lanegate.log.1", "lanegate.log.2"]
    assert all(p.stat().st_size <= 4096 for p in files)
    assert b'"status":200' in b"".join(p.read_bytes() for p in files)
    assert not any(MARKER.encode() in p.read_bytes() for p in files)
