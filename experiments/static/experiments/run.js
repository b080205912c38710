// One run's page: progress and ETA while it runs, then the tables, plots and per-image drill-down.

import { api, ApiError } from "../frontend/js/api.js";
import { lookupTable } from "../frontend/js/colormaps.js";
import { fmt, renderResults } from "./results.js";

const config = JSON.parse(document.getElementById("run-config").textContent);
let run = config.run;
const FINISHED = ["done", "failed", "cancelled"];
const $ = (sel) => document.querySelector(sel);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function showStatus() {
  const p = run.progress;
  $("#status").textContent = run.status;
  $("#status").className = `badge ${run.status === "done" ? "ok" : run.status === "failed" || run.status === "cancelled" ? "bad" : "accent"}`;
  $("#progress-bar").style.width = `${(100 * p.fraction).toFixed(1)}%`;
  $("#progress-text").textContent = `${p.units_done} / ${p.units_total} (image, method) units · ${Math.floor(100 * p.fraction)} %`
    + (p.failed_records ? ` · ${p.failed_records} failed records` : "");
  $("#eta").textContent = FINISHED.includes(run.status) ? `took ${duration(run.actual_seconds)}` : `ETA ${duration(p.eta_seconds)}`;
  // The page may have opened while the run was queued: the actual time appears when it ends.
  $("#actual").textContent = run.actual_seconds === null || run.actual_seconds === undefined
    ? "" : `· actual ${Math.round(run.actual_seconds)} s`;
  $("#error").textContent = run.error || "";
  const cancel = $("#cancel");
  if (cancel) cancel.hidden = FINISHED.includes(run.status);
}

async function poll() {
  try {
    run = await api(config.api);
  } catch (error) {
    $("#error").textContent = error.message;
  }
  showStatus();
  if (FINISHED.includes(run.status)) {
    renderResults($("#results"), run.results);
    if (!config.shared) loadDrilldown();
  } else {
    setTimeout(poll, 1500);
  }
}

// -- drill-down -------------------------------------------------------------------------------

function drawOverlay(canvas, image, thumbB64, size, opacity) {
  const ctx = canvas.getContext("2d");
  canvas.width = image.naturalWidth || 224;
  canvas.height = image.naturalHeight || 224;
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (!thumbB64) return;
  const bytes = Uint8Array.from(atob(thumbB64), (c) => c.charCodeAt(0));
  const lut = lookupTable("jet");
  const small = document.createElement("canvas");
  small.width = size; small.height = size;
  const sctx = small.getContext("2d");
  const img = sctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    img.data[4 * i] = lut[3 * bytes[i]];
    img.data[4 * i + 1] = lut[3 * bytes[i] + 1];
    img.data[4 * i + 2] = lut[3 * bytes[i] + 2];
    img.data[4 * i + 3] = 255;
  }
  sctx.putImageData(img, 0, 0);
  ctx.globalAlpha = opacity;
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 1;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${url}`));
    image.src = url;
  });
}

async function loadDrilldown() {
  const box = $("#drilldown");
  if (!box) return;
  box.hidden = false;
  const input = $("#image-index");
  input.max = run.num_images - 1;
  const index = Math.max(0, Math.min(run.num_images - 1, parseInt(input.value || "0", 10)));
  const grid = $("#drill-grid");
  grid.innerHTML = '<div class="muted">Loading…</div>';
  let page;
  try {
    page = await api(`${config.api}records/?image=${index}&page_size=200`);
  } catch (error) {
    grid.innerHTML = `<div class="error-text">${error.message}</div>`;
    return;
  }
  grid.innerHTML = "";
  const opacity = parseInt($("#opacity").value, 10) / 100;
  const images = new Map();
  for (const rec of page.results) {
    if (!images.has(rec.protocol)) images.set(rec.protocol, loadImage(`${config.api}images/${index}/?protocol=${encodeURIComponent(rec.protocol)}`));
    const card = document.createElement("div");
    card.className = "card drill-card";
    const label = run.methods[rec.method_slot];
    const name = label ? label.label + (label.enhance ? " + enhancement" : "") : rec.method_key;
    card.innerHTML = `<div class="head"><h3></h3></div><canvas></canvas><div class="foot small"></div>`;
    card.querySelector("h3").textContent = name;
    card.querySelector(".foot").textContent = rec.ok
      ? `${rec.protocol} · class ${rec.class_id}${rec.variant ? " (" + rec.variant + ")" : ""} · score ${fmt(rec.score)}`
      : `${rec.protocol} · failed: ${rec.error}`;
    grid.appendChild(card);
    images.get(rec.protocol).then((image) => drawOverlay(card.querySelector("canvas"), image, rec.thumb, rec.thumb_size, opacity))
      .catch((error) => { card.querySelector(".foot").textContent += ` · ${error.message}`; });
  }
  $("#image-key").textContent = page.results.length ? page.results[0].image_key : "";
}

function wire() {
  const cancel = $("#cancel");
  if (cancel) cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { run = await api(`${config.api}cancel/`, { method: "POST" }); } catch (error) { $("#error").textContent = error.message; }
    cancel.disabled = false;
    showStatus();
  });
  const share = $("#share");
  if (share) share.addEventListener("click", async () => {
    try {
      const created = await api("/api/shares/", { method: "POST", json: { view: "experiment", object_id: run.id } });
      $("#share-url").value = created.public_url;
      $("#share-box").hidden = false;
    } catch (error) {
      $("#error").textContent = error instanceof ApiError ? error.message : String(error);
    }
  });
  for (const id of ["#image-index", "#opacity"]) {
    const input = $(id);
    if (input) input.addEventListener("change", loadDrilldown);
  }
  for (const [id, step] of [["#prev-image", -1], ["#next-image", 1]]) {
    const button = $(id);
    if (button) button.addEventListener("click", () => {
      const input = $("#image-index");
      input.value = Math.max(0, Math.min(run.num_images - 1, parseInt(input.value || "0", 10) + step));
      loadDrilldown();
    });
  }
}

wire();
showStatus();
if (FINISHED.includes(run.status) || config.shared) {
  renderResults($("#results"), run.results);
  if (!config.shared && FINISHED.includes(run.status)) loadDrilldown();
} else {
  setTimeout(poll, 1000);
}
