// The one fetch wrapper: same-origin cookies, CSRF header, JSON or FormData bodies, errors as ApiError.

export class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// DRF error bodies: {"detail": "..."} or {"field": ["..."]} or ["..."]: flatten to one sentence.
function errorMessage(data, fallback) {
  if (!data) return fallback;
  if (typeof data === "string") return data;
  if (Array.isArray(data)) return data.map((d) => errorMessage(d, "")).filter(Boolean).join(" ");
  const parts = [];
  for (const [key, value] of Object.entries(data)) {
    const text = errorMessage(value, "");
    if (text) parts.push(key === "detail" || key === "non_field_errors" ? text : `${key}: ${text}`);
  }
  return parts.join(" ") || fallback;
}

export async function api(url, { method = "GET", json, form, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  } catch (error) {
    throw new ApiError("The server could not be reached; check your connection.", 0, null);
  }
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    throw new ApiError(errorMessage(data, `The server answered ${response.status}.`), response.status, data);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export async function fetchFloat32(url) {
  const response = await api(url, { raw: true });
  return new Float32Array(await response.arrayBuffer());
}
