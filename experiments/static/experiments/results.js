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

// "protocol:column" keys of the rankings, as the tables name them.
function metricLabels(blocks) {
  const labels = {};
  for (const block of blocks) {
    for (const col of block.columns) labels[`${block.name}:${col.key}`] = `${col.label} · ${block.name}`;
  }
  return labels;
}

function cell(tr, value, { tag = "td", className = "", title = "" } = {}) {
  const td = document.createElement(tag);
  td.textContent = value;
  if (className) td.className = className;
  if (title) td.title = title;
  tr.appendChild(td);
  return td;
}

function ordinal(n) {
  const rounded = Number.isInteger(n) ? n : Number(n.toFixed(1));
  if (!Number.isInteger(rounded)) return String(rounded);
  const mod100 = rounded % 100;
  const suffix = mod100 >= 11 && mod100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[rounded % 10] || "th");
  return `${rounded}${suffix}`;
}

// Each method's rank per metric and its mean rank ± spread (population std), best mean first.
export function rankingTable(rankings, labels) {
  const table = document.createElement("table");
  table.className = "data rankings";
  table.dataset.testid = "ranking-table";
  const head = document.createElement("tr");
  cell(head, "Method", { tag: "th" });
  cell(head, "Mean rank ± spread", { tag: "th", title: "mean of the ranks over the metrics the method has (1 = best); ± their standard deviation" });
  for (const metric of rankings.metrics) cell(head, labels[metric] || metric, { tag: "th" });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  const body = document.createElement("tbody");
  rankings.aggregate.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.dataset.method = row.method;
    cell(tr, row.method);
    const agg = cell(tr, row.mean_rank === null ? "—" : `${fmt(row.mean_rank)} ± ${fmt(row.spread)}`, { className: "mono" });
    if (i === 0 && row.mean_rank !== null) agg.classList.add("best");
    for (const metric of rankings.metrics) {
      const rank = (rankings.ranks[metric] || {})[row.method];
      const td = cell(tr, rank === undefined ? "—" : ordinal(rank), { className: "mono" });
      if (rank === 1) td.classList.add("best");
    }
    body.appendChild(tr);
  });
  table.append(thead, body);
  return table;
}

// Blue for agreement (ρ → 1), red for disagreement (ρ → −1), white around 0.
export function agreementColour(rho) {
  if (rho === null || rho === undefined) return "#f3f4f6";
  const t = Math.max(-1, Math.min(1, rho));
  const [r, g, b] = t >= 0 ? [255 - 146 * t, 255 - 96 * t, 255] : [255, 255 + 120 * t, 255 + 120 * t];
  return `rgb(${Math.round(r)}, ${Math.round(g)}, ${Math.round(b)})`;
}

// The Spearman rank correlation between every two metrics, coloured by its value.
export function agreementTable(rankings, labels) {
  const table = document.createElement("table");
  table.className = "data agreement";
  table.dataset.testid = "agreement-matrix";
  const head = document.createElement("tr");
  cell(head, "Metric", { tag: "th", title: "Spearman rank correlation over the methods both metrics rank" });
  for (const metric of rankings.metrics) cell(head, labels[metric] || metric, { tag: "th" });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  const body = document.createElement("tbody");
  for (const a of rankings.metrics) {
    const tr = document.createElement("tr");
    cell(tr, labels[a] || a, { tag: "th" });
    for (const b of rankings.metrics) {
      const rho = (rankings.agreement[a] || {})[b];
      const td = cell(tr, rho === null || rho === undefined ? "—" : rho.toFixed(2), { className: "mono agreement-cell",
        title: rho === null || rho === undefined ? "fewer than three methods ranked by both, or a constant ranking" : "" });
      td.style.backgroundColor = agreementColour(rho);
    }
    body.appendChild(tr);
  }
  table.append(thead, body);
  return table;
}

export function renderRankings(rankings, blocks) {
  const section = document.createElement("section");
  section.className = "panel protocol-block";
  section.dataset.testid = "rankings";
  const labels = metricLabels(blocks);
  // A column no method has a value in (e.g. "difficult" on a set without difficult objects) ranks nothing.
  rankings = { ...rankings, metrics: rankings.metrics.filter((m) => Object.keys(rankings.ranks[m] || {}).length) };
  section.innerHTML = "<h3>Rankings across metrics</h3>"
    + '<p class="small muted">Rank 1 is best in each column; ties share the mean of their ranks. '
    + "The mean rank is over the metrics a method has, ± the standard deviation of its ranks.</p>";
  section.appendChild(rankingTable(rankings, labels));
  const h = document.createElement("h4");
  h.textContent = "How the metrics agree";
  const p = document.createElement("p");
  p.className = "small muted";
  p.textContent = "Spearman rank correlation of the methods' ranks between two metrics (each turned so that 1 is best): "
    + "1 = the same order, −1 = the opposite order.";
  section.append(h, p, agreementTable(rankings, labels));
  return section;
}

// A preset run: the published numbers beside ours, each marked match / differ by the preset's
// tolerance, and the sentences the preset states from the results.
export function renderPreset(preset) {
  const section = document.createElement("section");
  section.className = "panel protocol-block";
  section.dataset.testid = "preset-comparison";
  const h = document.createElement("h3");
  h.textContent = `Preset: ${preset.title}`;
  const rule = document.createElement("p");
  rule.className = "small muted";
  rule.dataset.testid = "preset-rule";
  rule.textContent = preset.rule;
  section.appendChild(h);
  if (preset.rows && preset.rows.length) section.appendChild(rule);
  if (preset.note) {
    const note = document.createElement("p");
    note.className = "small";
    note.textContent = preset.note;
    section.appendChild(note);
  }
  if (preset.statements && preset.statements.length) {
    const list = document.createElement("ul");
    list.dataset.testid = "preset-statements";
    for (const text of preset.statements) {
      const li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    }
    section.appendChild(list);
  }
  if (preset.rows && preset.rows.length) {
    const table = document.createElement("table");
    table.className = "data published";
    table.dataset.testid = "published-vs-ours";
    const head = document.createElement("tr");
    for (const title of ["Method", "Protocol", "Metric", "Published", "Ours", "Δ", "Verdict", "Source"]) cell(head, title, { tag: "th" });
    const thead = document.createElement("thead");
    thead.appendChild(head);
    const body = document.createElement("tbody");
    for (const row of preset.rows) {
      const tr = document.createElement("tr");
      tr.dataset.verdict = row.verdict;
      cell(tr, row.method);
      cell(tr, row.protocol, { className: "mono" });
      cell(tr, row.column_label);
      cell(tr, fmt(row.published), { className: "mono" });
      cell(tr, fmt(row.ours), { className: "mono" });
      cell(tr, row.difference === null ? "—" : `${row.difference > 0 ? "+" : ""}${fmt(row.difference)}`, { className: "mono" });
      const badge = document.createElement("span");
      badge.className = `badge ${row.verdict === "match" ? "ok" : row.verdict === "differ" ? "bad" : ""}`;
      badge.textContent = row.verdict;
      cell(tr, "").appendChild(badge);
      cell(tr, row.source, { className: "small" });
      body.appendChild(tr);
    }
    table.append(thead, body);
    section.appendChild(table);
  }
  return section;
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
  if (results.preset) container.insertBefore(renderPreset(results.preset), container.firstChild);
  const rankings = results.rankings;
  if (rankings && rankings.metrics && rankings.metrics.length && rankings.aggregate.length > 1) {
    container.appendChild(renderRankings(rankings, blocks));
  }
}
