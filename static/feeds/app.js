// mpfeed: small helpers for every page (no framework, no build step).
"use strict";

// Copy buttons: <button data-copy="#input-id">Copy</button>. The button says "Copied" for a moment (or that
// the copy failed), then its own label again; clicked again meanwhile, it still goes back to its own label.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  if (button.dataset.label === undefined) button.dataset.label = button.textContent;
  field.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(field.value);
    copied = true;
  } catch (e) {
    try { copied = document.execCommand("copy"); } catch (e2) { copied = false; }
  }
  button.textContent = copied ? "Copied" : "Not copied: press Ctrl+C";
  clearTimeout(Number(button.dataset.timer || 0));
  button.dataset.timer = String(setTimeout(() => { button.textContent = button.dataset.label; }, 1500));
});

// Bar charts: <svg class="chart" data-series='[{"label": "2026-11-01", "value": 12}, ...]' data-color="#2450d4">
function drawBars(svg) {
  const series = JSON.parse(svg.dataset.series || "[]");
  const width = 300, height = 60, gap = 1;
  const max = Math.max(1, ...series.map((p) => p.value));
  const barWidth = series.length ? (width - gap * (series.length - 1)) / series.length : width;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.replaceChildren();
  series.forEach((point, i) => {
    const h = Math.max(point.value ? 2 : 0, (point.value / max) * (height - 2));
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", i * (barWidth + gap));
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", barWidth);
    rect.setAttribute("height", h);
    rect.setAttribute("fill", svg.dataset.color || "#2450d4");
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${point.label}: ${point.value}`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
}
window.mpfeedDrawBars = drawBars;
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("svg.chart[data-series]").forEach(drawBars));
