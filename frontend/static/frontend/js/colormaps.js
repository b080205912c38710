// Colour maps as a few RGB stops interpolated linearly into 256-entry lookup tables.

const STOPS = {
  jet: [[0, 0, 131], [0, 60, 170], [5, 255, 255], [255, 255, 0], [250, 0, 0], [128, 0, 0]],
  viridis: [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
    [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]],
  inferno: [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
    [250, 193, 39], [252, 255, 164]],
  gray: [[0, 0, 0], [255, 255, 255]],
};

const cache = new Map();

export function lookupTable(name) {
  if (cache.has(name)) return cache.get(name);
  const stops = STOPS[name] || STOPS.jet;
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (stops.length - 1);
    const lo = Math.floor(t);
    const hi = Math.min(lo + 1, stops.length - 1);
    const f = t - lo;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[lo][c] * (1 - f) + stops[hi][c] * f;
  }
  cache.set(name, table);
  return table;
}

export const COLORMAPS = Object.keys(STOPS);

// The colour map as a left-to-right ramp on a canvas (256 × 1, stretched by CSS).
export function drawRamp(canvas, name) {
  const lut = lookupTable(name);
  canvas.width = 256;
  canvas.height = 1;
  const ctx = canvas.getContext("2d");
  const row = ctx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    row.data[i * 4] = lut[i * 3];
    row.data[i * 4 + 1] = lut[i * 3 + 1];
    row.data[i * 4 + 2] = lut[i * 3 + 2];
    row.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(row, 0, 0);
}
