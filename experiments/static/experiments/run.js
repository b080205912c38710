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
  // A queued run waits behind the runs queued before it (everyone's) for a batch worker.
  if (p.queue_place) $("#eta").textContent += ` · place ${p.queue_place[0]} of ${p.queue_place[1]} in the queue`;
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

// Ground truth and the pointing game's verdict, drawn over a card's picture. ``truth`` is the
// image's ground truth in the picture's geometry (images/{i}/truth/); points of the records are in
// original pixels: view = original · scale − offset.
const HIT = "#16a34a";
const MISS = "#dc2626";
const TRUTH = "#06b6d4";

function toView(truth, x, y) {
  const [sx, sy] = truth.view.scale;
  const [ox, oy] = truth.view.offset;
  return [(x + 0.5) * sx - ox, (y + 0.5) * sy - oy];
}

function tintMask(ctx, mask, canvas) {
  const off = document.createElement("canvas");
  off.width = canvas.width; off.height = canvas.height;
  const octx = off.getContext("2d");
  octx.drawImage(mask, 0, 0, off.width, off.height);
  const pixels = octx.getImageData(0, 0, off.width, off.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const inside = pixels.data[i] > 127;
    pixels.data[i] = 6; pixels.data[i + 1] = 182; pixels.data[i + 2] = 212;
    pixels.data[i + 3] = inside ? 90 : 0;
  }
  octx.putImageData(pixels, 0, 0);
  ctx.drawImage(off, 0, 0);
}

function drawTruth(canvas, truth, rec, masks, show) {
  if (!truth) return;
  const ctx = canvas.getContext("2d");
  const ownClass = truth.objects.some((o) => o.class_id === rec.class_id);
  // A record about a class the image has objects of shows that class's; any other shows them all.
  const objects = truth.objects.filter((o) => !ownClass || o.class_id === rec.class_id);
  canvas.dataset.boxes = show ? String(objects.filter((o) => o.box).length) : "0";
  if (show) {
    for (const classId of new Set(objects.map((o) => o.class_id))) {
      const mask = masks.get(String(classId));
      if (mask) tintMask(ctx, mask, canvas);
    }
    ctx.lineWidth = 2;
    ctx.font = "12px sans-serif";
    for (const obj of objects) {
      if (!obj.box) continue;
      const [x0, y0, x1, y1] = obj.box;
      ctx.strokeStyle = TRUTH;
      ctx.setLineDash(obj.difficult ? [4, 3] : []);
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.setLineDash([]);
      const label = obj.name + (obj.difficult ? " (difficult)" : "");
      const w = ctx.measureText(label).width + 6;
      ctx.fillStyle = TRUTH;
      ctx.fillRect(x0, Math.max(0, y0 - 15), w, 15);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x0 + 3, Math.max(11, y0 - 3));
    }
  }
  const pointing = rec.pointing;
  if (!pointing) return;
  const [vx, vy] = toView(truth, pointing.point[0], pointing.point[1]);
  const colour = pointing.hit === false ? MISS : pointing.hit === true ? HIT : "#f59e0b";
  // the tolerance: the ground truth must come closer than this to the maximum for a hit
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.arc(vx, vy, pointing.tolerance * truth.view.scale[0], 0, 2 * Math.PI);
  ctx.stroke();
  ctx.fillStyle = colour;
  ctx.beginPath();
  ctx.arc(vx, vy, 4, 0, 2 * Math.PI);
  ctx.fill();
  canvas.dataset.point = `${vx.toFixed(1)},${vy.toFixed(1)}`;
  canvas.dataset.verdict = pointing.hit === null ? "score" : pointing.hit ? "hit" : "miss";
}

const truthCache = new Map();

function truthOf(index, protocol) {
  const key = `${index}|${protocol}`;
  if (!truthCache.has(key)) {
    const truth = api(`${config.api}images/${index}/truth/?protocol=${encodeURIComponent(protocol)}`).then(async (t) => {
      const masks = new Map();
      await Promise.all(Object.entries(t.masks).map(async ([classId, url]) => {
        masks.set(classId, await loadImage(url));
      }));
      return { truth: t, masks };
    });
    truthCache.set(key, truth);
  }
  return truthCache.get(key);
}

function recordText(rec) {
  if (!rec.ok) return `${rec.protocol} · failed: ${rec.error}`;
  const explained = rec.class_name ? `${rec.class_name} (${rec.class_id})` : `class ${rec.class_id}`;
  let text = `${rec.protocol} · explains ${explained}${rec.variant ? " (" + rec.variant + ")" : ""}`;
  if (rec.label_name) text += ` · ground truth ${rec.label_name}`;
  return `${text} · score ${fmt(rec.score)}`;
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
  const show = $("#show-truth") ? $("#show-truth").checked : true;
  const images = new Map();
  const truthLine = $("#drill-truth");
  if (truthLine) truthLine.textContent = "";
  for (const rec of page.results) {
    if (!images.has(rec.protocol)) images.set(rec.protocol, loadImage(`${config.api}images/${index}/?protocol=${encodeURIComponent(rec.protocol)}`));
    const card = document.createElement("div");
    card.className = "card drill-card";
    const label = run.methods[rec.method_slot];
    const name = label ? label.label + (label.enhance ? " + enhancement" : "") : rec.method_key;
    card.innerHTML = `<div class="head"><h3></h3><span class="badge verdict" hidden></span></div><canvas></canvas><div class="foot small"></div>`;
    card.querySelector("h3").textContent = name;
    card.querySelector(".foot").textContent = recordText(rec);
    if (rec.pointing && rec.pointing.hit !== null) {
      const badge = card.querySelector(".verdict");
      badge.hidden = false;
      badge.textContent = rec.pointing.hit ? "hit" : "miss";
      badge.classList.add(rec.pointing.hit ? "ok" : "bad");
      badge.title = `the map's maximum is ${rec.pointing.hit ? "within" : "farther than"} ${rec.pointing.tolerance} px of the ground truth`;
    }
    grid.appendChild(card);
    const canvas = card.querySelector("canvas");
    Promise.all([images.get(rec.protocol), truthOf(index, rec.protocol).catch((error) => ({ error }))])
      .then(([image, gt]) => {
        drawOverlay(canvas, image, rec.thumb, rec.thumb_size, opacity);
        if (gt.error) {
          card.querySelector(".foot").textContent += ` · ground truth unavailable: ${gt.error.message}`;
        } else {
          drawTruth(canvas, gt.truth, rec, gt.masks, show);
          if (truthLine && !truthLine.textContent) {
            const names = gt.truth.labels.map((l) => `${l.name} (${l.class_id})`);
            truthLine.textContent = names.length ? `Ground truth: ${names.join(", ")}` : "No ground-truth classes for this image.";
          }
        }
        canvas.dataset.drawn = "1";
      })
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
  for (const id of ["#image-index", "#opacity", "#show-truth"]) {
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
