// Small SVG charts drawn in the browser (no library, no CDN): lines and grouped bars.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
  "#7c3aed", "#b45309", "#0f766e", "#64748b"];

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, value, attrs = {}) {
  const t = el("text", { x, y, "font-size": 11, fill: "#374151", ...attrs }, parent);
  t.textContent = value;
  return t;
}

function frame(width, height, title) {
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart" });
  if (title) text(svg, width / 2, 14, title, { "text-anchor": "middle", "font-weight": 600, "font-size": 12 });
  return svg;
}

function ticks(lo, hi, n = 5) {
  const out = [];
  for (let i = 0; i <= n; i++) out.push(lo + ((hi - lo) * i) / n);
  return out;
}

function legend(svg, series, x, y) {
  series.forEach((s, i) => {
    el("rect", { x, y: y + i * 15, width: 10, height: 10, fill: s.color || PALETTE[i % PALETTE.length] }, svg);
    text(svg, x + 14, y + i * 15 + 9, s.label);
  });
}

// series: [{label, xs, ys}]; the y range is [yMin, yMax] (default from the data, or [0, 1]).
export function lineChart({ title, series, xLabel = "", yLabel = "", yMin = null, yMax = null, width = 560, height = 280 }) {
  const svg = frame(width, height, title);
  const m = { l: 46, r: 170, t: 24, b: 34 };
  const w = width - m.l - m.r, h = height - m.t - m.b;
  const xs = series.flatMap((s) => s.xs), ys = series.flatMap((s) => s.ys).filter((v) => v !== null && Number.isFinite(v));
  const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, 1);
  const y0 = yMin ?? Math.min(...ys, 0), y1 = yMax ?? Math.max(...ys, 1);
  const sx = (v) => m.l + ((v - x0) / (x1 - x0 || 1)) * w;
  const sy = (v) => m.t + h - ((v - y0) / (y1 - y0 || 1)) * h;
  for (const t of ticks(y0, y1)) {
    el("line", { x1: m.l, x2: m.l + w, y1: sy(t), y2: sy(t), stroke: "#e5e7eb" }, svg);
    text(svg, m.l - 6, sy(t) + 4, t.toFixed(2), { "text-anchor": "end" });
  }
  for (const t of ticks(x0, x1)) text(svg, sx(t), m.t + h + 14, t.toFixed(1), { "text-anchor": "middle" });
  el("rect", { x: m.l, y: m.t, width: w, height: h, fill: "none", stroke: "#9ca3af" }, svg);
  text(svg, m.l + w / 2, height - 4, xLabel, { "text-anchor": "middle" });
  text(svg, 12, m.t + h / 2, yLabel, { transform: `rotate(-90 12 ${m.t + h / 2})`, "text-anchor": "middle" });
  series.forEach((s, i) => {
    const pts = s.xs.map((x, j) => [x, s.ys[j]]).filter(([, y]) => y !== null && Number.isFinite(y));
    if (!pts.length) return;
    el("polyline", {
      points: pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
      fill: "none", stroke: s.color || PALETTE[i % PALETTE.length], "stroke-width": 2,
      "stroke-dasharray": s.dashed ? "5 3" : "",
    }, svg);
  });
  legend(svg, series, m.l + w + 12, m.t);
  return svg;
}

// groups: category labels on the x axis; series: [{label, values (one per group, null = empty)}].
export function barChart({ title, groups, series, yLabel = "", width = 560, height = 280 }) {
  const svg = frame(width, height, title);
  const m = { l: 46, r: 170, t: 24, b: 52 };
  const w = width - m.l - m.r, h = height - m.t - m.b;
  const vals = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const y0 = Math.min(0, ...vals), y1 = Math.max(1, ...vals);
  const sy = (v) => m.t + h - ((v - y0) / (y1 - y0 || 1)) * h;
  for (const t of ticks(y0, y1)) {
    el("line", { x1: m.l, x2: m.l + w, y1: sy(t), y2: sy(t), stroke: "#e5e7eb" }, svg);
    text(svg, m.l - 6, sy(t) + 4, t.toFixed(1), { "text-anchor": "end" });
  }
  const gw = w / Math.max(1, groups.length), bw = (gw * 0.8) / Math.max(1, series.length);
  groups.forEach((g, gi) => {
    const gx = m.l + gi * gw + gw * 0.1;
    series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === null || v === undefined || !Number.isFinite(v)) return;
      const top = sy(Math.max(v, 0)), bottom = sy(Math.min(v, 0));
      const bar = el("rect", { x: gx + si * bw, y: top, width: Math.max(1, bw - 1), height: Math.max(1, bottom - top),
        fill: s.color || PALETTE[si % PALETTE.length] }, svg);
      const tip = el("title", {}, bar);
      tip.textContent = `${s.label} · ${g}: ${v.toFixed(2)}`;
    });
    text(svg, gx + gw * 0.4, m.t + h + 12, g, { "text-anchor": "end", transform: `rotate(-35 ${gx + gw * 0.4} ${m.t + h + 12})`, "font-size": 9 });
  });
  el("line", { x1: m.l, x2: m.l + w, y1: sy(0), y2: sy(0), stroke: "#6b7280" }, svg);
  text(svg, 12, m.t + h / 2, yLabel, { transform: `rotate(-90 12 ${m.t + h / 2})`, "text-anchor": "middle" });
  legend(svg, series, m.l + w + 12, m.t);
  return svg;
}
