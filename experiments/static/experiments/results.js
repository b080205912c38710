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

function curveSeries(rows, key) {
  return rows.filter((r) => r.extras && r.extras[key]).map((r) => ({
    label: r.label, xs: r.extras[key].map((_, i, a) => i / (a.length - 1)), ys: r.extras[key], dashed: r.baseline,
  }));
}

// The plots a protocol has: curves, accuracy vs fraction, similarity vs layer, group bars, and
// always a bar chart of the table's first column.
export function protocolPlots(block) {
  const plots = [];
  const rows = block.rows;
  if (block.metric === "insertion-deletion") {
    const ins = curveSeries(rows, "insertion_curve"), del = curveSeries(rows, "deletion_curve");
    if (ins.length) plots.push(lineChart({ title: "Mean insertion curve", series: ins, xLabel: "fraction of pixels inserted", yLabel: "probability", yMin: 0, yMax: 1 }));
    if (del.length) plots.push(lineChart({ title: "Mean deletion curve", series: del, xLabel: "fraction of pixels deleted", yLabel: "probability", yMin: 0, yMax: 1 }));
    const withGroups = rows.filter((r) => r.extras && r.extras.groups);
    if (withGroups.length) {
      const groups = withGroups[0].extras.groups.map((g) => g.label);
      plots.push(barChart({ title: "Overall (insertion − deletion) by clean top-1 confidence", groups,
        series: withGroups.map((r) => ({ label: r.label, values: r.extras.groups.map((g) => g.overall) })), yLabel: "overall ×100" }));
    }
  } else if (block.metric === "perturbation") {
    for (const mode of ["predicted", "target"]) {
      const series = [];
      for (const r of rows) {
        const m = r.extras && r.extras.modes && r.extras.modes[mode];
        if (!m) continue;
        series.push({ label: `${r.label} (positive)`, xs: m.fractions, ys: m.positive_accuracy });
        series.push({ label: `${r.label} (negative)`, xs: m.fractions, ys: m.negative_accuracy, dashed: true });
      }
      if (series.length) plots.push(lineChart({ title: `Accuracy vs fraction removed (${mode} class)`, series, xLabel: "fraction removed", yLabel: "top-1 accuracy", yMin: 0, yMax: 1 }));
    }
  } else if (block.metric === "sanity") {
    for (const mode of ["cascading", "independent"]) {
      const series = [];
      for (const r of rows) {
        const steps = r.extras && r.extras.steps && r.extras.steps[mode];
        if (!steps) continue;
        series.push({ label: r.label, xs: steps.map((s) => s.step), ys: steps.map((s) => s.spearman_abs.mean) });
      }
      if (series.length) plots.push(lineChart({ title: `Spearman |map| vs randomised layers (${mode})`, series, xLabel: "layers randomised (output first)", yLabel: "similarity", yMin: -0.2, yMax: 1 }));
    }
  }
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
