// One saliency map drawn on a canvas over its image: an overlay (colour map, opacity) or a
// cut-out (keep the top r % of pixels by saliency, the rest black). Everything is computed
// here from the raw float32 map, so sliders need no request.

import { fetchFloat32 } from "./api.js";
import { lookupTable } from "./colormaps.js";

const imagePixels = new Map();
const DIM = 0.45;  // brightness of the image outside the part a map covers

// Fractions [left, top, right, bottom] → whole pixels of a width × height canvas.
export function pixelBox(box, width, height) {
  return { x0: Math.round(box[0] * width), y0: Math.round(box[1] * height),
    x1: Math.round(box[2] * width), y1: Math.round(box[3] * height) };
}

export async function loadImagePixels(url, width, height) {
  const key = `${url}|${width}x${height}`;
  if (!imagePixels.has(key)) {
    imagePixels.set(key, new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = width;
        canvas.height = height;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(img, 0, 0, width, height);
        resolve(ctx.getImageData(0, 0, width, height).data);
      };
      img.onerror = () => reject(new Error("the image could not be loaded"));
      img.src = url;
    }));
  }
  return imagePixels.get(key);
}

export class MapView {
  // box: the part of the image the map covers, [left, top, right, bottom] as fractions (the
  // model's centre crop by default); outside it the map is 0 because nothing was explained.
  constructor(canvas, { width, height, imageUrl, mapUrl, box = null }) {
    this.canvas = canvas;
    this.width = width;
    this.height = height;
    this.imageUrl = imageUrl;
    this.mapUrl = mapUrl;
    canvas.width = width;
    canvas.height = height;
    this.ctx = canvas.getContext("2d");
    this.order = null;
    this.box = box ? pixelBox(box, width, height) : null;
  }

  async load() {
    const [pixels, map] = await Promise.all([
      loadImagePixels(this.imageUrl, this.width, this.height), fetchFloat32(this.mapUrl)]);
    if (map.length !== this.width * this.height) {
      throw new Error(`map has ${map.length} values, expected ${this.width}×${this.height}`);
    }
    this.pixels = pixels;
    this.map = map;
    let max = 0;
    for (let i = 0; i < map.length; i++) if (map[i] > max) max = map[i];
    this.max = max > 0 ? max : 1;
    return this;
  }

  // Whether the box leaves part of the image out (then it is dimmed and outlined).
  get cropped() {
    const b = this.box;
    return Boolean(b) && (b.x0 > 0 || b.y0 > 0 || b.x1 < this.width || b.y1 < this.height);
  }

  // The colour map over the image, map values divided by scaleMax (this map's maximum by
  // default; a shared scale passes the largest maximum of the maps compared). Outside the
  // covered box the image is only dimmed: zero there means "not explained", not "not salient".
  overlay(opacity, colormap, scaleMax = this.max) {
    const lut = lookupTable(colormap);
    const out = this.ctx.createImageData(this.width, this.height);
    const a = Math.max(0, Math.min(1, opacity));
    const { pixels, map, width } = this;
    const max = scaleMax > 0 ? scaleMax : 1;
    const b = this.cropped ? this.box : { x0: 0, y0: 0, x1: this.width, y1: this.height };
    for (let i = 0, n = map.length; i < n; i++) {
      const p = i * 4;
      const x = i % width, y = (i - x) / width;
      if (x < b.x0 || x >= b.x1 || y < b.y0 || y >= b.y1) {
        out.data[p] = pixels[p] * DIM;
        out.data[p + 1] = pixels[p + 1] * DIM;
        out.data[p + 2] = pixels[p + 2] * DIM;
        out.data[p + 3] = 255;
        continue;
      }
      const v = Math.max(0, Math.min(255, Math.round((map[i] / max) * 255))) * 3;
      out.data[p] = pixels[p] * (1 - a) + lut[v] * a;
      out.data[p + 1] = pixels[p + 1] * (1 - a) + lut[v + 1] * a;
      out.data[p + 2] = pixels[p + 2] * (1 - a) + lut[v + 2] * a;
      out.data[p + 3] = 255;
    }
    this.ctx.putImageData(out, 0, 0);
    this.outline();
  }

  // A dashed frame around the covered box, light over dark so it shows on any photo.
  outline() {
    if (!this.cropped) return;
    const { ctx } = this;
    const { x0, y0, x1, y1 } = this.box;
    const line = Math.max(1, Math.round(Math.min(this.width, this.height) / 160));
    ctx.save();
    ctx.lineWidth = line * 2;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
    ctx.strokeRect(x0 + line, y0 + line, x1 - x0 - 2 * line, y1 - y0 - 2 * line);
    ctx.lineWidth = line;
    ctx.setLineDash([line * 5, line * 3]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0 + line, y0 + line, x1 - x0 - 2 * line, y1 - y0 - 2 * line);
    ctx.restore();
  }

  // Pixel indices by decreasing saliency, computed once; a ratio then keeps a prefix.
  ranking() {
    if (!this.order) {
      const order = new Uint32Array(this.map.length);
      for (let i = 0; i < order.length; i++) order[i] = i;
      const map = this.map;
      order.sort((x, y) => map[y] - map[x] || x - y);
      this.order = order;
    }
    return this.order;
  }

  // How many of the ranked pixels a ratio keeps. Pixels of equal saliency are kept or dropped
  // together, so the cut-out never depends on scan order; zero (or negative) saliency is never kept,
  // so a ratio above the share of positive pixels keeps just the positive ones.
  keepCount(ratio) {
    const order = this.ranking();
    const map = this.map;
    let keep = Math.round(Math.max(0, Math.min(1, ratio)) * order.length);
    if (keep === 0) return 0;
    const edge = map[order[keep - 1]];
    if (!(edge > 0)) {
      keep = 0;
      while (keep < order.length && map[order[keep]] > 0) keep++;
      return keep;
    }
    while (keep < order.length && map[order[keep]] === edge) keep++;  // take the whole tie
    return keep;
  }

  cutout(ratio) {
    const order = this.ranking();
    const keep = this.keepCount(ratio);
    const out = this.ctx.createImageData(this.width, this.height);
    for (let i = 3; i < out.data.length; i += 4) out.data[i] = 255;  // opaque black
    const { pixels } = this;
    for (let k = 0; k < keep; k++) {
      const p = order[k] * 4;
      out.data[p] = pixels[p];
      out.data[p + 1] = pixels[p + 1];
      out.data[p + 2] = pixels[p + 2];
    }
    this.ctx.putImageData(out, 0, 0);
    this.outline();
    return keep;
  }

  downloadPng(filename) {
    this.canvas.toBlob((blob) => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filename;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }, "image/png");
  }
}

// A result card: header (method, badges), canvas, colour bar, progress or error, a note on
// what the map covers, footer (runtime, downloads).
export function buildCard({ title, enhance, targetName, region = null }) {
  const card = document.createElement("article");
  card.className = "card";
  card.innerHTML = `
    <div class="head"><h3></h3><span class="badges"></span></div>
    <div class="progress"><div></div></div>
    <canvas class="map" hidden></canvas>
    <div class="colorbar" hidden><canvas class="ramp" width="256" height="1"></canvas>
      <div class="scale"><span class="lo">0</span><span class="kind"></span><span class="hi"></span></div></div>
    <div class="error-text" hidden></div>
    <div class="region-note" hidden></div>
    <div class="foot"><span class="runtime">queued</span><span class="downloads"></span></div>`;
  card.querySelector("h3").textContent = title;
  const badges = card.querySelector(".badges");
  if (enhance) badges.insertAdjacentHTML("beforeend", '<span class="badge accent">enhanced</span>');
  if (region === "whole") badges.insertAdjacentHTML("beforeend", '<span class="badge">whole image</span>');
  if (targetName) {
    const head = card.querySelector(".head");
    head.title = `class: ${targetName}`;
    const target = document.createElement("span");
    target.className = "target";
    target.textContent = targetName;
    card.querySelector(".foot").prepend(target);
  }
  return card;
}

// A short, readable number for a scale label: 0.0123 → "0.0123", 4.2e-5 → "4.20e-5".
export function formatScale(value) {
  if (!Number.isFinite(value)) return "–";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4 || magnitude < 1e-3) return value.toExponential(2).replace("e+", "e");
  return String(Number(value.toPrecision(3)));
}
