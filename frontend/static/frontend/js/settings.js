// The Settings page's layer picker: a search box above the list of the model's layers keeps
// only the layers whose name contains what is typed (the chosen one and the default always
// stay visible), so a model with hundreds of layers is picked from without scrolling.

function filterLayers(box) {
  const select = document.getElementById(box.dataset.filterOptions);
  if (!select) return;
  const words = box.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const option of select.options) {
    const keep = option.selected || option.value === select.dataset.default
      || words.every((w) => option.value.toLowerCase().includes(w));
    option.hidden = !keep;
    if (keep) shown += 1;
  }
  const count = select.parentElement.querySelector("[data-testid=layer-count]");
  if (count) count.textContent = words.length ? `${shown} of ${select.options.length} layers` : "";
}

for (const box of document.querySelectorAll("input[data-filter-options]")) {
  box.addEventListener("input", () => filterLayers(box));
}
