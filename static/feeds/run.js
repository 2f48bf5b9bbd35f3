// mpfeed run page: the chart over time, and live numbers while the run works (no framework, no build step).
// The page embeds its status as JSON (#run-status); while the run is queued, running or waiting, status.json is
// polled every 2 s and the status, message, counters, bar and chart are updated in place. When the run stops,
// polling stops and the page reloads once so that the deliveries and rejected records tables are complete.
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
  const MUTED = css.getPropertyValue("--muted").trim() || "#5b6475";

  const find = (name) => root.querySelector(`[data-run="${name}"]`);

  function node(name, attrs = {}, text = "") {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
    if (text) element.textContent = text;
    return element;
  }

  // Bars: events accepted per bucket. Line: 429 answers per bucket, on its own scale. Labels: the peaks and
  // the first and last times. Each bucket has a tooltip over its whole height.
  function drawChart(svg, points) {
    const width = 600, height = 150, top = 16, bottom = 18;
    const plot = height - top - bottom;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    if (!points.length) return;
    const peakAccepted = Math.max(0, ...points.map((p) => p.accepted));
    const peakThrottled = Math.max(0, ...points.map((p) => p.throttled));
    const maxAccepted = Math.max(1, peakAccepted), maxThrottled = Math.max(1, peakThrottled);
    const slot = width / Math.max(points.length, MIN_SLOTS); // a short run's few bars stay bars, on the left
    const gap = slot > 4 ? 1 : 0;
    const y = (value, max) => top + plot - (value / max) * plot;
    points.forEach((p, i) => {
      const h = p.accepted ? Math.max(2, (p.accepted / maxAccepted) * plot) : 0;
      svg.appendChild(node("rect", { x: i * slot, y: top + plot - h, width: Math.max(1, slot - gap), height: h, fill: ACCEPTED }));
    });
    if (peakThrottled) {
      const line = points.map((p, i) => `${(i + 0.5) * slot},${y(p.throttled, maxThrottled)}`).join(" ");
      svg.appendChild(node("polyline", { points: line, fill: "none", stroke: THROTTLED, "stroke-width": 2, "stroke-linejoin": "round" }));
      points.forEach((p, i) => {
        if (p.throttled) svg.appendChild(node("circle", { cx: (i + 0.5) * slot, cy: y(p.throttled, maxThrottled), r: 3, fill: THROTTLED }));
      });
    }
    const small = { "font-size": 11, fill: MUTED };
    svg.appendChild(node("text", { ...small, x: 0, y: 11 }, `peak ${peakAccepted} events`));
    svg.appendChild(node("text", { ...small, x: width, y: 11, "text-anchor": "end", fill: THROTTLED }, `peak ${peakThrottled} × 429`));
    svg.appendChild(node("text", { ...small, x: 0, y: height - 4 }, points[0].label));
    if (points.length > 1) {
      const end = Math.max(points.length * slot, 80);
      svg.appendChild(node("text", { ...small, x: end, y: height - 4, "text-anchor": "end" }, points[points.length - 1].label));
    }
    points.forEach((p, i) => {
      const hover = node("rect", { x: i * slot, y: top, width: slot, height: plot, fill: "transparent" });
      hover.appendChild(node("title", {}, `${p.label}: ${p.accepted} events accepted, ${p.throttled} × 429`));
      svg.appendChild(hover);
    });
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
