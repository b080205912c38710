// The presets page: each "Queue" form posts its preset (with the chosen model, image count and
// methods) and opens the new run's page.

import { api } from "../frontend/js/api.js";

const config = JSON.parse(document.getElementById("presets-config").textContent);

async function queue(form) {
  const key = form.dataset.key;
  const error = form.querySelector("[data-testid=queue-error]");
  const button = form.querySelector("button[type=submit]");
  error.textContent = "";
  const body = {};
  const model = form.querySelector("select[name=model]");
  if (model && model.value) body.model = parseInt(model.value, 10);
  const images = form.querySelector("input[name=images]").value;
  if (images) body.images = parseInt(images, 10);
  const picks = [...form.querySelectorAll(".method-pick")];
  if (picks.some((p) => !p.checked)) body.methods = picks.filter((p) => p.checked).map((p) => p.value);
  button.disabled = true;
  try {
    const run = await api(`${config.api}${encodeURIComponent(key)}/run/`, { method: "POST", json: body });
    window.location.assign(run.page_url);
  } catch (failure) {
    error.textContent = failure.message;
    button.disabled = false;
  }
}

for (const form of document.querySelectorAll(".preset-form")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    queue(form);
  });
}
