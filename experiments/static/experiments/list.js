// The new-run form and the list of runs.

import { api } from "../frontend/js/api.js";

const config = JSON.parse(document.getElementById("experiments-config").textContent);
const options = config.options;
const $ = (sel) => document.querySelector(sel);

function fillModels() {
  const select = $("#run-model");
  for (const m of options.models) {
    const opt = new Option(`${m.name}${m.weights_present ? "" : " (weights missing)"}`, m.id);
    opt.disabled = !m.weights_present;
    opt.dataset.family = m.family;
    select.appendChild(opt);
  }
  const first = options.models.find((m) => m.weights_present);
  if (first) select.value = first.id;
  select.addEventListener("change", fillMethods);
}

function fillDatasets() {
  const select = $("#run-dataset");
  for (const d of options.datasets) select.appendChild(new Option(d.label, d.key));
  select.value = "sample-localisation";
  select.addEventListener("change", fillPaths);
  fillPaths();
}

function fillPaths() {
  const kind = options.datasets.find((d) => d.key === $("#run-dataset").value);
  const box = $("#dataset-paths");
  box.innerHTML = "";
  for (const [field, required] of [...kind.paths.map((p) => [p, true]), ...kind.optional_paths.map((p) => [p, false])]) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    wrap.innerHTML = `<label></label><input type="text" data-path="${field}" placeholder="a path under the server's data roots">`;
    wrap.querySelector("label").textContent = `${field}${required ? "" : " (optional)"}`;
    box.appendChild(wrap);
  }
}

function fillMethods() {
  const select = $("#run-model");
  const family = select.selectedOptions[0] ? select.selectedOptions[0].dataset.family : "cnn";
  const list = $("#method-list");
  list.innerHTML = "";
  for (const m of options.methods.filter((m) => m.families.includes(family))) {
    const li = document.createElement("li");
    li.innerHTML = `<label><input type="checkbox" class="method-pick" value="${m.key}"> <span></span></label>`
      + (m.baseline ? "" : `<label class="small"><input type="checkbox" class="method-enhance" data-key="${m.key}"> enhance</label>`);
    li.querySelector("span").textContent = m.label;
    list.appendChild(li);
  }
}

function fillProtocols() {
  const list = $("#protocol-list");
  for (const p of options.protocols) {
    const li = document.createElement("li");
    li.innerHTML = `<label><input type="checkbox" class="protocol-pick" value="${p.name}"> <strong></strong></label><span class="small muted"></span>`;
    li.querySelector("strong").textContent = p.name;
    li.querySelector(".muted").textContent = p.metric;
    li.title = p.description;
    list.appendChild(li);
  }
}

// The body of the run the form describes. ``forEstimate``: without the start time, which the
// estimate does not depend on (an unfilled time must not hide it).
function request({ forEstimate = false } = {}) {
  const methods = [];
  for (const box of document.querySelectorAll(".method-pick:checked")) {
    methods.push({ key: box.value, enhance: false });
    const enhance = document.querySelector(`.method-enhance[data-key="${box.value}"]`);
    if (enhance && enhance.checked) methods.push({ key: box.value, enhance: true });
  }
  const paths = {};
  for (const input of document.querySelectorAll("[data-path]")) if (input.value.trim()) paths[input.dataset.path] = input.value.trim();
  const mode = $("#subset-mode").value;
  const subset = mode === "all" ? { mode } : { mode, n: parseInt($("#subset-n").value, 10), seed: parseInt($("#subset-seed").value || "0", 10) };
  const body = {
    name: $("#run-name").value,
    model: parseInt($("#run-model").value, 10),
    dataset: { kind: $("#run-dataset").value, paths, subset },
    methods,
    protocols: [...document.querySelectorAll(".protocol-pick:checked")].map((b) => b.value),
    seed: parseInt($("#run-seed").value || "0", 10),
  };
  if ($("#shard-size").value) body.shard_size = parseInt($("#shard-size").value, 10);
  if (forEstimate) return body;
  const when = document.querySelector('input[name="when"]:checked').value;
  if (when === "at") {
    if (!$("#start-at").value) throw new Error("choose the start time");
    body.start_at = new Date($("#start-at").value).toISOString();
  }
  if (when === "after") body.after_current = true;
  return body;
}

// -- the estimate, shown before submitting and updated as the form changes ---------------------

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function duration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 48 * 3600) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

let estimateTimer = null;
let estimateTurn = 0;

function showEstimate(text, { error = false, rows = [] } = {}) {
  const line = $("#estimate-text");
  line.textContent = text;
  line.classList.toggle("error-text", error);
  const basis = $("#estimate-basis");
  const body = basis.querySelector("tbody");
  body.innerHTML = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const value of [row.method, row.protocol, row.seconds_per_image.toFixed(2), row.source]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  basis.hidden = rows.length === 0;
}

// What the form still lacks before the server can estimate it, said at once (no request).
function incomplete(body) {
  if (!body.methods.length) return "Choose at least one method to see how long the run will take.";
  if (!body.protocols.length) return "Choose at least one protocol to see how long the run will take.";
  return null;
}

async function updateEstimate() {
  const turn = ++estimateTurn;
  const body = request({ forEstimate: true });
  const missing = incomplete(body);
  if (missing) {
    showEstimate(missing);
    $("#estimate").dataset.state = "incomplete";
    return;
  }
  $("#estimate").dataset.state = "loading";
  let answer;
  try {
    answer = await api(`${config.api}estimate/`, { method: "POST", json: body });
  } catch (error) {
    if (turn !== estimateTurn) return;   // a later change has asked again
    showEstimate(`Cannot estimate this run: ${error.message}`, { error: true });
    $("#estimate").dataset.state = "error";
    return;
  }
  if (turn !== estimateTurn) return;
  const parts = [plural(answer.num_images, "image"), plural(answer.methods, "method"), plural(answer.protocols, "protocol")];
  let text = `About ${duration(answer.estimated_seconds)} on one worker (${parts.join(" × ")})`;
  text += answer.shards > 1 ? `, in ${answer.shards} shards that several workers share.` : ".";
  if (answer.prepare) text += " The generated data set is built on a worker first.";
  showEstimate(text, { rows: answer.rows });
  $("#estimate").dataset.state = "ready";
  $("#estimate").dataset.seconds = String(answer.estimated_seconds);
}

// Debounced: typing a number asks once, 350 ms after the last key.
function scheduleEstimate() {
  clearTimeout(estimateTimer);
  if (incomplete(request({ forEstimate: true }))) {
    updateEstimate();
    return;
  }
  $("#estimate").dataset.state = "pending";
  estimateTimer = setTimeout(updateEstimate, 350);
}

$("#new-run").addEventListener("input", scheduleEstimate);
$("#new-run").addEventListener("change", scheduleEstimate);

$("#new-run").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#form-error").textContent = "";
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    const body = request();
    if (!body.methods.length) throw new Error("choose at least one method");
    if (!body.protocols.length) throw new Error("choose at least one protocol");
    const run = await api(config.api, { method: "POST", json: body });
    window.location.href = run.page_url;
  } catch (error) {
    $("#form-error").textContent = error.message;
  } finally {
    if (button) button.disabled = false;
  }
});

$("#compare").addEventListener("click", () => {
  const ids = [...document.querySelectorAll(".compare-pick:checked")].map((b) => b.value);
  window.location.href = `compare/?ids=${ids.join(",")}`;
});

fillModels();
fillDatasets();
fillMethods();
fillProtocols();
updateEstimate();
