// lanegate dashboard: polls /admin/status every 2 s with the admin key and draws it.
// No framework, no build step, nothing loaded from elsewhere. The page holds no data of its
// own: everything shown comes from the authenticated status call. Every string from the
// gateway goes in through textContent, never innerHTML.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const KEY_STORE = "lanegate.adminKey";
  const HISTORY = 60; // refreshes of TTFT p95 kept per lane: two minutes at 2 s
  const SVG = "http://www.w3.org/2000/svg";
  const history = new Map(); // lane name -> [p95 ms or null, ...], oldest first
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    return (ms < 10 ? ms.toFixed(1) : String(Math.round(ms))) + " ms";
  }

  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return value.toFixed(unit ? 1 : 0) + " " + units[unit];
  }

  // An inline SVG polyline of the values (nulls break the line), scaled from 0 to its max;
  // hovering shows the range, written with `format`.
  function sparkline(values, testid, label, format) {
    const width = 120;
    const height = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    svg.setAttribute("data-testid", testid);
    const known = values.filter((v) => v !== null && v !== undefined);
    const top = Math.max(...known, 0) || 1;
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    let d = "";
    let pen = "M";
    values.forEach((v, i) => {
      if (v === null || v === undefined) {
        pen = "M";
        return;
      }
      const y = height - 2 - (v / top) * (height - 4);
      d += `${pen}${(i * step).toFixed(1)} ${y.toFixed(1)} `;
      pen = "L";
    });
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d.trim());
    svg.setAttribute("data-points", String(known.length));
    const title = document.createElementNS(SVG, "title");
    title.textContent = known.length
      ? `${label}: ${format(Math.min(...known))} to ${format(Math.max(...known))}, ${known.length} points`
      : `${label}: no data yet`;
    svg.append(title, path);
    return svg;
  }

  function bar(value, limit, testid) {
    const fraction = limit > 0 ? Math.min(1, value / limit) : 0;
    const fill = el("span", { class: "fill" });
    fill.style.width = (fraction * 100).toFixed(1) + "%";
    const outer = el("span", { class: "bar", "data-testid": testid, title: `${value}/${limit}` });
    outer.append(fill);
    return outer;
  }

  function tokens(lane) {
    if (!lane.budget.length) return "no budget";
    return lane.budget
      .map((w) => `${w.used + w.reserved}/${w.limit} per ${w.window}`)
      .join(", ");
  }

  function laneRow(lane) {
    const id = (what) => `lane-${lane.name}-${what}`;
    const points = history.get(lane.name) || [];
    points.push(lane.ttft["1m"].p95_ms);
    while (points.length > HISTORY) points.shift();
    history.set(lane.name, points);
    return el(
      "tr",
      { "data-testid": id("row") },
      el("th", { scope: "row" }, lane.name, lane.offloadable ? " ⇄" : ""),
      el("td", {}, el("span", { "data-testid": id("in-flight") },
        `${lane.in_flight}/${lane.max_concurrency}`),
        bar(lane.in_flight, lane.max_concurrency, id("in-flight-bar"))),
      el("td", { "data-testid": id("adaptive-limit"),
        title: "adaptive limit: lowered while chats are slow, all slots while none runs" },
        lane.adaptive_limit == null ? "—" : lane.adaptive_limit),
      el("td", {}, el("span", { "data-testid": id("queued") }, lane.queued),
        bar(lane.queued, lane.max_queue, id("queue-bar"))),
      el("td", { "data-testid": id("requests") }, lane.requests["1m"]),
      el("td", { "data-testid": id("ttft-p50") }, fmtMs(lane.ttft["1m"].p50_ms)),
      el("td", { "data-testid": id("ttft-p95") }, fmtMs(lane.ttft["1m"].p95_ms)),
      el("td", { "data-testid": id("gap-p95") }, fmtMs(lane.gap_p95["1m"].p95_ms)),
      el("td", {}, sparkline(points, id("spark"), "TTFT p95", fmtMs)),
      el("td", { "data-testid": id("tokens") }, tokens(lane)),
    );
  }

  function upstreamCard(up) {
    const id = (what) => `upstream-${up.name}-${what}`;
    const breaker = up.breaker;
    const health = up.healthy ? "healthy" : "unhealthy";
    return el(
      "article",
      { class: `card ${health}`, "data-testid": id("card") },
      el("h3", {}, up.name, el("span", { class: "muted" }, ` ${up.kind} · ${up.pool}`)),
      el("p", {}, el("span", { class: `badge ${health}`, "data-testid": id("health") }, health),
        " breaker ", el("b", { "data-testid": id("breaker") }, breaker.state),
        breaker.state === "closed" ? "" : ` — ${breaker.reason}`),
      el("p", {}, "in flight ", el("b", { "data-testid": id("in-flight") },
        `${up.in_flight}/${up.max_concurrency}`), bar(up.in_flight, up.max_concurrency, id("bar"))),
      el("p", {}, "TTFT p95 (1m) ", el("b", { "data-testid": id("ttft-p95") },
        fmtMs(up.ttft["1m"].p95_ms))),
      el("p", { "data-testid": id("resident") }, "resident: ",
        up.resident.length ? up.resident.join(", ") : "none",
        el("span", { class: "muted" }, ` (${up.models.length} models)`)),
      up.discovery_error ? el("p", { class: "error" }, up.discovery_error) : "",
    );
  }

  function renderOffload(offload) {
    const banner = $("offload");
    banner.className = `banner ${offload.state}`;
    const text = offload.configured
      ? `Offload: ${offload.state} (mode ${offload.mode}) — ${offload.reason}`
      : "Offload is not configured: every lane runs on the local pool.";
    banner.replaceChildren(el("span", { "data-testid": "offload-state" }, text));
  }

  function renderHost(host) {
    const box = $("host");
    if (!host) {
      box.replaceChildren("no host signals");
      return;
    }
    const perMin = host.swap_trend_bytes_per_s === null ? null : host.swap_trend_bytes_per_s * 60;
    const trend = perMin === null ? "–" : `${perMin >= 0 ? "+" : ""}${fmtBytes(perMin)}/min`;
    box.replaceChildren(
      el("span", {}, "pressure ", el("b", { "data-testid": "host-pressure",
        class: `pressure ${host.pressure}` }, host.pressure)),
      el("span", {}, "swap ", el("b", { "data-testid": "host-swap" },
        `${fmtBytes(host.swap_used_bytes)} / ${fmtBytes(host.swap_total_bytes)}`)),
      el("span", {}, "swap trend ", el("b", { "data-testid": "host-swap-trend" }, trend)),
      sparkline(host.swap_history.map((p) => p[1]), "host-swap-spark", "swap used", fmtBytes),
      el("span", { class: "muted" }, `source ${host.source}`),
      host.error ? el("span", { class: "error" }, host.error) : "",
    );
  }

  function render(doc) {
    const at = new Date(doc.generated_at * 1000);
    const stamp = $("generated-at");
    stamp.textContent = at.toLocaleTimeString();
    stamp.dateTime = at.toISOString();
    stamp.dataset.value = String(doc.generated_at);
    $("summary").textContent =
      `${doc.in_flight}/${doc.capacity} in flight · policy v${doc.policy.version}`;
    renderOffload(doc.offload);
    $("lanes").tBodies[0].replaceChildren(...doc.lanes.map(laneRow));
    $("upstreams").replaceChildren(...doc.upstreams.map(upstreamCard));
    renderHost(doc.host);
    const policy = doc.policy;
    $("policy").textContent =
      `policy ${policy.source} v${policy.version}, loaded ` +
      new Date(policy.loaded_at * 1000).toLocaleString() +
      (policy.reload_error ? ` — last reload refused: ${policy.reload_error}` : "");
    $("policy").classList.toggle("error", Boolean(policy.reload_error));
    window.__lanegateStatus = doc; // the snapshot the DOM now shows (read by the browser test)
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = kind || "";
    box.hidden = !text;
  }

  function askForKey(reason) {
    sessionStorage.removeItem(KEY_STORE);
    clearTimeout(timer);
    $("content").hidden = true;
    $("forget-key").hidden = true;
    $("key-form").hidden = false;
    $("key-input").value = "";
    $("key-input").focus();
    if (reason) showMessage(reason, "error");
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key) return askForKey("");
    let response;
    try {
      response = await fetch("/admin/status", {
        headers: { Authorization: `Bearer ${key}` },
        cache: "no-store",
      });
    } catch (error) {
      showMessage(`The gateway does not answer (${error.message}); retrying.`, "error");
      timer = setTimeout(refresh, REFRESH_MS);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      const detail = (body.error && body.error.message) || response.statusText;
      return askForKey(`The admin key was refused (${response.status}): ${detail}. ` +
        "Enter the admin key again.");
    }
    if (!response.ok) {
      showMessage(`/admin/status answered ${response.status}; retrying.`, "error");
    } else {
      render(await response.json());
      showMessage("");
      $("content").hidden = false;
      $("forget-key").hidden = false;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("key-form").hidden = true;
      showMessage("");
      clearTimeout(timer);
      refresh();
    });
    $("forget-key").addEventListener("click", () => askForKey("Key forgotten."));
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
