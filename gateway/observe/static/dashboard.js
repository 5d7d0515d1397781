// lanegate dashboard: polls /admin/status every 2 s with the admin key and draws it.
// No framework, no build step, nothing loaded from elsewhere. The page holds no data of its
// own: everything shown comes from the authenticated status call, the 15-minute trends
// included (the gateway keeps them, so a fresh page shows history at once). Every string from
// the gateway goes in through textContent, never innerHTML.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const KEY_STORE = "lanegate.adminKey";
  const SVG = "http://www.w3.org/2000/svg";
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

  // An inline SVG polyline of the values (nulls break the line), scaled from 0 to its max,
  // with that max printed beside it so two lines can be compared; hovering shows the range.
  function sparkline(values, testid, label, format) {
    const width = 100;
    const height = 22;
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
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("class", "base");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(width));
    base.setAttribute("y1", String(height - 2));
    base.setAttribute("y2", String(height - 2));
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d.trim());
    svg.setAttribute("data-points", String(known.length));
    svg.setAttribute("data-max", known.length ? String(Math.max(...known)) : "");
    const title = document.createElementNS(SVG, "title");
    title.textContent = known.length
      ? `${label}: ${format(Math.min(...known))} to ${format(Math.max(...known))}, ` +
        `${known.length} of ${values.length} points`
      : `${label}: no data in the last 15 minutes`;
    svg.append(title, base, path);
    const scale = el("span", { class: "scale", "data-testid": `${testid}-max` },
      known.length ? `0–${format(Math.max(...known))}` : "no data");
    return el("span", { class: "trend" }, el("span", { class: "muted" }, label), svg, scale);
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

  // A table cell that keeps its column name, shown as a caption on narrow screens.
  const cell = (label, attrs, ...children) =>
    el("td", { "data-label": label, ...(attrs || {}) }, ...children);

  function trends(lane, history) {
    const id = (what) => `lane-${lane.name}-${what}`;
    const series = history.lanes[lane.name] || {};
    const ttft = series.ttft_p95_ms || [];
    // Lanes that do not stream have no TTFT: their trend is the whole request's duration.
    const streamed = ttft.some((v) => v !== null);
    return [
      sparkline(series.queue_wait_p95_ms || [], id("spark-queue"), "wait", fmtMs),
      streamed
        ? sparkline(ttft, id("spark"), "TTFT", fmtMs)
        : sparkline(series.duration_p95_ms || [], id("spark"), "duration", fmtMs),
    ];
  }

  function laneRow(lane, history) {
    const id = (what) => `lane-${lane.name}-${what}`;
    const ms = (metric, what, testid) =>
      cell(what, { "data-testid": id(testid) }, fmtMs(lane[metric]["1m"].p95_ms));
    return el(
      "tr",
      { "data-testid": id("row") },
      el("th", { scope: "row" }, lane.name, lane.offloadable ? " ⇄" : ""),
      cell("in flight", {}, el("span", { "data-testid": id("in-flight") },
        `${lane.in_flight}/${lane.max_concurrency}`),
        bar(lane.in_flight, lane.max_concurrency, id("in-flight-bar"))),
      cell("limit", { "data-testid": id("adaptive-limit"),
        title: "adaptive limit: lowered while chats are slow, all slots while none runs" },
        lane.adaptive_limit == null ? "—" : lane.adaptive_limit),
      cell("queued", {}, el("span", { "data-testid": id("queued") }, lane.queued),
        bar(lane.queued, lane.max_queue, id("queue-bar"))),
      cell("requests 1m", { "data-testid": id("requests") }, lane.requests["1m"]),
      ms("queue_wait", "queue wait p95", "queue-p95"),
      cell("TTFT p50", { "data-testid": id("ttft-p50") }, fmtMs(lane.ttft["1m"].p50_ms)),
      ms("ttft", "TTFT p95", "ttft-p95"),
      ms("gap_p95", "gap p95", "gap-p95"),
      ms("duration", "duration p95", "duration-p95"),
      cell("last 15 min", { class: "trends" }, ...trends(lane, history)),
      cell("tokens", { class: "tokens", "data-testid": id("tokens") }, tokens(lane)),
    );
  }

  // What the adaptive limits hold chats to on this upstream: the SLO, or just above the
  // engine's floor when the SLO is below it (docs/policy.md, `slo`).
  function chatTarget(up, limits, slo) {
    if (!limits) return "";
    const floor = limits.engine_floor_ratio;
    const held = limits.effective_target_ratio;
    const why = floor === null
      ? "the SLO; engine floor not learned yet"
      : held > slo
        ? `the SLO ×${slo} is below this engine's floor ×${floor.toFixed(2)}`
        : `the SLO; engine floor ×${floor.toFixed(2)}`;
    return el("p", { title: limits.reason }, "chats held to ",
      el("b", { "data-testid": `upstream-${up.name}-chat-target` }, `×${held.toFixed(2)}`),
      el("span", { class: "muted" }, ` of baseline (${why})`));
  }

  function upstreamCard(up, limits, slo) {
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
      chatTarget(up, limits, slo),
      up.discovery_error ? el("p", { class: "error" }, up.discovery_error) : "",
    );
  }

  function renderOffload(offload) {
    const banner = $("offload");
    banner.className = `banner ${offload.state}`;
    const early = Object.entries(offload.early_sent || {})
      .map(([lane, count]) => `${lane} ${count}`).join(", ");
    const text = offload.configured
      ? `Offload: ${offload.state} (mode ${offload.mode}) — ${offload.reason}` +
        (early ? ` · sent remote early, beside chats: ${early}` : "")
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

  // What the header counts, in words: every request holding a slot, where, and who waits.
  function summary(totals) {
    const local = totals.local;
    const remote = totals.remote;
    const where = [`${local.in_flight} of ${local.capacity} local slots`];
    if (remote) where.push(`${remote.in_flight} of ${remote.capacity} remote`);
    return el("span", {},
      el("b", { "data-testid": "summary-in-flight" }, totals.in_flight),
      ` requests in flight (${where.join(", ")}) · `,
      el("b", { "data-testid": "summary-queued" }, totals.queued), " queued");
  }

  function renderAlerts(policy) {
    const reload = $("reload-banner");
    reload.hidden = !policy.reload_error;
    reload.replaceChildren(policy.reload_error
      ? el("span", { "data-testid": "reload-error" },
        `The last policy reload was refused; policy v${policy.version} stays in force. `,
        el("pre", {}, policy.reload_error))
      : "");
    const access = policy.access_change;
    $("access-banner").hidden = !access;
    $("access-banner").replaceChildren(access
      ? el("span", { "data-testid": "access-change" },
        `Reload to v${access.version} changed who may call: `, access.changes.join("; "))
      : "");
  }

  function render(doc) {
    const at = new Date(doc.generated_at * 1000);
    const stamp = $("generated-at");
    stamp.textContent = at.toLocaleTimeString();
    stamp.dateTime = at.toISOString();
    stamp.dataset.value = String(doc.generated_at);
    $("summary").replaceChildren(summary(doc.totals), ` · policy v${doc.policy.version}`);
    renderAlerts(doc.policy);
    renderOffload(doc.offload);
    $("lanes").tBodies[0].replaceChildren(...doc.lanes.map((l) => laneRow(l, doc.history)));
    const limits = doc.adaptive || { upstreams: [] };
    const held = new Map((limits.upstreams || []).map((a) => [a.upstream, a]));
    $("upstreams").replaceChildren(...doc.upstreams.map(
      (up) => upstreamCard(up, held.get(up.name), limits.interactive_ttft_ratio)));
    renderHost(doc.host);
    const policy = doc.policy;
    $("policy").textContent =
      `policy ${policy.source} v${policy.version}, loaded ` +
      new Date(policy.loaded_at * 1000).toLocaleString() +
      ` · trends: p95 per ${doc.history.slice_s} s over 15 minutes, from 0`;
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
