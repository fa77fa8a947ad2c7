// @ts-check
// The gateway's HTTP API (docs/api.md). Every failure becomes an ApiError whose message a
// person can act on: the server's own `detail` when it refused, or "unreachable" when no
// answer came back at all.

// ---------------------------------------------------------------- what the API answers

/**
 * A model's reading of a drawing, as the history stores it.
 * @typedef {object} StoredPrediction
 * @property {number} model_version
 * @property {string} [model_name]
 * @property {number} predicted_digit
 * @property {number} confidence
 * @property {number[]} [probabilities]
 * @property {string} [kind] "live", "rescore", "candidate" or "shadow"
 * @property {string} [predicted_at]
 */

/**
 * A drawing as the history stores it (`GET /api/digits`). A live prediction turned into one
 * (history-model.js) has no image and no label: `label` undefined means "not known", null
 * means "not labelled".
 * @typedef {object} StoredDrawing
 * @property {string} digit_id a UUIDv7: ids sort by submission time
 * @property {string} submitted_at
 * @property {string} [image_url]
 * @property {number | null} [label]
 * @property {StoredPrediction[]} predictions
 */

/** @typedef {{items: StoredDrawing[], next_cursor: string | null}} DrawingPage */

/**
 * A live prediction: the SSE `prediction` event, or one rebuilt from the history (main.js).
 * @typedef {object} LivePrediction
 * @property {string} digit_id
 * @property {string} [kind]
 * @property {{name?: string, version: number}} model
 * @property {number} predicted_digit
 * @property {number} confidence
 * @property {number[]} [probabilities]
 * @property {string} submitted_at
 * @property {number} [latency_ms] upload → answer, in the pipeline
 * @property {{inference_ms?: number}} [timings]
 */

/**
 * Progress of a rescore or evaluation job (SSE `rescore`, `GET /api/rescore-jobs`).
 * `superseded`: a newer promotion stopped it.
 * @typedef {object} RescoreJob
 * @property {string} job_id
 * @property {string} kind "rescore" or "candidate"
 * @property {number} model_version
 * @property {number} done
 * @property {number | null} total null while the job is being planned
 * @property {boolean} finished
 * @property {boolean} [superseded]
 * @property {string} [started_at]
 */

/**
 * Whether a job still runs: until it finishes, or a newer promotion supersedes it.
 * @param {RescoreJob} job
 */
export function isRunning(job) {
  return !job.finished && !job.superseded;
}

/**
 * A promotion, as the ledger and the SSE `promotion` event carry it.
 * @typedef {object} Promotion
 * @property {number} version
 * @property {number | null} [previous_version]
 * @property {string} [architecture]
 * @property {{test_accuracy?: number}} [metrics]
 * @property {string} [promoted_by]
 * @property {string} [reason]
 * @property {string} promoted_at
 */

/**
 * The champion with how it does on the users' labels (undefined: not known yet).
 * @typedef {Promotion & {label_accuracy?: number | null, labeled?: number}} Champion
 */

/** @typedef {{champion: Champion | null, promotions: Promotion[], versions: number[]}} Models */

/**
 * How a version compares with the one before (`GET /api/models/{version}`).
 * @typedef {object} VersionStats
 * @property {number | null} previous_version
 * @property {number} [compared]
 * @property {number} [flipped]
 * @property {unknown[]} [flips]
 * @property {number | null} [agreement_with_previous]
 */

/**
 * The answer to an upload; `trace_id` when tracing is on, `trace_url` where a trace UI runs.
 * @typedef {{digit_id: string, status: string, prediction?: LivePrediction,
 *   trace_id?: string | null, trace_url?: string | null}} Accepted
 */

// ---------------------------------------------------------------- requests

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

/**
 * `fetch` with a timeout; an ApiError unless the answer is 2xx.
 * @param {string} path
 * @param {RequestInit & {timeoutMs?: number}} [options]
 */
async function request(path, { timeoutMs = TIMEOUT_MS, ...options } = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    // fetch only rejects when no HTTP answer arrived: the gateway or the network is down.
    const timedOut = error instanceof Error && error.name === "TimeoutError";
    const what = timedOut ? "did not answer in time" : "is unreachable";
    throw new ApiError(`The gateway ${what}. Is it running? The page keeps retrying.`, {
      unreachable: true,
    });
  }
  if (!response.ok) {
    throw new ApiError(await problemOf(response), { status: response.status });
  }
  return response;
}

/**
 * The server's `{"detail": ...}`, or the status line when the body is not that.
 * @param {Response} response
 */
async function problemOf(response) {
  let detail = "";
  try {
    detail = describeDetail((await response.json()).detail);
  } catch {
    // Not JSON (a proxy's HTML error page, say): the status line is all we have.
  }
  return detail || `The gateway answered ${response.status} ${response.statusText}`.trim();
}

/** @param {unknown} detail */
function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  // FastAPI's validation errors: a list of {loc, msg}.
  if (Array.isArray(detail)) return detail.map((d) => d?.msg ?? String(d)).join("; ");
  return detail == null ? "" : JSON.stringify(detail);
}

/**
 * @param {string} path
 * @returns {Promise<any>} the JSON body; each caller below says its shape
 */
async function getJson(path) {
  return (await request(path, { headers: { Accept: "application/json" } })).json();
}

/**
 * Upload a drawing; resolves with the gateway's answer (`prediction` set when it came in time).
 * @param {Blob} png
 * @returns {Promise<Accepted>}
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

/**
 * One page of the history, newest first.
 * @param {{limit?: number, before?: string | null}} [query] before: a cursor, or a digit id
 * @returns {Promise<DrawingPage>}
 */
export function getDrawings({ limit = 20, before = null } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before) query.set("before", before);
  return getJson(`/api/digits?${query}`);
}

/**
 * @param {string} digitId
 * @returns {Promise<StoredDrawing>}
 */
export function getDrawing(digitId) {
  return getJson(`/api/digits/${encodeURIComponent(digitId)}`);
}

/**
 * Tell the system which digit a drawing really is.
 * @param {string} digitId
 * @param {number} label 0–9
 * @returns {Promise<{digit_id: string, label: number}>}
 */
export async function labelDrawing(digitId, label) {
  const response = await request(`/api/digits/${encodeURIComponent(digitId)}/label`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ label }),
  });
  return response.json();
}

/** @returns {Promise<Models>} */
export function getModels() {
  return getJson("/api/models");
}

/**
 * @param {number} version
 * @returns {Promise<VersionStats>}
 */
export function getModelVersion(version) {
  // The panel shows the figures, not the flip list: no page of flips (flips_limit=0).
  return getJson(`/api/models/${encodeURIComponent(String(version))}?flips_limit=0`);
}

/**
 * @param {{active?: boolean}} [filter] active: only the jobs still running
 * @returns {Promise<RescoreJob[]>}
 */
export function getRescoreJobs({ active = false } = {}) {
  return getJson(`/api/rescore-jobs${active ? "?active=true" : ""}`);
}

/**
 * One version's figures in a rollout (`GET /api/rollouts`).
 * @typedef {object} RolloutVersion
 * @property {number} version
 * @property {"champion" | "candidate"} role
 * @property {number} readings drawings it read during the rollout
 * @property {number} answered of those, the ones it answered
 * @property {number} labeled
 * @property {number | null} accuracy on the labeled ones
 * @property {number | null} accuracy_low 95 % interval
 * @property {number | null} accuracy_high
 * @property {number | null} latency_p50_ms
 * @property {number | null} latency_p99_ms
 * @property {number} failed drawings it failed on (dead letters)
 * @property {number | null} failure_rate failed / (readings + failed)
 */

/**
 * A canary or shadow rollout and its verdict.
 * @typedef {object} Rollout
 * @property {string} rollout_id
 * @property {"canary" | "shadow"} mode
 * @property {number} candidate_version
 * @property {number} champion_version
 * @property {number} percent
 * @property {string} state "running", "completed", "aborted" or "superseded"
 * @property {string | null} end_reason
 * @property {RolloutVersion[]} versions
 * @property {number} compared drawings both versions read (shadow)
 * @property {number | null} agreement
 * @property {string} verdict in plain words
 */

/**
 * @param {number} [limit] the newest this many
 * @returns {Promise<Rollout[]>} newest first
 */
export function getRollouts(limit = 10) {
  return getJson(`/api/rollouts?limit=${encodeURIComponent(String(limit))}`);
}

/**
 * Drift of the last drawings against the champion's training data.
 * @returns {Promise<import("./drift-model.js").DriftReport>}
 */
export function getDrift() {
  return getJson("/api/drift");
}

/**
 * Where the 28×28 model input of a drawing is served.
 * @param {string} digitId
 */
export function inputUrl(digitId) {
  return `/api/digits/${encodeURIComponent(digitId)}/input.png`;
}

/**
 * Where the original upload of a drawing is served.
 * @param {string} digitId
 */
export function imageUrl(digitId) {
  return `/api/digits/${encodeURIComponent(digitId)}/image`;
}
