// The aggregate tables and plots of one run (or of several runs, on the compare page).

import { barChart, lineChart } from "./plots.js";

export function fmt(value, digits = 2) {
  if (value === null || value === undefined || (typeof value === "number" && !Number.isFinite(value))) return "—";
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

function paramsText(params) {
  return Object.entries(params).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
}

// A table with one row per method (or per run and method), the best value per column in bold.
export function resultTable(block, { runColumn = false } = {}) {
  const table = document.createElement("table");
  table.className = "data results";
  table.dataset.protocol = block.name;
  const head = ["Method", ...(runColumn ? ["Run"] : []), "n", "failed",
    ...block.columns.map((c) => `${c.label} ${c.better === "higher" ? "↑" : "↓"}`)];
  table.innerHTML = `<thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody></tbody>`;
  const body = table.querySelector("tbody");
  for (const row of block.rows) {
    const tr = document.createElement("tr");
    const cells = [row.label, ...(runColumn ? [row.run_name] : []), row.n, row.failed];
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    for (const col of block.columns) {
      const td = document.createElement("td");
      const v = row.values[col.key];
      td.textContent = fmt(v);
      td.className = "mono";
      if (v !== null && v !== undefined && v === block.best[col.key]) { td.classList.add("best"); td.title = "best in this column"; }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  return table;
}

// A dot-separated path into a row's extras; "*" maps the rest of the path over a list.
export function pick(value, path) {
  const parts = path.split(".");
  for (let i = 0; i < parts.length; i++) {
    if (value === null || value === undefined) return undefined;
    if (parts[i] === "*") {
      if (!Array.isArray(value)) return undefined;
      const rest = parts.slice(i + 1).join(".");
      return rest ? value.map((item) => pick(item, rest)) : value;
    }
    value = value[parts[i]];
  }
  return value;
}

function lineSeries(spec, rows) {
  const series = [];
  for (const r of rows) {
    for (const s of spec.series) {
      const ys = pick(r.extras, s.y);
      if (!Array.isArray(ys) || !ys.length) continue;
      const xs = s.x ? pick(r.extras, s.x) : ys.map((_, i, a) => i / Math.max(1, a.length - 1));
      if (!Array.isArray(xs) || xs.length !== ys.length) continue;
      series.push({ label: `${r.label}${s.suffix || ""}`, xs, ys, dashed: s.dashed === undefined ? r.baseline : s.dashed });
    }
  }
  return series;
}

// One declared plot (the protocol block's "plots", from its metric family) drawn from the rows'
// extras; null when no row has the data.
export function drawPlot(spec, rows) {
  if (spec.kind === "line") {
    const series = lineSeries(spec, rows);
    return series.length ? lineChart({ title: spec.title, series, xLabel: spec.x_label, yLabel: spec.y_label,
      yMin: spec.y_min, yMax: spec.y_max }) : null;
  }
  if (spec.kind === "bars") {
    const withData = rows.filter((r) => Array.isArray(pick(r.extras, spec.values)));
    if (!withData.length) return null;
    return barChart({ title: spec.title, groups: pick(withData[0].extras, spec.groups),
      series: withData.map((r) => ({ label: r.label, values: pick(r.extras, spec.values) })), yLabel: spec.y_label });
  }
  return null;
}

// The plots a protocol declares, and always a bar chart of the table's first column.
export function protocolPlots(block) {
  const rows = block.rows;
  const plots = (block.plots || []).map((spec) => drawPlot(spec, rows)).filter(Boolean);
  const first = block.columns[0];
  if (first) {
    plots.push(barChart({ title: `${first.label} by method`, groups: rows.map((r) => r.label),
      series: [{ label: first.label, values: rows.map((r) => r.values[first.key]) }], yLabel: first.label }));
  }
  return plots;
}

export function renderResults(container, results, options = {}) {
  container.innerHTML = "";
  const blocks = (results && results.protocols) || [];
  if (!blocks.length) {
    container.innerHTML = '<div class="empty">No results yet.</div>';
    return;
  }
  for (const block of blocks) {
    const section = document.createElement("section");
    section.className = "panel protocol-block";
    section.dataset.testid = `protocol-${block.name}`;
    const h = document.createElement("h3");
    h.textContent = `${block.name} (${block.metric})`;
    const p = document.createElement("p");
    p.className = "small muted mono protocol-params";
    p.textContent = paramsText(block.params);
    const d = document.createElement("p");
    d.className = "small";
    d.textContent = block.description || "";
    section.append(h, d, p);
    if (block.params_differ) {
      const warn = document.createElement("p");
      warn.className = "notice error";
      warn.textContent = "These runs used different parameters under this protocol name; compare with care.";
      section.appendChild(warn);
    }
    section.appendChild(resultTable(block, options));
    const plots = document.createElement("div");
    plots.className = "plots";
    protocolPlots(block).forEach((svg) => plots.appendChild(svg));
    section.appendChild(plots);
    container.appendChild(section);
  }
}
