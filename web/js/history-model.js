// @ts-check
// What the history table shows, without the page: history.js draws it and does the I/O.
//
//   history pages ─┐                           ┌─ columns()  → which versions get a column
//   live answers ──┼─▶ HistoryModel.merge() ───┼─ readings() → one row's cells, ↺ and ✓/✗
//   label choices ─┘   (newest first)          └─ RefreshScheduler → when to re-read rows
//
// Nothing here touches the DOM, the network or the real clock (only a clock passed in), so
// node --test covers it (tests/web/).

import { isRunning } from "./api.js";

/** @import { DrawingPage, LivePrediction, RescoreJob, StoredDrawing, StoredPrediction } from "./api.js" */

export const PAGE_SIZE = 20;
export const MAX_PAGE = 100; // the API's limit
// A phone has room for three answer columns beside the drawing, and the champion's is one.
const NARROW_COLUMNS = 3;
// While a rescore runs, the rows on screen are re-read at most this often: a job sends a few
// progress events a second, and each re-read is one history query.
export const REFRESH_MS = 700;
// A job can stop short of finishing (a drawing it cannot read): once its count has not moved
// for this long, every loaded row catches up all the same.
export const QUIET_MS = 3_000;
// After a label is sent, the history may still show the old one for a moment (it arrives
// through Kafka); the local choice wins for this long.
export const LABEL_SETTLE_MS = 15_000;

/**
 * The real clock and timers; tests pass their own.
 * @typedef {object} Clock
 * @property {() => number} now milliseconds, as Date.now()
 * @property {(callback: () => void, ms: number) => number} setTimeout
 * @property {(handle: number | null) => void} clearTimeout
 */

/** @type {Clock} */
export const systemClock = {
  now: () => Date.now(),
  // Wrapped: the browser's timers throw when called on another object than the window.
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle ?? undefined),
};

/** @typedef {"saving" | "saved" | "error" | null} LabelState */

/**
 * A drawing as the table knows it: every version's prediction, and the label as shown.
 * @typedef {object} Drawing
 * @property {string} digit_id
 * @property {string} submitted_at
 * @property {string | null} image_url null when only a live prediction has been seen
 * @property {Map<number, StoredPrediction>} predictions by model version
 * @property {number | null} label
 * @property {LabelState} labelState
 * @property {number | null} [labelSentAt] when the user's own choice was sent (the clock's ms)
 * @property {string | null} [labelError] why the server refused it
 */

/** @typedef {{label: number | null, labelState: LabelState}} LabelChoice */

/**
 * One cell of a row: the version's prediction (none yet: pending while its rescore runs), and
 * how it compares with the nearest older version that read the drawing and with the label.
 * @typedef {object} Reading
 * @property {number} version
 * @property {boolean} champion
 * @property {StoredPrediction | undefined} prediction
 * @property {boolean} pending
 * @property {StoredPrediction | null} changedFrom the older reading it differs from, if any
 * @property {boolean | null} matchesLabel null while the drawing has no label
 */

/**
 * What a merge changed, for the view: rows to insert (each before the row of `before`, or
 * last), rows to redraw, and whether a version column appeared (then every row is redrawn).
 * @typedef {object} Merged
 * @property {Array<{id: string, before: string | null}>} added
 * @property {string[]} changed
 * @property {boolean} newColumns
 */

export class HistoryModel {
  /** @type {Map<string, Drawing>} digit id → drawing */
  #drawings = new Map();
  /** @type {string[]} digit ids, newest first (UUIDv7 strings sort by submission time) */
  #order = [];
  /** @type {Set<number>} */
  #versions = new Set();
  /** @type {number | null} */
  #champion = null;
  /** @type {Set<number>} versions whose rescore is running: their empty cells are pending */
  #rescoring = new Set();
  /** @type {string | null | undefined} undefined: first page not loaded; null: no more pages */
  #cursor = undefined;
  #clock;

  /** @param {Pick<Clock, "now">} [clock] */
  constructor(clock = systemClock) {
    this.#clock = clock;
  }

  /** @returns {readonly string[]} digit ids, newest first */
  get order() {
    return this.#order;
  }

  get champion() {
    return this.#champion;
  }

  /** Where the next page starts: undefined before the first page, null after the last. */
  get cursor() {
    return this.#cursor;
  }

  /** How many versions have been seen (columns shown or not). */
  get versionCount() {
    return this.#versions.size;
  }

  /** The oldest loaded drawing's id, if any. */
  get oldest() {
    return this.#order.at(-1);
  }

  /** @param {string} id */
  drawing(id) {
    return this.#drawings.get(id);
  }

  /**
   * Remember versions; true when a column was added.
   * @param {Iterable<unknown>} versions
   */
  addVersions(versions) {
    const before = this.#versions.size;
    for (const v of versions) if (Number.isInteger(v)) this.#versions.add(/** @type {number} */ (v));
    return this.#versions.size !== before;
  }

  /** Every version seen, oldest first. */
  allVersions() {
    return [...this.#versions].sort((a, b) => a - b);
  }

  /**
   * The version columns shown, oldest first: a narrow screen shows the newest few, and always
   * the champion.
   * @param {{narrow: boolean}} screen
   */
  columns({ narrow }) {
    const all = this.allVersions();
    const shown = narrow ? all.slice(-NARROW_COLUMNS) : all;
    if (this.#champion != null && !shown.includes(this.#champion)) {
      shown.splice(0, 1, this.#champion);
      shown.sort((a, b) => a - b);
    }
    return shown;
  }

  /**
   * Take `version` as the champion; true when that changed what is shown.
   * @param {number | null | undefined} version
   */
  setChampion(version) {
    if (version == null || version === this.#champion) return false;
    this.#champion = version;
    this.addVersions([version]);
    return true;
  }

  /**
   * A promotion: the new champion's column appears at once, its cells pending.
   * @param {number} version
   */
  promoted(version) {
    this.#rescoring.add(version);
    this.setChampion(version);
  }

  /**
   * A rescore job's progress: its version's empty cells are pending while it runs.
   * @param {RescoreJob} job
   * @returns {{changed: boolean, running: boolean}} changed: the table must be redrawn
   */
  jobProgressed(job) {
    const version = job.model_version;
    const newColumn = this.addVersions([version]);
    const wasRunning = this.#rescoring.has(version);
    const running = isRunning(job);
    if (running) this.#rescoring.add(version);
    else this.#rescoring.delete(version);
    return { changed: newColumn || wasRunning !== running, running };
  }

  /**
   * A page of the history: merge it and remember where the next one starts.
   * @param {DrawingPage} page
   */
  pageLoaded(page) {
    this.#cursor = page.next_cursor;
    return this.merge(page.items);
  }

  /**
   * Merge drawings from the history or a live prediction: predictions add up by version, the
   * first-seen time and image stay, and the label follows `mergeLabel`.
   * @param {StoredDrawing[]} drawings
   * @returns {Merged}
   */
  merge(drawings) {
    const versions = drawings.flatMap((d) => d.predictions.map((p) => p.model_version));
    /** @type {Merged} */
    const merged = { added: [], changed: [], newColumns: this.addVersions(versions) };
    for (const incoming of drawings) {
      const id = incoming.digit_id;
      const known = this.#drawings.get(id);
      if (!known) merged.added.push({ id, before: this.#insert(id) });
      this.#drawings.set(id, this.#combine(known, incoming));
      merged.changed.push(id);
    }
    return merged;
  }

  /**
   * The cells of a drawing's row, one per shown version.
   * @param {string} id
   * @param {number[]} shown the versions with a column (`columns()`)
   * @returns {Reading[]}
   */
  readings(id, shown) {
    const drawing = this.#drawings.get(id);
    if (!drawing) return [];
    const columns = new Set(shown);
    /** @type {Reading[]} */
    const readings = [];
    /** @type {StoredPrediction | null} */
    let previous = null; // the nearest older version that read this drawing, shown or not
    for (const version of this.allVersions()) {
      const prediction = drawing.predictions.get(version);
      if (columns.has(version)) readings.push(this.#reading(version, prediction, previous, drawing.label));
      if (prediction) previous = prediction;
    }
    return readings;
  }

  /**
   * The user chose a label: it shows at once, as saving. Returns what to restore if the server
   * refuses it (null for an unknown drawing).
   * @param {string} id
   * @param {number} label
   * @returns {LabelChoice | null}
   */
  chooseLabel(id, label) {
    const drawing = this.#drawings.get(id);
    if (!drawing) return null;
    const previous = { label: drawing.label, labelState: drawing.labelState };
    Object.assign(drawing, { label, labelState: "saving", labelSentAt: this.#clock.now(), labelError: null });
    return previous;
  }

  /**
   * The server took `label` (unless a later choice has replaced it since).
   * @param {string} id
   * @param {number} label
   */
  labelSaved(id, label) {
    const drawing = this.#drawings.get(id);
    if (drawing?.label === label) drawing.labelState = "saved";
  }

  /**
   * The server refused `label`: back to `previous`, with the reason. False when a later choice
   * has replaced it since (nothing changed).
   * @param {string} id
   * @param {number} label
   * @param {LabelChoice} previous
   * @param {string} reason
   */
  labelRefused(id, label, previous, reason) {
    const drawing = this.#drawings.get(id);
    if (!drawing || drawing.label !== label) return false;
    Object.assign(drawing, previous, { labelState: "error", labelError: reason, labelSentAt: null });
    return true;
  }

  /** The line under the table once a page is in. */
  endText() {
    const n = this.#order.length;
    if (this.#cursor !== null) return n ? "Scroll for older drawings." : "";
    return n === 0 ? "No drawings yet: draw one above." : `That's all ${n} drawing${n === 1 ? "" : "s"}.`;
  }

  /**
   * The one keyset query that re-reads the rows on screen: the page that starts at the first
   * one. Null when none is on screen.
   * @param {Iterable<string>} visible digit ids
   * @returns {{limit: number, before: string | null} | null}
   */
  visibleQuery(visible) {
    const indices = [...visible].map((id) => this.#order.indexOf(id)).filter((i) => i >= 0);
    if (indices.length === 0) return null;
    const first = Math.min(...indices);
    const last = Math.max(...indices);
    return { limit: Math.min(MAX_PAGE, last - first + 1), before: first > 0 ? this.#order[first - 1] : null };
  }

  /**
   * Put `id` in its place in the order; the id it goes before (null: last).
   * @param {string} id
   */
  #insert(id) {
    const index = insertionIndex(this.#order, id);
    this.#order.splice(index, 0, id);
    return this.#order[index + 1] ?? null;
  }

  /**
   * @param {Drawing | undefined} known
   * @param {StoredDrawing} incoming
   * @returns {Drawing}
   */
  #combine(known, incoming) {
    const predictions = new Map(known?.predictions ?? []);
    for (const p of incoming.predictions) predictions.set(p.model_version, p);
    return {
      ...known,
      digit_id: incoming.digit_id,
      submitted_at: known?.submitted_at ?? incoming.submitted_at,
      image_url: known?.image_url ?? incoming.image_url ?? null,
      predictions,
      // A live prediction says nothing about labels (undefined); the history does (null or 0-9).
      ...(incoming.label === undefined
        ? { label: known?.label ?? null, labelState: known?.labelState ?? null }
        : mergeLabel(known, incoming.label, this.#clock.now())),
    };
  }

  /**
   * @param {number} version
   * @param {StoredPrediction | undefined} prediction
   * @param {StoredPrediction | null} previous
   * @param {number | null} label
   * @returns {Reading}
   */
  #reading(version, prediction, previous, label) {
    const digit = prediction?.predicted_digit;
    return {
      version,
      champion: version === this.#champion,
      prediction,
      pending: !prediction && this.#rescoring.has(version),
      changedFrom: prediction && previous && previous.predicted_digit !== digit ? previous : null,
      matchesLabel: prediction && label != null ? label === digit : null,
    };
  }
}

/**
 * At most one re-read in flight and one queued behind it, whatever the event rate. A re-read
 * covers every loaded row (`all`: after a job or a reconnection) or the rows on screen.
 */
export class RefreshScheduler {
  #reread;
  #clock;
  /** @type {number | null} */
  #timer = null;
  #running = false;
  #again = false;
  #all = false;
  /** @type {number | null} */
  #quietTimer = null;
  /** @type {Map<string, number>} job id → the last `done` seen */
  #jobDone = new Map();

  /**
   * @param {(all: boolean) => Promise<void>} reread re-read every loaded row, or those on screen
   * @param {Clock} [clock]
   */
  constructor(reread, clock = systemClock) {
    this.#reread = reread;
    this.#clock = clock;
  }

  /**
   * Re-read in `delayMs`, unless one is already due (then it also covers `all`).
   * @param {number} delayMs
   * @param {{all?: boolean}} [options]
   */
  schedule(delayMs, { all = false } = {}) {
    this.#all ||= all;
    if (this.#running) {
      this.#again = true;
      return;
    }
    if (this.#timer !== null) return;
    this.#timer = this.#clock.setTimeout(() => this.#run(), delayMs);
  }

  /**
   * A rescore job's progress: the rows on screen follow it while it runs; when it ends, or its
   * count stops moving for QUIET_MS, every loaded row catches up.
   * @param {RescoreJob} job
   * @param {boolean} running
   */
  followJob(job, running) {
    this.schedule(running ? REFRESH_MS : 0, { all: !running });
    const moved = this.#jobDone.get(job.job_id) !== job.done;
    this.#jobDone.set(job.job_id, job.done);
    if (!running) this.#clock.clearTimeout(this.#quietTimer);
    else if (moved) {
      this.#clock.clearTimeout(this.#quietTimer);
      this.#quietTimer = this.#clock.setTimeout(() => this.schedule(0, { all: true }), QUIET_MS);
    }
  }

  async #run() {
    this.#timer = null;
    this.#running = true;
    const all = this.#all;
    this.#all = false;
    try {
      await this.#reread(all);
    } catch {
      // Shown by the connection banner; the next event or reconnection tries again.
    } finally {
      this.#running = false;
    }
    if (this.#again) {
      this.#again = false;
      this.schedule(REFRESH_MS);
    }
  }
}

/**
 * A live prediction (SSE or the upload's answer) as a drawing to merge: no label, no image.
 * @param {LivePrediction} prediction
 * @returns {StoredDrawing}
 */
export function fromLivePrediction(prediction) {
  return {
    digit_id: prediction.digit_id,
    submitted_at: prediction.submitted_at,
    predictions: [
      {
        model_version: prediction.model.version,
        predicted_digit: prediction.predicted_digit,
        confidence: prediction.confidence,
        kind: prediction.kind,
      },
    ],
  };
}

/**
 * One step of re-reading every loaded row, newest first: the page's drawings that are loaded
 * (as old as `oldest` or newer), and the cursor of the next page (null: done).
 * @param {DrawingPage} page
 * @param {string} oldest the oldest loaded drawing's id
 */
export function catchUpPage(page, oldest) {
  const items = page.items.filter((d) => d.digit_id >= oldest);
  const last = page.items.at(-1)?.digit_id;
  const done = !page.next_cursor || !last || last <= oldest;
  return { items, next: done ? null : page.next_cursor };
}

/**
 * The server's label, unless the user's own choice is younger than the server can know.
 * @param {Drawing | undefined} known
 * @param {number | null} serverLabel
 * @param {number} now
 * @returns {Pick<Drawing, "label" | "labelState" | "labelError">}
 */
function mergeLabel(known, serverLabel, now) {
  if (!known) return { label: serverLabel, labelState: serverLabel == null ? null : "saved" };
  const settling = known.labelSentAt != null && now - known.labelSentAt < LABEL_SETTLE_MS;
  if (known.labelState === "saving" || (settling && serverLabel !== known.label)) {
    return { label: known.label, labelState: known.labelState };
  }
  const labelState = serverLabel == null ? null : "saved";
  return { label: serverLabel, labelState, labelError: known.labelError };
}

/**
 * Where `id` goes in `order` (newest first) by binary search.
 * @param {readonly string[]} order
 * @param {string} id
 */
function insertionIndex(order, id) {
  let low = 0;
  let high = order.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (order[middle] > id) low = middle + 1;
    else high = middle;
  }
  return low;
}
