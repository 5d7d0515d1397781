"""`/dashboard` in headless Chromium while real traffic flows through a real gateway.

The page polls `/admin/status` itself; after each refresh it exposes the document it drew as
`window.__lanegateStatus`. Reading that and the DOM in one `evaluate` gives a consistent pair
(the page renders synchronously), so the test checks that every number shown is the number of
that snapshot, that a status fetched right after is the same or newer, and that the numbers
move as traffic flows. A screenshot goes to test-output/dashboard.png.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import OpenAIClients
from tests.support.processes import Service
from tests.support.threads import Worker, check_all

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "dashboard-admin-key"
MODEL = "llama3.1:8b"
TRAFFIC_LIMIT_S = 90  # the traffic threads stop by themselves after this, whatever happens

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: run `make system-deps` (installs Debian's chromium as root)",
        allow_module_level=True,
    )

# Reads the snapshot the page drew and the DOM in one go (one JS task: no refresh between).
READ_PAGE = """() => {
  const text = (id) => {
    const node = document.querySelector(`[data-testid="${id}"]`);
    return node ? node.textContent : null;
  };
  const doc = window.__lanegateStatus || null;
  if (!doc) return null;
  const lanes = {};
  for (const lane of doc.lanes) {
    const id = (what) => `lane-${lane.name}-${what}`;
    lanes[lane.name] = {
      in_flight: text(id("in-flight")), queued: text(id("queued")),
      requests: text(id("requests")), ttft_p50: text(id("ttft-p50")),
      ttft_p95: text(id("ttft-p95")), gap_p95: text(id("gap-p95")),
      spark_points: Number(document.querySelector(`[data-testid="${id("spark")}"]`)
        .getAttribute("data-points")),
    };
  }
  const upstreams = {};
  for (const up of doc.upstreams) {
    const id = (what) => `upstream-${up.name}-${what}`;
    upstreams[up.name] = {in_flight: text(id("in-flight")), breaker: text(id("breaker")),
                          health: text(id("health"))};
  }
  return {
    doc,
    dom: {
      generated_at: document.querySelector('[data-testid="generated-at"]').dataset.value,
      offload: text("offload-state"), pressure: text("host-pressure"), lanes, upstreams,
    },
  };
}"""


# A simulated 16 GB M2 mini: real batching, so TTFT moves with load.
SIM_ARGS = ("--profile", "m2-mini-16gb")
GATEWAY_POLICY = """
upstreams:
  - {name: mini, kind: ollama, base_url: '{url}', max_concurrency: 4,
      signals_url: '{url}/sim/signals'}
admin_key: env:T_DASH_ADMIN
lanes:
  - {name: interactive, priority: 100, max_concurrency: 3, tokens_per_minute: 200000}
  - {name: batch, priority: 10, max_concurrency: 1, queue_timeout: 120}
classify: {default_lane: interactive, anonymous_lanes: [interactive, batch]}
"""
GATEWAY_ENV = {"T_DASH_ADMIN": ADMIN_KEY}


@pytest.fixture
def traffic(gateway: Service, openai_client: OpenAIClients) -> Iterator[list[int]]:
    """Streams chat completions in both lanes from background threads until the test ends."""
    stop = threading.Event()
    done: list[int] = []
    deadline = time.monotonic() + TRAFFIC_LIMIT_S

    def worker(lane: str) -> None:
        oa = openai_client(gateway)
        while not stop.is_set() and time.monotonic() < deadline:
            stream = oa.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Write one line about lanes."}],
                max_tokens=12,
                stream=True,
                extra_headers={"X-Lane": lane},
            )
            for _ in stream:
                pass
            done.append(1)

    lanes = ["interactive", "interactive", "batch", "batch"]
    threads = [Worker(functools.partial(worker, lane), name=lane) for lane in lanes]
    for thread in threads:
        thread.start()
    yield done
    stop.set()
    check_all(threads, 30)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def as_ms(text: str) -> float | None:
    """The page's duration text back in milliseconds (None for the dash of no data)."""
    if text == "–":
        return None
    number, unit = text.split()
    return float(number) * (1000 if unit == "s" else 1)


def close_ms(shown: str, value: float | None) -> bool:
    parsed = as_ms(shown)
    if parsed is None or value is None:
        return parsed is value
    # Shown rounded: 1 decimal under 10 ms, whole ms under 1 s, 10 ms above.
    return abs(parsed - value) <= (0.051 if value < 10 else 0.51 if value < 1000 else 5.1)


def check_dom_matches_snapshot(page_state: dict[str, Any]) -> None:
    doc, dom = page_state["doc"], page_state["dom"]
    assert float(dom["generated_at"]) == doc["generated_at"]
    for lane in doc["lanes"]:
        shown = dom["lanes"][lane["name"]]
        assert shown["in_flight"] == f"{lane['in_flight']}/{lane['max_concurrency']}"
        assert shown["queued"] == str(lane["queued"])
        assert shown["requests"] == str(lane["requests"]["1m"])
        assert close_ms(shown["ttft_p50"], lane["ttft"]["1m"]["p50_ms"]), shown
        assert close_ms(shown["ttft_p95"], lane["ttft"]["1m"]["p95_ms"]), shown
        assert close_ms(shown["gap_p95"], lane["gap_p95"]["1m"]["p95_ms"]), shown
    for upstream in doc["upstreams"]:
        shown = dom["upstreams"][upstream["name"]]
        assert shown["in_flight"] == f"{upstream['in_flight']}/{upstream['max_concurrency']}"
        assert shown["breaker"] == upstream["breaker"]["state"]
        assert shown["health"] == ("healthy" if upstream["healthy"] else "unhealthy")
    assert dom["pressure"] == doc["host"]["pressure"]
    assert dom["offload"].startswith("Offload is not configured")


def fetch_status(gateway: Service) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/admin/status",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def wait_for_new_snapshot(page: Any, after: float | None, timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate(READ_PAGE)
        if state is not None and (after is None or state["doc"]["generated_at"] > after):
            return state
        page.wait_for_timeout(200)
    raise AssertionError(f"the page drew no new status within {timeout_s} s")


def test_dashboard_shows_live_status(
    gateway: Service, traffic: list[int], output_dir: Path
) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{gateway.url}/dashboard")

            # A wrong key: a clear message, the form again, no data on the page.
            page.fill('[data-testid="key-input"]', "not-the-admin-key")
            page.click('[data-testid="key-submit"]')
            message = page.locator('[data-testid="message"]')
            message.wait_for(state="visible", timeout=10_000)
            assert "refused (401)" in message.text_content()
            assert page.locator('[data-testid="key-form"]').is_visible()
            assert page.evaluate("window.__lanegateStatus === undefined")

            page.fill('[data-testid="key-input"]', ADMIN_KEY)
            page.click('[data-testid="key-submit"]')
            first = wait_for_new_snapshot(page, None)
            check_dom_matches_snapshot(first)

            states = [first]
            while len(states) < 6:  # about 12 s of 2 s refreshes, under traffic
                state = wait_for_new_snapshot(page, states[-1]["doc"]["generated_at"])
                check_dom_matches_snapshot(state)
                fresh = fetch_status(gateway)  # right after: the same moment or later
                assert fresh["generated_at"] >= state["doc"]["generated_at"]
                for lane, shown in zip(fresh["lanes"], state["doc"]["lanes"], strict=True):
                    assert lane["requests"]["15m"] >= shown["requests"]["15m"]
                    assert lane["ttft"]["15m"]["count"] >= shown["ttft"]["15m"]["count"]
                states.append(state)

            last = states[-1]
            page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)
            # The key is kept for this tab: a reload goes straight to the data.
            page.reload()
            reloaded = wait_for_new_snapshot(page, last["doc"]["generated_at"])
            assert not page.locator('[data-testid="key-form"]').is_visible()
        finally:
            browser.close()

    assert traffic, "no request completed during the test"
    first_counts = {name: int(v["requests"]) for name, v in first["dom"]["lanes"].items()}
    last_counts = {name: int(v["requests"]) for name, v in last["dom"]["lanes"].items()}
    for name in ("interactive", "batch"):
        assert last_counts[name] > first_counts[name], (first_counts, last_counts)
    interactive = last["dom"]["lanes"]["interactive"]
    assert as_ms(interactive["ttft_p95"]) is not None
    assert interactive["spark_points"] >= 5  # the page kept its own TTFT history
    # The batch lane has one slot and two senders: the page saw it full at some refresh.
    assert any(s["dom"]["lanes"]["batch"]["in_flight"] == "1/1" for s in states)
    assert reloaded["doc"]["generated_at"] > last["doc"]["generated_at"]
    assert (output_dir / "dashboard.png").stat().st_size > 10_000  # a drawn page, not a blank


def test_dashboard_page_holds_no_data_and_loads_nothing_from_elsewhere(gateway: Service) -> None:
    page = httpx.get(f"{gateway.url}/dashboard", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    assert ADMIN_KEY not in page.text
    script = httpx.get(f"{gateway.url}/dashboard/dashboard.js", timeout=10)
    assert script.status_code == 200
    assert ".innerHTML" not in script.text  # gateway strings go in as text only
