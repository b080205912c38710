// The public page of a share: the same client-side drawing, fed from the share's own file URLs.

import { MapView, buildCard } from "./mapview.js";

const config = JSON.parse(document.getElementById("shared-config").textContent);
const $ = (id) => document.getElementById(id);
const views = [];

function draw(view) {
  if (config.mode === "segment") view.cutout(Number($("ratio").value) / 100);
  else view.overlay(Number($("opacity").value) / 100, $("colormap").value);
}

function redrawAll() {
  if (config.mode === "segment") $("ratio-value").textContent = $("ratio").value;
  else $("opacity-value").textContent = $("opacity").value;
  views.forEach(draw);
}

const options = config.options || {};
if (config.mode === "segment" && options.ratio) $("ratio").value = options.ratio;
if (config.mode !== "segment") {
  if (options.opacity !== undefined) $("opacity").value = options.opacity;
  if (options.colormap) $("colormap").value = options.colormap;
}
for (const id of ["opacity", "colormap", "ratio"]) {
  const control = $(id);
  if (control) control.addEventListener("input", redrawAll);
}

for (const job of config.jobs) {
  const card = buildCard({ title: job.label, enhance: job.enhance, targetName: job.target_name });
  card.dataset.testid = "shared-result";
  card.querySelector(".progress").hidden = true;
  card.querySelector(".runtime").textContent = job.seconds !== null ? `${job.seconds.toFixed(2)} s` : "";
  const npy = document.createElement("a");
  npy.href = job.raw_url;
  npy.textContent = ".npy";
  card.querySelector(".downloads").append(npy);
  $("results").append(card);
  const canvas = card.querySelector("canvas");
  const view = new MapView(canvas, { width: config.width, height: config.height, imageUrl: config.image_url, mapUrl: job.map_url });
  view.load().then(() => {
    canvas.hidden = false;
    views.push(view);
    draw(view);
    card.dataset.status = "done";
  }).catch((error) => {
    card.querySelector(".error-text").textContent = error.message;
    card.querySelector(".error-text").hidden = false;
  });
}
redrawAll();
