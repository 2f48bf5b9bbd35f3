// mpfeed run page: the chart over time, and live numbers and lists while the run works (no framework, no build
// step). The page embeds its status as JSON (#run-status); while the run is queued, running or waiting, status.json
// is polled every 2 s and the status, message, counters, bar and chart are updated in place, and the deliveries and
// rejected records lists are fetched again (the lists fragment, with the page's own query: state and pages) and
// swapped in. When the run stops, polling stops and the page reloads once (its buttons change with the status).
"use strict";

(() => {
  const root = document.getElementById("run");
  const initial = document.getElementById("run-status");
  if (!root || !initial) return;
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 2000;
  const MIN_SLOTS = 30;
  const css = getComputedStyle(document.documentElement);
  const ACCEPTED = css.getPropertyValue("--accent").trim() || "#2450d4";
  const THROTTLED = css.getPropertyValue("--bad").trim() || "#b3261e";
  const SERVER = css.getPropertyValue("--warn").trim() || "#a35f00";
  const NETWORK = "#7a3db8";
  const MUTED = css.getPropertyValue("--muted").trim() || "#5b6475";

  const find = (name) => root.querySelector(`[data-run="${name}"]`);

  function node(name, attrs = {}, text = "") {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
    if (text) element.textContent = text;
    return element;
  }

  // Bars: events accepted per bucket. Lines: 429 answers, 5xx answers and network failures per bucket, on one
  // scale of their own; a dashed line: the mean latency of the requests answered, on a third scale. Labels: the
  // peaks and the first and last times. Each bucket has a tooltip over its whole height.
  const FAILURES = [
    ["throttled", THROTTLED, "× 429"],
    ["server_errors", SERVER, "× 5xx"],
    ["network_errors", NETWORK, "network failures"],
  ];

  function drawChart(svg, points) {
    const width = 600, height = 150, top = 16, bottom = 18;
    const plot = height - top - bottom;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    if (!points.length) return;
    const peak = (key) => Math.max(0, ...points.map((p) => p[key] || 0));
    const peakAccepted = peak("accepted");
    const peakFailures = Math.max(...FAILURES.map(([key]) => peak(key)));
    const peakLatency = peak("latency_ms");
    const maxAccepted = Math.max(1, peakAccepted), maxFailures = Math.max(1, peakFailures);
    const maxLatency = Math.max(1, peakLatency);
    const slot = width / Math.max(points.length, MIN_SLOTS); // a short run's few bars stay bars, on the left
    const gap = slot > 4 ? 1 : 0;
    const y = (value, max) => top + plot - (value / max) * plot;
    const x = (i) => (i + 0.5) * slot;
    points.forEach((p, i) => {
      const h = p.accepted ? Math.max(2, (p.accepted / maxAccepted) * plot) : 0;
      svg.appendChild(node("rect", { x: i * slot, y: top + plot - h, width: Math.max(1, slot - gap), height: h, fill: ACCEPTED }));
    });
    if (peakLatency) {
      const line = points.map((p, i) => (p.latency_ms == null ? null : `${x(i)},${y(p.latency_ms, maxLatency)}`)).filter(Boolean);
      svg.appendChild(node("polyline", { points: line.join(" "), fill: "none", stroke: MUTED, "stroke-width": 1.5, "stroke-dasharray": "4 3", "data-series": "latency_ms" }));
    }
    for (const [key, color] of FAILURES) {
      if (!peak(key)) continue;
      const line = points.map((p, i) => `${x(i)},${y(p[key] || 0, maxFailures)}`).join(" ");
      svg.appendChild(node("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 2, "stroke-linejoin": "round", "data-series": key }));
      points.forEach((p, i) => {
        if (p[key]) svg.appendChild(node("circle", { cx: x(i), cy: y(p[key], maxFailures), r: 3, fill: color }));
      });
    }
    const small = { "font-size": 11, fill: MUTED };
    svg.appendChild(node("text", { ...small, x: 0, y: 11 }, `peak ${peakAccepted} events`));
    const peaks = FAILURES.map(([key, , label]) => `${peak(key)} ${label}`).join(" · ");
    const latency = peakLatency ? ` · latency up to ${peakLatency} ms` : "";
    svg.appendChild(node("text", { ...small, x: width, y: 11, "text-anchor": "end" }, `peak ${peaks}${latency}`));
    svg.appendChild(node("text", { ...small, x: 0, y: height - 4 }, points[0].label));
    if (points.length > 1) {
      const end = Math.max(points.length * slot, 80);
      svg.appendChild(node("text", { ...small, x: end, y: height - 4, "text-anchor": "end" }, points[points.length - 1].label));
    }
    points.forEach((p, i) => {
      const hover = node("rect", { x: i * slot, y: top, width: slot, height: plot, fill: "transparent" });
      const failures = FAILURES.map(([key, , label]) => `${p[key] || 0} ${label}`).join(", ");
      const ms = p.latency_ms == null ? "no answer" : `mean latency ${p.latency_ms} ms`;
      hover.appendChild(node("title", {}, `${p.label}: ${p.accepted} events accepted, ${failures}, ${ms}`));
      svg.appendChild(hover);
    });
  }

  // The lists as the server has them now, for the page's own query (filter, pages): each section swapped in
  // when it changed.
  async function refreshLists() {
    const url = root.dataset.listsUrl + window.location.search;
    const response = await fetch(url, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!response.ok || response.redirected) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const section of fresh.querySelectorAll("[data-list]")) {
      const current = root.querySelector(`[data-list="${section.dataset.list}"]`);
      if (current && current.innerHTML !== section.innerHTML) current.replaceWith(document.importNode(section, true));
    }
  }

  const when = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "not yet");

  function render(status) {
    const badge = find("status");
    badge.textContent = status.status_label;
    badge.className = `badge ${status.status}`;
    const message = find("message");
    message.textContent = status.message;
    message.className = `msg ${status.level}`;
    message.hidden = !status.message;
    for (const [key, value] of Object.entries(status.counters)) {
      const counter = root.querySelector(`[data-counter="${key}"]`);
      if (counter) counter.textContent = key === "seconds_waited" ? Number(value).toFixed(1) : String(value);
    }
    const percent = Math.round((status.progress || 0) * 100);
    const bar = find("progress");
    bar.setAttribute("aria-valuenow", percent);
    bar.value = percent;
    bar.textContent = `${percent}%`;
    find("progress_text").textContent = status.progress_text;
    find("reading").textContent = status.reading_text;
    find("started_at").textContent = when(status.started_at);
    find("finished_at").textContent = when(status.finished_at);
    find("chart_empty").hidden = status.chart.length > 0;
    find("chart_step").textContent = status.chart_step_minutes > 1 ? `${status.chart_step_minutes} minutes` : "minute";
    drawChart(document.getElementById("run-chart"), status.chart);
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const response = await fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (response.redirected || response.status === 403 || response.status === 404) return; // logged out or gone
        if (response.ok) {
          const status = await response.json();
          render(status);
          await refreshLists();
          if (!status.live) {
            window.location.reload(); // once: the reloaded page of a stopped run does not poll
            return;
          }
        }
      } catch (error) {
        // A network hiccup or a restarting server: try again at the next tick.
      }
    }
    setTimeout(poll, POLL_MS);
  }

  const status = JSON.parse(initial.textContent);
  drawChart(document.getElementById("run-chart"), status.chart);
  if (root.dataset.live === "1") setTimeout(poll, POLL_MS);
})();
