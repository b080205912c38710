// One saliency map drawn on a canvas over its image: an overlay (colour map, opacity) or a
// cut-out (keep the top r % of pixels by saliency, the rest black). Everything is computed
// here from the raw float32 map, so sliders need no request.

import { fetchFloat32 } from "./api.js";
import { lookupTable } from "./colormaps.js";

const imagePixels = new Map();

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
  constructor(canvas, { width, height, imageUrl, mapUrl }) {
    this.canvas = canvas;
    this.width = width;
    this.height = height;
    this.imageUrl = imageUrl;
    this.mapUrl = mapUrl;
    canvas.width = width;
    canvas.height = height;
    this.ctx = canvas.getContext("2d");
    this.order = null;
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

  overlay(opacity, colormap) {
    const lut = lookupTable(colormap);
    const out = this.ctx.createImageData(this.width, this.height);
    const a = Math.max(0, Math.min(1, opacity));
    const { pixels, map, max } = this;
    for (let i = 0, n = map.length; i < n; i++) {
      const v = Math.max(0, Math.min(255, Math.round((map[i] / max) * 255))) * 3;
      const p = i * 4;
      out.data[p] = pixels[p] * (1 - a) + lut[v] * a;
      out.data[p + 1] = pixels[p + 1] * (1 - a) + lut[v + 1] * a;
      out.data[p + 2] = pixels[p + 2] * (1 - a) + lut[v + 2] * a;
      out.data[p + 3] = 255;
    }
    this.ctx.putImageData(out, 0, 0);
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

// A result card: header (method, badges), canvas, progress or error, footer (runtime, downloads).
export function buildCard({ title, enhance, targetName }) {
  const card = document.createElement("article");
  card.className = "card";
  card.innerHTML = `
    <div class="head"><h3></h3><span class="badges"></span></div>
    <div class="progress"><div></div></div>
    <canvas hidden></canvas>
    <div class="error-text" hidden></div>
    <div class="foot"><span class="runtime">queued</span><span class="downloads"></span></div>`;
  card.querySelector("h3").textContent = title;
  const badges = card.querySelector(".badges");
  if (enhance) badges.insertAdjacentHTML("beforeend", '<span class="badge accent">enhanced</span>');
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
