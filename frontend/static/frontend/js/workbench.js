// The Explain and Segment pages: model → image → top-5 → class → methods → maps, all through the API.
// Configuration comes from data-* attributes and the JSON config element; nothing blocks the page:
// every long step is a job that is polled.

import { api } from "./api.js";
import { MapView, buildCard } from "./mapview.js";

const root = document.getElementById("workbench");
const config = JSON.parse(document.getElementById("workbench-config").textContent);
const API = root.dataset.apiRoot;
const mode = root.dataset.mode;
const $ = (id) => document.getElementById(id);
const POLL_MS = 600;

const state = {
  model: null,        // model detail (class_names, …)
  modelReady: null,   // promise of the model detail and its methods
  methods: [],
  image: null,
  set: null,
  target: null,
  views: new Map(),   // job id → {job, card, view}
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

// -- step 1: model ---------------------------------------------------------------------------
function selectModel() {
  state.modelReady = loadModel();
  return state.modelReady;
}

async function loadModel() {
  const id = $("model-select").value;
  if (!id) return;
  const [model, methods] = await Promise.all([api(`${API}models/${id}/`), api(`${API}models/${id}/methods/`)]);
  state.model = model;
  state.methods = methods;
  renderMethods();
  if (state.image) createSet();
}

// -- step 2: image ---------------------------------------------------------------------------
function renderSamples() {
  const box = $("samples");
  for (const sample of config.samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn secondary small";
    button.textContent = sample.name;
    button.dataset.sample = sample.key;
    button.addEventListener("click", () => uploadImage({ json: { sample: sample.key } }));
    box.append(button);
  }
}

async function uploadImage(body) {
  showError($("image-error"), "");
  try {
    state.image = await api(`${API}images/`, { method: "POST", ...body });
  } catch (error) {
    showError($("image-error"), error.message);
    return;
  }
  const preview = $("image-preview");
  preview.src = state.image.url;
  preview.alt = state.image.name;
  preview.hidden = false;
  await createSet();
}

// -- step 3: prediction and class ----------------------------------------------------------
async function createSet() {
  await state.modelReady;
  clearResults();
  $("predict-panel").hidden = false;
  $("predictions").innerHTML = "";
  $("predict-status").textContent = "Predicting…";
  $("predict-status").hidden = false;
  state.set = null;
  state.target = null;
  updateButtons();
  let accepted;
  try {
    accepted = await api(`${API}explanation-sets/`, {
      method: "POST", json: { model: Number(state.model.id), image: state.image.id } });
  } catch (error) {
    $("predict-status").textContent = error.message;
    return;
  }
  await showSet(accepted.url);
}

// Wait for the set's prediction, then show the top-5 and the methods; returns the set (or null).
async function showSet(url, target = null) {
  let set;
  for (;;) {
    set = await api(url);
    if (set.status === "done") break;
    if (set.status === "failed") {
      const job = set.jobs.find((j) => j.kind === "predict");
      $("predict-status").textContent = `Prediction failed: ${job ? job.error : "unknown error"}`;
      return null;
    }
    await sleep(POLL_MS);
  }
  state.set = set;
  $("predict-status").hidden = true;
  renderPredictions();
  chooseTarget(target ?? set.predictions[0].index);
  $("methods-panel").hidden = false;
  updateButtons();
  return set;
}

// Reopen an earlier set (?set=<id>): its model, image, top-5 and maps.
async function openSet(url) {
  const set = await api(url);
  $("model-select").value = String(set.model);
  await selectModel();
  state.image = set.image;
  const preview = $("image-preview");
  preview.src = set.image.url;
  preview.alt = set.image.name;
  preview.hidden = false;
  $("predict-panel").hidden = false;
  const maps = set.jobs.filter((j) => j.kind === "explain");
  const shown = await showSet(url, maps.length ? maps[maps.length - 1].target : null);
  if (shown && maps.length) {
    $("results-empty").hidden = true;
    await followJobs(maps.map((j) => j.id));
    updateButtons();
  }
}

function renderPredictions() {
  const table = $("predictions");
  table.innerHTML = "";
  const top = state.set.predictions[0].probability || 1;
  for (const p of state.set.predictions) {
    const row = document.createElement("tr");
    row.dataset.index = p.index;
    row.innerHTML = `<td class="w-22"><input type="radio" name="target"></td><td class="name"></td>
      <td class="w-70"><div class="bar"></div></td><td class="mono small w-52"></td>`;
    row.querySelector(".name").textContent = p.name;
    row.querySelector(".bar").style.width = `${Math.max(2, (p.probability / top) * 100)}%`;
    row.querySelector(".mono").textContent = p.probability.toFixed(3);
    row.querySelector("input").addEventListener("change", () => chooseTarget(p.index));
    table.append(row);
  }
}

function chooseTarget(index) {
  state.target = index;
  $("target-label").textContent = `${state.model.class_names[index]} (#${index})`;
  for (const row of $("predictions").querySelectorAll("tr")) {
    const chosen = Number(row.dataset.index) === index;
    row.classList.toggle("chosen", chosen);
    row.querySelector("input").checked = chosen;
  }
  updateButtons();
}

function searchClasses() {
  const query = $("class-search").value.trim().toLowerCase();
  const box = $("class-results");
  box.innerHTML = "";
  if (!query || !state.model) {
    box.hidden = true;
    return;
  }
  const hits = [];
  state.model.class_names.forEach((name, index) => {
    if (hits.length < 50 && name.toLowerCase().includes(query)) hits.push([index, name]);
  });
  for (const [index, name] of hits) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${name} (#${index})`;
    button.addEventListener("click", () => {
      chooseTarget(index);
      box.hidden = true;
      $("class-search").value = "";
    });
    box.append(button);
  }
  if (!hits.length) box.innerHTML = '<div class="small muted pad-6-8">No class matches.</div>';
  box.hidden = false;
}

// -- step 4: methods -------------------------------------------------------------------------
function renderMethods() {
  const list = $("method-list");
  list.innerHTML = "";
  for (const m of state.methods) {
    const item = document.createElement("li");
    item.dataset.method = m.key;
    const available = !m.reason_unavailable;
    item.className = available ? "" : "unavailable";
    const saved = Object.keys(m.saved_params || {}).length ? ' <span class="badge accent" title="your saved parameters apply">saved</span>' : "";
    item.innerHTML = `<div><label><input type="checkbox" class="pick" ${available ? "" : "disabled"}> <span class="label"></span>${saved}</label>
      <span class="reason"></span></div>
      <label class="toggle"><input type="checkbox" class="enhance" ${available ? "" : "disabled"}> enhance</label>`;
    item.querySelector(".label").textContent = m.label;
    item.querySelector(".reason").textContent = m.reason_unavailable || "";
    item.title = available ? (m.doc || "").split("\n")[0] : m.reason_unavailable;
    item.querySelector(".pick").addEventListener("change", updateButtons);
    list.append(item);
  }
  updateButtons();
}

function pickedMethods() {
  return [...$("method-list").querySelectorAll("li")]
    .filter((li) => li.querySelector(".pick").checked)
    .map((li) => ({ key: li.dataset.method, enhance: li.querySelector(".enhance").checked }));
}

function updateButtons() {
  const picked = state.set ? pickedMethods().length : 0;
  $("generate").disabled = !(state.set && state.target !== null && picked > 0);
  $("generate-note").textContent = state.set && !picked ? "Tick at least one method." : "";
  $("share").disabled = !(state.set && [...state.views.values()].some((v) => v.job.status === "done"));
}

// -- results ---------------------------------------------------------------------------------
function clearResults() {
  state.views.clear();
  $("results").innerHTML = "";
  $("results-empty").hidden = false;
  $("share-url").hidden = true;
}

async function generate() {
  $("generate").disabled = true;
  let accepted;
  try {
    accepted = await api(`${state.set.url}maps/`, {
      method: "POST", json: { target: state.target, methods: pickedMethods() } });
  } catch (error) {
    $("generate-note").textContent = error.message;
    updateButtons();
    return;
  }
  clearResults();
  $("results-empty").hidden = true;
  await followJobs(accepted.jobs.map((url) => Number(url.match(/(\d+)\/?$/)[1])));
  updateButtons();
}

// One request per tick for all jobs of this generation; cards keep the order of the method list.
async function followJobs(ids) {
  const listUrl = `${API}jobs/?ids=${ids.join(",")}`;
  let jobs = (await api(listUrl)).results;
  const byId = new Map(jobs.map((job) => [job.id, job]));
  for (const id of ids) {
    const job = byId.get(id);
    const card = buildCard({ title: job.method_label, enhance: job.enhance, targetName: job.target_name });
    card.dataset.method = job.method_key;
    card.dataset.enhance = job.enhance;
    card.dataset.status = job.status;
    $("results").append(card);
    state.views.set(id, { job, card, view: null });
  }
  const finishing = [];
  for (;;) {
    let pending = 0;
    for (const job of jobs) {
      const entry = state.views.get(job.id);
      if (!entry || entry.finished) continue;
      entry.job = job;
      if (job.status === "queued" || job.status === "running") {
        pending += 1;
        entry.card.querySelector(".progress > div").style.width = `${Math.round(job.progress * 100)}%`;
        entry.card.querySelector(".runtime").textContent =
          job.status === "queued" ? "queued" : `running ${Math.round(job.progress * 100)}%`;
      } else {
        entry.finished = true;
        finishing.push(finish(entry));
      }
    }
    if (!pending) break;
    await sleep(POLL_MS);
    jobs = (await api(listUrl)).results;
  }
  await Promise.all(finishing);
}

async function finish(entry) {
  const { job, card } = entry;
  card.querySelector(".progress").hidden = true;
  if (job.status === "failed") {
    showError(card.querySelector(".error-text"), job.error);
    card.querySelector(".runtime").textContent = "failed";
    card.dataset.status = "failed";
    return;
  }
  const canvas = card.querySelector("canvas");
  const view = new MapView(canvas, {
    width: job.map_width, height: job.map_height, imageUrl: state.image.url, mapUrl: job.map_url });
  await view.load();
  entry.view = view;
  canvas.hidden = false;
  draw(entry);
  card.querySelector(".runtime").textContent = `${job.seconds.toFixed(2)} s`;
  const downloads = card.querySelector(".downloads");
  const png = document.createElement("a");
  png.href = "#";
  png.textContent = "PNG";
  png.addEventListener("click", (event) => {
    event.preventDefault();
    view.downloadPng(`${job.method_key}${job.enhance ? "-enhanced" : ""}-${mode}.png`);
  });
  const npy = document.createElement("a");
  npy.href = job.raw_url;
  npy.textContent = ".npy";
  npy.setAttribute("download", "");
  downloads.append(png, " · ", npy);
  card.dataset.status = "done";
  updateButtons();
}

function draw(entry) {
  if (!entry.view) return;
  if (mode === "segment") {
    const ratio = Number($("ratio").value) / 100;
    const kept = entry.view.cutout(ratio);
    entry.card.dataset.kept = kept;
  } else {
    entry.view.overlay(Number($("opacity").value) / 100, $("colormap").value);
    entry.card.dataset.opacity = $("opacity").value;
  }
}

function redrawAll() {
  if (mode === "segment") $("ratio-value").textContent = $("ratio").value;
  else $("opacity-value").textContent = $("opacity").value;
  for (const entry of state.views.values()) draw(entry);
}

async function share() {
  const jobs = [...state.views.values()].filter((v) => v.job.status === "done").map((v) => v.job.id);
  const options = mode === "segment"
    ? { jobs, ratio: Number($("ratio").value) }
    : { jobs, opacity: Number($("opacity").value), colormap: $("colormap").value };
  try {
    const created = await api(`${API}shares/`, {
      method: "POST", json: { view: mode === "segment" ? "segmentation" : "explanation", object_id: state.set.id, options } });
    $("share-url").value = created.public_url;
    $("share-url").hidden = false;
    $("share-url").select();
  } catch (error) {
    $("share-url").value = error.message;
    $("share-url").hidden = false;
  }
}

// -- wiring ----------------------------------------------------------------------------------
renderSamples();
$("model-select").addEventListener("change", () => selectModel().catch((e) => showError($("image-error"), e.message)));
$("image-input").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  uploadImage({ form });
});
$("class-search").addEventListener("input", searchClasses);
$("generate").addEventListener("click", generate);
$("share").addEventListener("click", share);
for (const id of ["opacity", "colormap", "ratio"]) {
  const control = $(id);
  if (control) control.addEventListener("input", redrawAll);
}
(config.set_url ? openSet(config.set_url) : selectModel()).catch((e) => showError($("image-error"), e.message));
