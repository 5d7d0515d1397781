"""`/dashboard` in headless Chromium while real traffic flows through a real gateway.

The page polls `/admin/status` itself; after each refresh it exposes the document it drew as
`window.__lanegateStatus`. Reading that and the DOM in one `evaluate` gives a consistent pair
(the page renders synchronously), so the test checks that every number shown is the number of
that snapshot, that a status fetched right after is the same or newer, and that the numbers
move as traffic flows. The interactive lane streams, the batch lane does not (so it has no
TTFT, but a queue wait and a duration); the 15-minute trends come from the gateway, so a fresh
page draws them at once. A refused reload shows as a banner, and at 420 px nothing scrolls
sideways. Screenshots go to test-output/dashboard.png and dashboard-420.png.
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
  const points = (id) => Number(document.querySelector(`[data-testid="${id}"]`)
    .getAttribute("data-points"));
  const visible = (id) => {
    const node = document.querySelector(`[data-testid="${id}"]`);
    return Boolean(node) && !node.hidden && node.offsetParent !== null;
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
      queue_p95: text(id("queue-p95")), duration_p95: text(id("duration-p95")),
      spark_points: points(id("spark")), queue_spark_points: points(id("spark-queue")),
      spark_max: document.querySelector(`[data-testid="${id("spark")}"]`)
        .getAttribute("data-max"),
    };
  }
  const upstreams = {};
  for (const up of doc.upstreams) {
    const id = (what) => `upstream-${up.name}-${what}`;
    upstreams[up.name] = {in_flight: text(id("in-flight")), breaker: text(id("breaker")),
                          health: text(id("health")), chat_target: text(id("chat-target"))};
  }
  return {
    doc,
    dom: {
      generated_at: document.querySelector('[data-testid="generated-at"]').dataset.value,
      offload: text("offload-state"), pressure: text("host-pressure"), lanes, upstreams,
      in_flight: text("summary-in-flight"), queued: text("summary-queued"),
      reload_banner: visible("reload-banner"), access_banner: visible("access-banner"),
      width: document.documentElement.scrollWidth,
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


@pytest.fixture(scope="module")
def good_policy(gateway: Service) -> tuple[Path, str]:
    """The policy file the gateway serves, and its good text (tests rewrite and restore it)."""
    assert gateway.policy is not None
    return gateway.policy, gateway.policy.read_text()


@pytest.fixture
def traffic(gateway: Service, openai_client: OpenAIClients) -> Iterator[list[int]]:
    """Streams chat completions in both lanes from background threads until the test ends."""
    stop = threading.Event()
    done: list[int] = []
    deadline = time.monotonic() + TRAFFIC_LIMIT_S

    def worker(lane: str) -> None:
        oa = openai_client(gateway)
        while not stop.is_set() and time.monotonic() < deadline:
            # Batch jobs do not stream: no TTFT, but their queue wait and duration show.
            response = oa.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Write one line about lanes."}],
                max_tokens=12,
                stream=lane == "interactive",
                extra_headers={"X-Lane": lane},
            )
            if lane == "interactive":
                for _ in response:
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
        assert close_ms(shown["queue_p95"], lane["queue_wait"]["1m"]["p95_ms"]), shown
        assert close_ms(shown["duration_p95"], lane["duration"]["1m"]["p95_ms"]), shown
        trend = doc["history"]["lanes"][lane["name"]]
        assert shown["queue_spark_points"] == sum(v is not None for v in trend["queue_wait_p95_ms"])
    # The header counts what the lanes add up to, and says so.
    totals = doc["totals"]
    assert int(dom["in_flight"]) == totals["in_flight"] == sum(x["in_flight"] for x in doc["lanes"])
    assert int(dom["queued"]) == totals["queued"] == sum(x["queued"] for x in doc["lanes"])
    assert dom["reload_banner"] == bool(doc["policy"]["reload_error"])
    assert dom["access_banner"] == bool(doc["policy"]["access_change"])
    for upstream in doc["upstreams"]:
        shown = dom["upstreams"][upstream["name"]]
        assert shown["in_flight"] == f"{upstream['in_flight']}/{upstream['max_concurrency']}"
        assert shown["breaker"] == upstream["breaker"]["state"]
        assert shown["health"] == ("healthy" if upstream["healthy"] else "unhealthy")
    # What the adaptive limits hold chats to, per local upstream (the SLO, or above the floor).
    for limits in doc["adaptive"]["upstreams"]:
        shown = dom["upstreams"][limits["upstream"]]
        assert shown["chat_target"] == f"×{limits['effective_target_ratio']:.2f}"
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
            assert last["dom"]["width"] <= 1280  # the table fits a laptop screen
            page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)
            # The key is kept for this tab: a reload goes straight to the data.
            page.reload()
            reloaded = wait_for_new_snapshot(page, last["doc"]["generated_at"])
            check_dom_matches_snapshot(reloaded)
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
    # Batch does not stream: a dash for TTFT (no such number), figures for the rest.
    batch = last["dom"]["lanes"]["batch"]
    assert batch["ttft_p95"] == "–"
    assert as_ms(batch["duration_p95"]) is not None and as_ms(batch["queue_p95"]) is not None
    # Its trend is the duration's, scaled to its own maximum (written beside it).
    series = last["doc"]["history"]["lanes"]["batch"]["duration_p95_ms"]
    assert float(batch["spark_max"]) == max(v for v in series if v is not None)
    # The gateway keeps the trends: the reloaded page drew them with its first status.
    assert reloaded["dom"]["lanes"]["interactive"]["spark_points"] >= 2
    # The batch lane has one slot and two senders: the page saw it full at some refresh.
    assert any(s["dom"]["lanes"]["batch"]["in_flight"] == "1/1" for s in states)
    assert reloaded["doc"]["generated_at"] > last["doc"]["generated_at"]
    # Priorities differ, so the adaptive limits are on: the card says what chats are held to.
    assert last["dom"]["upstreams"]["mini"]["chat_target"] is not None
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


def open_dashboard(playwright: Any, gateway: Service, width: int) -> tuple[Any, Any]:
    browser = launch(playwright)
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{gateway.url}/dashboard")
    page.fill('[data-testid="key-input"]', ADMIN_KEY)
    page.click('[data-testid="key-submit"]')
    return browser, page


def wait_for_status(gateway: Service, ready: Any, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = fetch_status(gateway)
        if ready(doc):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"/admin/status did not get there within {timeout_s} s")


def rewrite_policy(policy: tuple[Path, str], old: str, new: str) -> Path:
    path, good = policy
    assert old in good
    path.write_text(good.replace(old, new))
    return path


def test_refused_reload_and_access_change_show_as_banners(
    gateway: Service, good_policy: tuple[Path, str], output_dir: Path
) -> None:
    path, good = good_policy
    with sync_api.sync_playwright() as playwright:
        browser, page = open_dashboard(playwright, gateway, 1280)
        try:
            first = wait_for_new_snapshot(page, None)
            check_dom_matches_snapshot(first)
            # A typo: the gateway keeps the old policy and the page says so, at the top.
            rewrite_policy(good_policy, "max_concurrency: 1,", "max_concurency: 1,")
            wait_for_status(gateway, lambda doc: doc["policy"]["reload_error"])
            refused = wait_for_new_snapshot(page, first["doc"]["generated_at"])
            while not refused["doc"]["policy"]["reload_error"]:
                refused = wait_for_new_snapshot(page, refused["doc"]["generated_at"])
            check_dom_matches_snapshot(refused)
            assert refused["dom"]["reload_banner"]
            banner = page.locator('[data-testid="reload-banner"]').text_content()
            assert "refused" in banner and "max_concurency" in banner
            page.screenshot(path=str(output_dir / "dashboard-reload-refused.png"))

            # Batch callers without a key lose the batch lane: a warning banner, old -> new.
            version = refused["doc"]["policy"]["version"]
            rewrite_policy(
                good_policy,
                "anonymous_lanes: [interactive, batch]",
                "anonymous_lanes: [interactive]",
            )
            changed = wait_for_status(gateway, lambda doc: doc["policy"]["version"] > version)
            assert changed["policy"]["reload_error"] is None
            shown = wait_for_new_snapshot(page, changed["generated_at"] - 0.001)
            check_dom_matches_snapshot(shown)
            assert not shown["dom"]["reload_banner"] and shown["dom"]["access_banner"]
            text = page.locator('[data-testid="access-banner"]').text_content()
            assert "X-Lane may pick: interactive, batch) -> " in text
            assert text.rstrip().endswith("X-Lane may pick: interactive)")
        finally:
            path.write_text(good)
            browser.close()
    wait_for_status(gateway, serves_good_policy)


def serves_good_policy(doc: dict[str, Any]) -> bool:
    """The good policy is back in force: batch open to callers without a key again."""
    change = doc["policy"]["access_change"]
    return not doc["policy"]["reload_error"] and (
        change is None or "batch" in change["changes"][0].split(" -> ")[-1]
    )


def test_dashboard_is_readable_at_420_px(
    gateway: Service, traffic: list[int], output_dir: Path
) -> None:
    with sync_api.sync_playwright() as playwright:
        browser, page = open_dashboard(playwright, gateway, 420)
        try:
            state = wait_for_new_snapshot(page, None)
            state = wait_for_new_snapshot(page, state["doc"]["generated_at"])
            check_dom_matches_snapshot(state)
            assert state["dom"]["width"] <= 420  # nothing scrolls sideways
            # Every lane figure keeps its name beside it (the table's head is hidden here).
            label = page.locator('[data-testid="lane-batch-duration-p95"]')
            caption = label.evaluate("node => getComputedStyle(node, '::before').content")
            assert caption == '"duration p95"'
            page.screenshot(path=str(output_dir / "dashboard-420.png"), full_page=True)
        finally:
            browser.close()
