// Several runs side by side: one table (and plots) per protocol they share.

import { api } from "../frontend/js/api.js";
import { renderResults } from "./results.js";

const config = JSON.parse(document.getElementById("compare-config").textContent);
const selected = config.selected.split(",").filter(Boolean);
for (const box of document.querySelectorAll('input[name="ids"]')) box.checked = selected.includes(box.value);

document.getElementById("pick").addEventListener("submit", (event) => {
  event.preventDefault();
  const ids = [...document.querySelectorAll('input[name="ids"]:checked')].map((b) => b.value);
  window.location.search = `?ids=${ids.join(",")}`;
});

async function load() {
  if (!selected.length) return;
  try {
    const data = await api(`${config.api}?ids=${selected.join(",")}`);
    renderResults(document.getElementById("results"), data, { runColumn: true });
  } catch (error) {
    document.getElementById("compare-error").textContent = error.message;
  }
}

load();
