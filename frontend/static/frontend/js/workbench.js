// The Explain and Segment pages: model → image → top-5 → class → methods → maps, all through the API.
// Configuration comes from data-* attributes and the JSON config element; nothing blocks the page:
// every long step is a job, followed by a long poll on the jobs list (nextJobs).

import { api } from "./api.js";
import { drawRamp } from "./colormaps.js";
import { MapView, buildCard, formatScale } from "./mapview.js";

const root = document.getElementById("workbench");
const config = JSON.parse(document.getElementById("workbench-config").textContent);
const API = root.dataset.apiRoot;
const mode = root.dataset.mode;
const $ = (id) => document.getElementById(id);
const POLL_MS = 600;       // the slowest poll: a job with no estimate, or one far off
const POLL_MIN_MS = 150;   // the quickest: a map that should be ready about now
const WAIT_S = 5;          // how long the server may hold a jobs request while nothing changes

// How long to wait before asking again, where the server could not hold the request: until the
// soonest pending job is expected (its ``estimate_s``), within [POLL_MIN_MS, POLL_MS]. A job past
// its estimate is asked after doubling waits (150, 300, 600 ms), so a late one does not keep the
// server busy.
function nextPoll(jobs, overdue) {
  const soonest = Math.min(...jobs.filter(pending)
    .map((j) => (j.estimate_s === null || j.estimate_s === undefined ? Infinity : j.estimate_s * 1000)));
  if (soonest > POLL_MIN_MS) return { ms: Math.min(POLL_MS, soonest), overdue: 0 };
  return { ms: Math.min(POLL_MS, POLL_MIN_MS * 2 ** overdue), overdue: overdue + 1 };
}

const pending = (job) => job.status === "queued" || job.status === "running";

// The jobs list once it differs from ``page`` (an earlier answer): the server holds the request
// until one of the jobs changes (a long poll, woken as the worker saves the job) or WAIT_S pass.
// Where it could not hold it (``waited`` false: its waiting slots are all taken), this waits as
// a poll would before returning the answer, and the caller asks again.
async function nextJobs(listUrl, page, poll) {
  const next = await api(`${listUrl}&wait=${WAIT_S}&seen=${page.version}`);
  if (next.waited || next.version !== page.version) {
    poll.overdue = 0;
    return next;
  }
  Object.assign(poll, nextPoll(next.results, poll.overdue));
  await sleep(poll.ms);
  return next;
}

const state = {
  model: null,        // model detail (class_names, …)
  modelReady: null,   // promise of the model detail and its methods
  methods: [],
  image: null,
  set: null,
  setKey: null,       // "model:image" of the set shown or being made: one set per pair asked for
  target: null,
  views: new Map(),   // job id → {job, card, view}
  note: "",           // what the last Generate has to say (an error, maps already shown)
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
  updateRegionOption();
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
  updateRegionOption();
  await createSet();
}

// -- step 3: prediction and class ----------------------------------------------------------
async function createSet() {
  await state.modelReady;
  // A sample clicked while the model still loads asks twice (the click and the model's arrival).
  const key = `${state.model.id}:${state.image.id}`;
  if (state.setKey === key) return;
  state.setKey = key;
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
  let set = await api(url);
  const predict = set.jobs.find((j) => j.kind === "predict");
  if (set.status !== "done" && set.status !== "failed" && predict) {
    const listUrl = `${API}jobs/?ids=${predict.id}`;
    const poll = { ms: POLL_MS, overdue: 0 };
    let page = await api(listUrl);
    while (page.results.some(pending)) page = await nextJobs(listUrl, page, poll);
    set = await api(url);
  }
  if (set.status !== "done") {
    const job = set.jobs.find((j) => j.kind === "predict");
    $("predict-status").textContent = `Prediction failed: ${job && job.error ? job.error : "unknown error"}`;
    return null;
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
  state.setKey = `${set.model}:${set.image.id}`;
  const preview = $("image-preview");
  preview.src = set.image.url;
  preview.alt = set.image.name;
  preview.hidden = false;
  updateRegionOption();
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
// Methods are grouped by the family the registry gives each ("group", "group_label"), families
// in the registry's order ("group_rank"). Those made for another kind of model (ViT-only methods on a CNN, say) are
// folded away below; any other method the model cannot run is greyed with the API's reason.
function renderMethods() {
  const list = $("method-list");
  list.innerHTML = "";
  const family = state.model.family;
  const groups = new Map();
  const foreign = [];
  for (const m of state.methods) {
    if (!(m.families || []).includes(family)) {
      foreign.push(m);
      continue;
    }
    const group = m.group || "";
    if (!groups.has(group)) {
      groups.set(group, { label: m.group_label || "Other methods", rank: m.group_rank ?? 99, methods: [] });
    }
    groups.get(group).methods.push(m);
  }
  const ordered = [...groups].sort((a, b) => a[1].rank - b[1].rank);
  for (const [key, group] of ordered) {
    const section = document.createElement("section");
    section.className = "method-group";
    section.dataset.group = key;
    section.innerHTML = '<h4></h4><ul class="method-items"></ul>';
    section.querySelector("h4").textContent = group.label;
    for (const m of group.methods) section.querySelector("ul").append(methodItem(m));
    list.append(section);
  }
  if (foreign.length) {
    const folded = document.createElement("details");
    folded.className = "method-group folded";
    folded.dataset.group = "other-models";
    const kinds = [...new Set(foreign.flatMap((m) => m.families || []))].map((f) => (f === "vit" ? "ViT" : "CNN"));
    folded.innerHTML = '<summary></summary><ul class="method-items"></ul>';
    folded.querySelector("summary").textContent =
      `${foreign.length} method${foreign.length === 1 ? "" : "s"} for ${kinds.join(" and ")} models only`;
    for (const m of foreign) folded.querySelector("ul").append(methodItem(m));
    list.append(folded);
  }
  updateButtons();
}

// One method: its name, and a box for the plain map and one for the enhanced map, so both can
// be generated side by side.
function methodItem(m) {
  const item = document.createElement("li");
  item.dataset.method = m.key;
  const available = !m.reason_unavailable;
  item.className = available ? "" : "unavailable";
  const saved = Object.keys(m.saved_params || {}).length ? ' <span class="badge accent" title="your saved parameters apply">saved</span>' : "";
  const off = available ? "" : "disabled";
  item.innerHTML = `<div class="name"><span class="label"></span>${saved}<span class="reason"></span></div>
    <label class="toggle" title="the method's map"><input type="checkbox" class="pick" ${off}> plain</label>
    <label class="toggle" title="the map with the sliding-window enhancement"><input type="checkbox" class="enhance" ${off}> enhanced</label>`;
  item.querySelector(".label").textContent = m.label;
  item.querySelector(".reason").textContent = m.reason_unavailable || "";
  item.title = available ? (m.doc || "").split("\n")[0] : m.reason_unavailable;
  for (const box of item.querySelectorAll("input")) box.addEventListener("change", updateButtons);
  return item;
}

function pickedMethods() {
  const picked = [];
  for (const li of $("method-list").querySelectorAll("li")) {
    if (li.querySelector(".pick").checked) picked.push({ key: li.dataset.method, enhance: false });
    if (li.querySelector(".enhance").checked) picked.push({ key: li.dataset.method, enhance: true });
  }
  return picked;
}

// "Explain the whole image": CNNs take any H×W, so the image can be resized without the centre
// crop; a ViT keeps its square crop (and a very elongated image is refused by the server).
const MAX_WHOLE_ASPECT = 4;

function updateRegionOption() {
  const box = $("whole-image");
  if (!box) return;
  let reason = "";
  if (state.model && state.model.family === "vit") {
    reason = "ViT models keep the centre crop: their position embeddings fix a square input grid.";
  } else if (state.image && Math.max(state.image.width, state.image.height)
             > MAX_WHOLE_ASPECT * Math.min(state.image.width, state.image.height)) {
    reason = `This image is more elongated than ${MAX_WHOLE_ASPECT}:1; explain its centre crop.`;
  }
  box.disabled = Boolean(reason);
  if (reason) box.checked = false;
  $("region-help").textContent = reason
    || "Off: maps cover the centre crop the model sees. On: the image is resized without a crop.";
}

function updateButtons() {
  const picked = state.set ? pickedMethods().length : 0;
  $("generate").disabled = !(state.set && state.target !== null && picked > 0);
  $("generate-note").textContent = state.set && !picked ? "Tick at least one map." : state.note;
  $("share").disabled = !(state.set && [...state.views.values()].some((v) => v.job.status === "done"));
}

// -- results ---------------------------------------------------------------------------------
function clearResults() {
  state.note = "";
  state.views.clear();
  $("results").innerHTML = "";
  $("results-empty").hidden = false;
  $("share-url").hidden = true;
}

// The set keeps its maps: each Generate adds cards. The server answers a request the set already
// has (same method, class, enhancement, region, parameters) with the existing job, so such a
// card is shown once and pointed at, not made again.
async function generate() {
  $("generate").disabled = true;
  state.note = "";
  const region = $("whole-image") && $("whole-image").checked ? "whole" : "crop";
  let accepted;
  try {
    accepted = await api(`${state.set.url}maps/`, {
      method: "POST", json: { target: state.target, methods: pickedMethods(), region } });
  } catch (error) {
    state.note = error.message;
    updateButtons();
    return;
  }
  $("results-empty").hidden = true;
  const ids = accepted.jobs.map((url) => Number(url.match(/(\d+)\/?$/)[1]));
  const fresh = ids.filter((id) => !state.views.has(id));
  const again = ids.filter((id) => state.views.has(id));
  for (const id of again) {
    const { card } = state.views.get(id);
    card.classList.remove("again");
    void card.offsetWidth;  // restart the highlight
    card.classList.add("again");
  }
  state.note = again.length
    ? `${again.length} of these map${again.length === 1 ? " is" : "s are"} already here (highlighted).` : "";
  // The answer's version covers every job of the request: reusable only where all are new.
  const first = again.length ? null : { results: accepted.results, version: accepted.version };
  const following = fresh.length ? followJobs(fresh, { reveal: true, first }) : Promise.resolve();
  if (!fresh.length && again.length) reveal(state.views.get(again[0]).card);
  updateButtons();
  await following;
  updateButtons();
}

function reveal(card) {
  card.scrollIntoView({ block: "nearest", inline: "nearest" });
}

// Where a new card goes: after the cards of the same method, class and region (so the plain and
// the enhanced map of a method sit side by side), else at the end.
function placeCard(card, job) {
  const results = $("results");
  const kin = [...results.children].filter((c) => c.dataset.method === job.method_key
    && c.dataset.target === String(job.target) && c.dataset.region === job.region);
  if (kin.length) kin[kin.length - 1].after(card);
  else results.append(card);
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  return `${n}${suffix}`;
}

// "queued · 2nd in line · about 4 s" where the server says where the job is and how long it
// expects; just "queued" where it does not.
function queuedText(job) {
  const parts = ["queued"];
  if (job.queue_position !== undefined && job.queue_position !== null) parts.push(`${ordinal(job.queue_position)} in line`);
  if (job.estimate_s !== undefined && job.estimate_s !== null) parts.push(`about ${Math.max(1, Math.round(job.estimate_s))} s`);
  return parts.join(" · ");
}

// One request per tick for all jobs of this generation; cards keep the order of the request.
// ``first``: the list as the maps request answered it (its jobs, its version), saving a request.
async function followJobs(ids, { reveal: show = false, first = null } = {}) {
  const listUrl = `${API}jobs/?ids=${ids.join(",")}`;
  let page = first ?? await api(listUrl);
  let jobs = page.results;
  const byId = new Map(jobs.map((job) => [job.id, job]));
  for (const id of ids) {
    const job = byId.get(id);
    if (!job || state.views.has(id)) continue;
    const card = buildCard({ title: job.method_label, enhance: job.enhance, targetName: job.target_name,
      region: job.region });
    card.dataset.method = job.method_key;
    card.dataset.enhance = job.enhance;
    card.dataset.status = job.status;
    card.dataset.target = job.target;
    card.dataset.region = job.region;
    card.dataset.job = job.id;
    placeCard(card, job);
    state.views.set(id, { job, card, view: null });
  }
  if (show && state.views.has(ids[0])) reveal(state.views.get(ids[0]).card);
  const finishing = [];
  const poll = { ms: POLL_MS, overdue: 0 };
  for (;;) {
    let unfinished = 0;
    for (const job of jobs) {
      const entry = state.views.get(job.id);
      if (!entry || entry.finished) continue;
      entry.job = job;
      if (pending(job)) {
        unfinished += 1;
        entry.card.querySelector(".progress > div").style.width = `${Math.round(job.progress * 100)}%`;
        entry.card.querySelector(".runtime").textContent =
          job.status === "queued" ? queuedText(job) : `running ${Math.round(job.progress * 100)}%`;
        entry.card.dataset.status = job.status;
      } else {
        entry.finished = true;
        finishing.push(finish(entry));
      }
    }
    if (!unfinished) break;
    page = await nextJobs(listUrl, page, poll);
    jobs = page.results;
  }
  await Promise.all(finishing);
}

const REGION_NOTES = {
  crop: mode === "segment"
    ? "The map covers the centre crop the model sees (outlined); nothing outside it is ever kept."
    : "The map covers the centre crop the model sees (outlined); the dimmed rest was not explained.",
  whole: "The map covers the whole image, resized without a crop.",
};

async function finish(entry) {
  const { job, card } = entry;
  card.querySelector(".progress").hidden = true;
  if (job.status === "failed") {
    showError(card.querySelector(".error-text"), job.error);
    card.querySelector(".runtime").textContent = "failed";
    card.dataset.status = "failed";
    return;
  }
  const canvas = card.querySelector("canvas.map");
  const view = new MapView(canvas, {
    width: job.map_width, height: job.map_height, imageUrl: state.image.url, mapUrl: job.map_url,
    box: job.region_box });
  await view.load();
  entry.view = view;
  canvas.hidden = false;
  card.dataset.box = JSON.stringify(job.region_box);
  const note = card.querySelector(".region-note");
  note.textContent = job.region === "whole" || !view.cropped ? REGION_NOTES.whole : REGION_NOTES.crop;
  note.hidden = false;
  card.querySelector(".colorbar").hidden = mode === "segment";
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
  npy.title = job.region === "whole" ? "the map on the whole image as the model saw it"
    : "the map on the centre crop the model sees (the outlined part)";
  npy.setAttribute("download", "");
  downloads.append(png, " · ", npy);
  card.dataset.status = "done";
  redrawAll();  // a shared scale may have grown
  updateButtons();
}

// The value the colour map's top stands for: the map's own maximum, or the largest maximum of
// all maps shown when the scale is shared.
function scaleFor(entry) {
  const shared = $("scaling") && $("scaling").value === "shared";
  if (!shared) return entry.view.max;
  let max = 0;
  for (const other of state.views.values()) if (other.view) max = Math.max(max, other.view.max);
  return max || 1;
}

function draw(entry) {
  if (!entry.view) return;
  if (mode === "segment") {
    const ratio = Number($("ratio").value) / 100;
    const kept = entry.view.cutout(ratio);
    entry.card.dataset.kept = kept;
  } else {
    const scale = scaleFor(entry);
    entry.view.overlay(Number($("opacity").value) / 100, $("colormap").value, scale);
    entry.card.dataset.opacity = $("opacity").value;
    entry.card.dataset.scaleMax = scale;
    drawRamp(entry.card.querySelector("canvas.ramp"), $("colormap").value);
    entry.card.querySelector(".colorbar .hi").textContent = formatScale(scale);
    entry.card.querySelector(".colorbar .kind").textContent = $("scaling").value === "shared" ? "shared scale" : "this map's scale";
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
for (const id of ["opacity", "colormap", "ratio", "scaling"]) {
  const control = $(id);
  if (control) control.addEventListener("input", redrawAll);
}
(config.set_url ? openSet(config.set_url) : selectModel()).catch((e) => showError($("image-error"), e.message));
