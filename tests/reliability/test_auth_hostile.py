"""API keys under attack: wrong, empty, overlong and near-miss keys are 401s in the API's
shape; failures from one source do not affect others; the comparison is constant time by
construction (asserted by review of the code, not by timing)."""

from __future__ import annotations

import ast
import inspect
import json

import httpx
import pytest

from gateway.serving import auth, keys
from tests.reliability.conftest import KEY
from tests.reliability.raw_http import assert_error_shape, parse, raw_exchange
from tests.support.processes import Service
from tests.support.threads import Worker

pytestmark = pytest.mark.fuzz


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        "Bearer " + KEY[:-1],  # near miss: one character short
        "Bearer " + KEY + "x",  # near miss: one character more
        "Bearer " + KEY[:-1] + chr(ord(KEY[-1]) ^ 1),  # near miss: last character flipped
        "Bearer " + KEY.upper(),
        "Bearer " + "k" * 7000,  # overlong
        "Basic " + KEY,
        "Bearer \u00e9t\u00e9",
    ],
)
def test_bad_keys_are_401_in_the_api_shape(
    keyed_gateway: Service, authorization: str | None
) -> None:
    # Raw bytes: HTTP clients refuse to send some of these (trailing space, non-ASCII).
    header = b"" if authorization is None else b"authorization: " + authorization.encode() + b"\r\n"
    body = b'{"model": "m", "messages": []}'
    for method, path, ollama in (
        ("POST", "/v1/chat/completions", False),
        ("POST", "/api/chat", True),
        ("GET", "/admin/offload", False),
    ):
        head = f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".encode()
        length = b"content-length: %d\r\n\r\n" % len(body)
        raw = raw_exchange(keyed_gateway.port, head + header + length + body)
        status, _, content = parse(raw)
        assert status == 401, content
        assert_error_shape(json.loads(content), ollama=ollama)


def test_key_failures_from_one_source_do_not_affect_others(keyed_gateway: Service) -> None:
    """No lockout, no tarpit shared between sources: while one client hammers wrong keys,
    a client with the right key is served every time."""
    failures: list[int] = []

    def hammer() -> None:
        with httpx.Client(base_url=keyed_gateway.url, timeout=10) as http:
            for i in range(300):
                response = http.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": []},
                    headers={"authorization": f"Bearer {KEY[:-3]}{i:03d}"},
                )
                failures.append(response.status_code)

    attacker = Worker(hammer, name="attacker")
    attacker.start()
    good: list[int] = []
    with httpx.Client(base_url=keyed_gateway.url, timeout=10) as http:
        while attacker.is_alive() or len(good) < 20:
            response = http.post(
                "/v1/chat/completions",
                json={"model": "m", "max_tokens": 2, "messages": []},
                headers={"authorization": f"Bearer {KEY}"},
            )
            good.append(response.status_code)
    attacker.check(30)
    assert set(failures) == {401} and len(failures) == 300
    assert set(good) == {200}, good


def test_key_comparison_is_constant_time_by_construction() -> None:
    """Reviewed in code, not timed: both sides become fixed-length sha256 digests compared
    with hmac.compare_digest, and every client is checked without an early exit."""
    tree = ast.parse(inspect.getsource(keys.key_matches))
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "hmac.compare_digest" in calls and "_digest" in calls
    assert "==" not in inspect.getsource(keys.key_matches)
    assert "sha256" in inspect.getsource(keys._digest)
    loop = inspect.getsource(auth.Authenticator.client_for)
    assert "break" not in loop and "return client" not in loop
