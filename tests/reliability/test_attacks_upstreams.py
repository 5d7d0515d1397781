"""Issue 18, the upstream side: a scripted hostile upstream, hostile usage figures, one client
poisoning the breaker, and upstream details leaking to clients (one test per attack).

The upstream answers by what the request asks for in its prompt, so one upstream plays every
part: `usage:N` reports N completion tokens, `big:N` sends an N-byte JSON body, `poison`
answers 500, `cookie` sends a set-cookie and an 8 KiB header.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.serving.keys import hash_key
from tests.support.policies import upstream_entry, write_policy
from tests.support.processes import Service, free_port, start_gateway
from tests.support.scripted_upstream import Script, ScriptedUpstream, SeenRequest

pytestmark = pytest.mark.faults

ALICE = "lg-attack-alice-key-0123456789abcdef"
BOB = "lg-attack-bob-key-0123456789abcdefgh"
LANES = f"""
lanes:
  - {{name: interactive, priority: 100, max_concurrency: 4, max_queue: 20, queue_timeout: 20}}
  - {{name: work, priority: 10, max_concurrency: 4, max_queue: 20, queue_timeout: 20,
     tokens_per_day: 10000000}}
classify:
  default_lane: interactive
clients:
  - {{name: alice, key: "{hash_key(ALICE)}", lanes: [interactive, work]}}
  - {{name: bob, key: "{hash_key(BOB)}", lanes: [interactive, work]}}
"""
BIG_BODY_LIMIT = 1024 * 1024


def _hostile(request: SeenRequest) -> Script:
    prompt = str(json.loads(request.body or b"{}").get("prompt", ""))
    if prompt == "poison":
        return Script(status=500, content_type="application/json", chunks=[b'{"error":"boom"}'])
    if prompt.startswith("big:"):
        size = int(prompt[4:])
        return Script(content_type="application/json", chunks=[b'{"x":"' + b"a" * size + b'"}'])
    headers = {}
    if prompt == "cookie":
        headers = {"set-cookie": "session=upstream", "x-huge": "h" * 8192, "x-lanegate-lane": "x"}
    completion = int(prompt[6:]) if prompt.startswith("usage:") else 5
    usage = {"prompt_tokens": 1, "completion_tokens": completion}
    answer = {"choices": [{"text": "x", "index": 0}], "usage": usage}
    return Script(
        content_type="application/json", chunks=[json.dumps(answer).encode()], headers=headers
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attacks-upstreams") / "state"


@pytest.fixture(scope="module")
def gateway(output_dir: Path, state: Path) -> Iterator[Service]:
    with ScriptedUpstream(_hostile) as upstream:
        line = upstream_entry("scripted", upstream.url, "llamacpp", max_concurrency=16)
        policy = write_policy(state.parent / "policy.yaml", [line], LANES)
        env = {"LANEGATE_MAX_UPSTREAM_BODY_BYTES": str(BIG_BODY_LIMIT)}
        service = start_gateway("gw-attacks-upstreams", policy, output_dir, state=state, env=env)
        yield service
        service.stop()


def _complete(service: Service, prompt: str, key: str = ALICE, **extra: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "x-lane": str(extra.pop("lane", "work"))}
    body = {"model": "m", "prompt": prompt, **extra}
    return httpx.post(service.url + "/v1/completions", json=body, headers=headers, timeout=30)


def _ledger_ids(state: Path) -> set[str]:
    db = sqlite3.connect(f"{(state / 'ledger.sqlite').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT request_id FROM requests")}
    finally:
        db.close()


def _wait_in_ledger(state: Path, request_id: str) -> bool:
    """The ledger writes once a second: give it a few flushes (a bound, not a timing goal)."""
    for _ in range(50):
        if request_id in _ledger_ids(state):
            return True
        time.sleep(0.2)
    return False


# -- 3. a usage figure >= 2^63 ----------------------------------------------------------------


def test_a_huge_usage_figure_does_not_stop_the_ledger(gateway: Service, state: Path) -> None:
    huge = _complete(gateway, f"usage:{2**64}")
    assert huge.status_code == 200
    after = _complete(gateway, "usage:3")
    assert after.status_code == 200
    assert _wait_in_ledger(state, after.headers["x-request-id"]), gateway.log()[-3000:]
    assert "Traceback" not in gateway.log()


# -- 4. negative usage ----------------------------------------------------------------------


def test_negative_usage_settles_the_reservation(gateway: Service) -> None:
    def remaining() -> int:  # after a request that reserves 1 + 1 and spends 1 + 1
        response = _complete(gateway, "usage:1", max_tokens=1)
        return int(response.headers["x-ratelimit-remaining-tokens"])

    before = remaining()
    first = _complete(gateway, "usage:-50", max_tokens=100_000)
    assert first.status_code == 200
    # Its reservation (~100k) must be gone, settled to what it reported, clamped at 0.
    after = remaining()
    assert before - after < 100, (before, after)
    assert "Traceback" not in gateway.log()


# -- 7. non-streamed upstream bodies ----------------------------------------------------------


def test_an_oversized_upstream_body_is_a_clear_502(gateway: Service) -> None:
    response = _complete(gateway, f"big:{3 * BIG_BODY_LIMIT}")
    assert response.status_code == 502, response.status_code
    error = response.json()["error"]
    assert error["code"] == "upstream_body_too_large"
    assert "LANEGATE_MAX_UPSTREAM_BODY_BYTES" in error["message"]
    assert _complete(gateway, f"big:{BIG_BODY_LIMIT // 2}").status_code == 200  # under: relayed


# -- 8. one client's poisoned requests and the breaker ---------------------------------------


def test_one_clients_poisoned_requests_do_not_open_the_breaker(gateway: Service) -> None:
    for _ in range(8):
        assert _complete(gateway, "poison", BOB).status_code == 500
    response = _complete(gateway, "usage:2", ALICE, lane="interactive")
    assert response.status_code == 200, response.text


# -- 11. upstream details reaching clients --------------------------------------------------


def test_only_allowed_upstream_headers_are_relayed(gateway: Service) -> None:
    response = _complete(gateway, "cookie")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "x-huge" not in response.headers
    assert response.headers["x-lanegate-lane"] == "work"  # the gateway's, never the upstream's
    assert response.headers["content-type"].startswith("application/json")


def test_a_502_names_the_upstream_by_its_policy_name(
    output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("attacks-502")
    dead = free_port()  # nothing listens here
    line = upstream_entry("gpu-box", f"http://127.0.0.1:{dead}", "llamacpp")
    policy = write_policy(tmp / "policy.yaml", [line], "")
    service = start_gateway("gw-attacks-502", policy, output_dir, state=tmp / "state")
    try:
        body = {"model": "m", "prompt": "hi"}
        response = httpx.post(service.url + "/v1/completions", json=body, timeout=30)
    finally:
        service.stop()
    assert response.status_code in (502, 503), response.text
    message = response.json()["error"]["message"]
    assert "gpu-box" in message
    assert not re.search(rf"127\.0\.0\.1|{dead}", message), message
