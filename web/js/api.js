// The gateway's HTTP API (docs/api.md). Every failure becomes an ApiError whose message a
// person can act on: the server's own `detail` when it refused, or "unreachable" when no
// answer came back at all.

const TIMEOUT_MS = 15_000;

export class ApiError extends Error {
  /**
   * @param {string} message what went wrong, for people
   * @param {{status?: number, unreachable?: boolean}} [info]
   */
  constructor(message, { status = 0, unreachable = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.unreachable = unreachable;
  }
}

async function request(path, { timeoutMs = TIMEOUT_MS, ...options } = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    // fetch only rejects when no HTTP answer arrived: the gateway or the network is down.
    const what = error?.name === "TimeoutError" ? "did not answer in time" : "is unreachable";
    throw new ApiError(`The gateway ${what}. Is it running? The page keeps retrying.`, {
      unreachable: true,
    });
  }
  if (!response.ok) {
    throw new ApiError(await problemOf(response), { status: response.status });
  }
  return response;
}

/** The server's `{"detail": ...}`, or the status line when the body is not that. */
async function problemOf(response) {
  let detail = "";
  try {
    detail = describeDetail((await response.json()).detail);
  } catch {
    // Not JSON (a proxy's HTML error page, say): the status line is all we have.
  }
  return detail || `The gateway answered ${response.status} ${response.statusText}`.trim();
}

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  // FastAPI's validation errors: a list of {loc, msg}.
  if (Array.isArray(detail)) return detail.map((d) => d?.msg ?? String(d)).join("; ");
  return detail == null ? "" : JSON.stringify(detail);
}

async function getJson(path) {
  return (await request(path, { headers: { Accept: "application/json" } })).json();
}

/**
 * Upload a drawing; resolves with the gateway's answer (`prediction` set when it came in time).
 * @param {Blob} png
 * @param {number} waitMs how long the gateway may hold the request for the prediction
 */
export async function submitDrawing(png) {
  const form = new FormData();
  form.append("image", png, "drawing.png");
  // 202 at once: the prediction arrives on the event stream (GET /api/events).
  const response = await request("/api/predictions", {
    method: "POST",
    body: form,
    headers: { "X-Mnistream-Source": "web", Accept: "application/json" },
    timeoutMs: TIMEOUT_MS,
  });
  return response.json();
}

/** One page of the history, newest first. */
export function getDrawings({ limit = 20, before = null } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before) query.set("before", before);
  return getJson(`/api/digits?${query}`);
}

export function getDrawing(digitId) {
  return getJson(`/api/digits/${encodeURIComponent(digitId)}`);
}

/** Tell the system which digit a drawing really is. */
export async function labelDrawing(digitId, label) {
  const response = await request(`/api/digits/${encodeURIComponent(digitId)}/label`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ label }),
  });
  return response.json();
}

export function getModels() {
  return getJson("/api/models");
}

export function getModelVersion(version) {
  return getJson(`/api/models/${encodeURIComponent(version)}`);
}

export function getRescoreJobs({ active = false } = {}) {
  return getJson(`/api/rescore-jobs${active ? "?active=true" : ""}`);
}

/** Where the 28×28 model input of a drawing is served. */
export function inputUrl(digitId) {
  return `/api/digits/${encodeURIComponent(digitId)}/input.png`;
}

/** Where the original upload of a drawing is served. */
export function imageUrl(digitId) {
  return `/api/digits/${encodeURIComponent(digitId)}/image`;
}
