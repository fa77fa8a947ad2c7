// @ts-check
// The models panel: the champion and how it does, the promotion ledger, and live progress of
// rescore jobs (every stored drawing re-read by a newly promoted model).

import { getModels, getModelVersion, getRescoreJobs, isRunning } from "./api.js";
import { Emitter } from "./events.js";
import { element, messageOf, percent, when } from "./format.js";

/** @import { Champion, Promotion, RescoreJob, VersionStats } from "./api.js" */
/** @import { LiveEventMap, PromotionEvent } from "./events.js" */

/**
 * What ModelsPanel tells the page: the champion's version when it changes, the versions the
 * history has answers of, and every job's progress.
 * @typedef {{champion: number, versions: number[], job: RescoreJob}} ModelsEventMap
 */

/** @typedef {HTMLElement & {job?: RescoreJob, changedAt?: number}} JobRow a job's progress row */

/**
 * @typedef {object} ModelsParts
 * @property {HTMLElement} champion
 * @property {HTMLElement} jobs
 * @property {HTMLElement} ledger
 * @property {HTMLElement} message
 */

const JOBS_SHOWN = 3;
const JOB_POLL_MS = 1_500;
// A promotion whose job never shows up (planner down) stops being watched after this long.
const JOB_WATCH_LIMIT_MS = 180_000;
// The CLI that promotes and the history that times jobs may run on hosts whose clocks differ.
const CLOCK_SLACK_MS = 30_000;
// A running job whose count has not moved for this long is shown as stalled.
const STALL_MS = 30_000;
const STALL_CHECK_MS = 5_000;
// After a promotion, how long the panel waits for the history to store it.
const CATCH_UP_ATTEMPTS = 20;
const CATCH_UP_DELAY_MS = 1_000;
const FLIPS_EVERY_MS = 3_000;

/** @extends {Emitter<ModelsEventMap>} */
export class ModelsPanel extends Emitter {
  #champion;
  #jobs;
  #ledger;
  #message;
  /** @type {Map<string, JobRow>} job id → its progress row */
  #jobRows = new Map();
  /** @type {Map<number, number>} version → its job's polling timer */
  #watching = new Map();
  /** @type {Promise<boolean> | null} */
  #refreshing = null;
  /** @type {{version: number | null, at: number}} */
  #newest = { version: null, at: -Infinity };
  /** @type {number | null} */
  #flipsTimer = null;
  /** @type {number | null} ticks only while a job runs */
  #stallTimer = null;
  /** @type {number | null} */
  championVersion = null;

  /** @param {ModelsParts} parts */
  constructor({ champion, jobs, ledger, message }) {
    super();
    this.#champion = champion;
    this.#jobs = jobs;
    this.#ledger = ledger;
    this.#message = message;
  }

  /** Re-read champion, ledger and versions; coalesces calls made while one is running. */
  refresh() {
    this.#refreshing ??= this.#load().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  /**
   * The SSE `hello`: who serves now (before /api/models has answered).
   * @param {LiveEventMap["hello"]} hello
   */
  greet(hello) {
    const champion = hello?.champion;
    if (champion) this.#accept(champion.model.version, champion.promoted_at);
  }

  /**
   * The SSE `promotion`: a new champion; a rescore job follows.
   * @param {PromotionEvent} event
   */
  promoted(event) {
    this.#accept(event.model.version, event.promoted_at);
    // Shown from the event at once: the history may store the promotion a moment later.
    this.#renderChampion({ ...event, version: event.model.version, label_accuracy: undefined });
    this.#showJob({
      job_id: `planned-${event.model.version}`,
      kind: "rescore",
      model_version: event.model.version,
      done: 0,
      total: null,
      finished: false,
    });
    this.#watchJobOf(event.model.version, Date.parse(event.promoted_at));
    this.#refreshUntilCurrent();
    // The rescore-worker drops the chunks of a rescore whose version is no longer champion.
    for (const row of [...this.#jobRows.values()]) {
      const job = row.job;
      if (job && job.kind === "rescore" && job.model_version !== event.model.version && !job.finished) {
        this.progressed({ ...job, superseded: true });
      }
    }
  }

  /**
   * The SSE `rescore`: progress of one job.
   * @param {RescoreJob} job
   */
  progressed(job) {
    this.#showJob(job);
    this.emit("job", job);
    if (job.finished) {
      // refresh() re-reads the flips of the finished rescore: no need for a later look.
      this.#cancelFlips();
      this.refresh();
    } else if (job.model_version === this.championVersion) this.#scheduleFlips();
  }

  /** The flip count grows as the rescore goes: re-read it now and then, not on every event. */
  #scheduleFlips() {
    if (this.#flipsTimer !== null) return;
    this.#flipsTimer = setTimeout(() => {
      this.#flipsTimer = null;
      if (this.championVersion !== null) this.#loadFlips(this.championVersion);
    }, FLIPS_EVERY_MS);
  }

  #cancelFlips() {
    if (this.#flipsTimer !== null) clearTimeout(this.#flipsTimer);
    this.#flipsTimer = null;
  }

  /** Show the jobs that are running now (after a page load or a reconnection). */
  async loadActiveJobs() {
    const jobs = await getRescoreJobs({ active: true });
    for (const job of jobs) this.progressed(job);
  }

  /** Load the models; true when the history knows the newest champion this page has seen. */
  async #load() {
    try {
      const models = await getModels();
      this.#hideMessage();
      const champion = models.champion;
      const current = champion
        ? this.#accept(champion.version, champion.promoted_at)
        : this.#newest.version == null;
      if (current) this.#renderChampion(champion);
      this.#renderLedger(models.promotions);
      this.emit("versions", models.versions);
      if (current && champion) await this.#loadFlips(champion.version);
      return current;
    } catch (error) {
      this.#showMessage(`Models could not be loaded: ${messageOf(error)}`);
      return false;
    }
  }

  async #refreshUntilCurrent() {
    for (let attempt = 0; attempt < CATCH_UP_ATTEMPTS; attempt += 1) {
      if (await this.refresh()) return;
      await new Promise((resolve) => setTimeout(resolve, CATCH_UP_DELAY_MS));
    }
  }

  /**
   * Take `version` as the champion unless a newer promotion is already known: the stream can
   * be ahead of the history, and a rollback re-promotes an old version with a new time.
   * @param {number} version
   * @param {string} promotedAt
   */
  #accept(version, promotedAt) {
    const at = Date.parse(promotedAt);
    if (Number.isFinite(at) && at < this.#newest.at) return false;
    this.#newest = { version, at: Number.isFinite(at) ? at : this.#newest.at };
    this.#setChampionVersion(version);
    return true;
  }

  /** @param {number} version */
  async #loadFlips(version) {
    const stats = await getModelVersion(version).catch(() => null);
    const slot = this.#champion.querySelector("[data-part=flips]");
    if (!stats || !slot || version !== this.championVersion) return; // a newer champion since
    slot.textContent = describeFlips(stats);
  }

  /** @param {number} version */
  #setChampionVersion(version) {
    if (version === this.championVersion) return;
    this.championVersion = version;
    this.emit("champion", version);
  }

  /** @param {Champion | null} champion */
  #renderChampion(champion) {
    if (!champion) {
      this.#champion.replaceChildren(
        element(
          "p",
          { className: "muted" },
          "No model is serving yet. Train one and promote it: ",
          element("code", { text: "mnistream train" }),
          ", then ",
          element("code", { text: "mnistream promote VERSION" }),
          ".",
        ),
      );
      return;
    }
    const labels =
      champion.label_accuracy === undefined
        ? "…" // not known yet: shown from a promotion event
        : champion.label_accuracy === null
          ? "no labels yet"
          : `${percent(champion.label_accuracy)} of ${champion.labeled}`;
    this.#champion.replaceChildren(
      element(
        "p",
        { className: "champion-head" },
        element("span", { className: "badge champion", text: "champion" }),
        element("span", {
          className: "champion-version",
          dataset: { version: String(champion.version) },
          text: `v${champion.version}`,
        }),
        element("span", { className: "architecture", text: champion.architecture }),
      ),
      element(
        "dl",
        { className: "stats" },
        stat("Test accuracy", percent(champion.metrics?.test_accuracy, 2)),
        stat("On your labels", labels),
        stat("Versus the one before", "…", "flips"),
        stat("Promoted", `${when(champion.promoted_at)} by ${champion.promoted_by}`),
      ),
      // replaceChildren() would show a null as the text "null": a champion without a reason
      // (`mnistream promote` without --reason) gets no paragraph at all.
      ...(champion.reason ? [element("p", { className: "reason", text: `“${champion.reason}”` })] : []),
    );
  }

  /** @param {Promotion[]} promotions */
  #renderLedger(promotions) {
    const items = promotions.map((p) =>
      element(
        "li",
        { dataset: { version: String(p.version) } },
        element("strong", { text: `v${p.version}` }),
        p.previous_version == null ? " first champion" : ` replaced v${p.previous_version}`,
        ` · ${p.architecture} · ${percent(p.metrics?.test_accuracy, 2)} test · `,
        element("time", { datetime: p.promoted_at, text: when(p.promoted_at) }),
        ` · ${p.promoted_by}`,
        p.reason ? element("span", { className: "reason", text: ` “${p.reason}”` }) : null,
      ),
    );
    if (items.length === 0) items.push(element("li", { className: "muted", text: "No promotions yet." }));
    this.#ledger.replaceChildren(...items);
  }

  /** @param {RescoreJob} job */
  #showJob(job) {
    const version = job.model_version;
    // A real job replaces the placeholder shown between the promotion and its first progress.
    if (!String(job.job_id).startsWith("planned-")) this.#removeJob(`planned-${version}`);
    let row = this.#jobRows.get(job.job_id);
    if (!row) {
      row = newJobRow(job);
      this.#jobRows.set(job.job_id, row);
      this.#jobs.prepend(row);
      this.#trimJobs();
    }
    updateJobRow(row, job);
    this.#watchStalls();
  }

  /** The stall check ticks only while a job shown is running: an idle page runs no timer. */
  #watchStalls() {
    const running = [...this.#jobRows.values()].some((row) => row.job && isRunning(row.job));
    if (running && this.#stallTimer === null) {
      this.#stallTimer = setInterval(() => this.#noticeStalls(), STALL_CHECK_MS);
    } else if (!running && this.#stallTimer !== null) {
      clearInterval(this.#stallTimer);
      this.#stallTimer = null;
    }
  }

  /** A job whose count has not moved for a while says so, instead of looking busy forever. */
  #noticeStalls() {
    for (const row of this.#jobRows.values()) {
      const job = row.job;
      if (!job || !isRunning(job) || job.total == null) continue;
      const idle = Date.now() - (row.changedAt ?? Date.now());
      if (idle < STALL_MS) continue;
      row.dataset.state = "stalled";
      labelOf(row).textContent =
        `${jobName(job)}: no progress for ${Math.round(idle / 1000)} s, ` +
        `${job.total - job.done} of ${job.total} drawings not read`;
    }
  }

  /** @param {string} jobId */
  #removeJob(jobId) {
    this.#jobRows.get(jobId)?.remove();
    this.#jobRows.delete(jobId);
  }

  #trimJobs() {
    const ids = [...this.#jobRows.keys()];
    for (const id of ids.slice(0, Math.max(0, ids.length - JOBS_SHOWN))) this.#removeJob(id);
  }

  /**
   * Poll the job list until the promoted version's job finishes: progress events only flow
   * while predictions do, so an empty history or a dropped stream would otherwise leave the
   * bar waiting forever.
   * @param {number} version
   * @param {number} promotedAt ms since the epoch; NaN when the event had no usable time
   */
  #watchJobOf(version, promotedAt) {
    clearTimeout(this.#watching.get(version));
    const deadline = Date.now() + JOB_WATCH_LIMIT_MS;
    // A version promoted again (a rollback) has older jobs: only one started since counts.
    const since = (Number.isNaN(promotedAt) ? Date.now() : promotedAt) - CLOCK_SLACK_MS;
    const poll = async () => {
      const jobs = await getRescoreJobs().catch(() => []);
      const job = jobs.find(
        (j) => j.model_version === version && j.kind === "rescore" && Date.parse(j.started_at ?? "") >= since,
      );
      if (job) this.progressed(job);
      if ((job && (job.finished || job.superseded)) || Date.now() > deadline) {
        this.#watching.delete(version);
        return;
      }
      this.#watching.set(version, setTimeout(poll, JOB_POLL_MS));
    };
    this.#watching.set(version, setTimeout(poll, JOB_POLL_MS));
  }

  /** @param {string} text */
  #showMessage(text) {
    this.#message.textContent = text;
    this.#message.hidden = false;
  }

  #hideMessage() {
    this.#message.hidden = true;
  }
}

/**
 * @param {string} term
 * @param {string} value
 * @param {string | null} [part] its `data-part`, to fill in later
 */
function stat(term, value, part = null) {
  return element(
    "div",
    {},
    element("dt", { text: term }),
    element("dd", { text: value, dataset: part ? { part } : undefined }),
  );
}

/** @param {VersionStats} stats */
function describeFlips(stats) {
  if (stats.previous_version == null) return "the first champion";
  if (!stats.compared) return `nothing to compare with v${stats.previous_version} yet`;
  const flipped = stats.flipped ?? stats.flips?.length ?? 0;
  return (
    `${flipped} of ${stats.compared} read differently from v${stats.previous_version} ` +
    `(${percent(stats.agreement_with_previous, 0)} agree)`
  );
}

/**
 * @param {RescoreJob} job
 * @returns {JobRow}
 */
function newJobRow(job) {
  const id = `job-${job.job_id}`;
  return element(
    "div",
    { className: "job", dataset: { jobId: job.job_id } },
    element("label", { for: id, className: "job-label" }),
    element(
      "div",
      { className: "job-bar" },
      element("progress", { id, className: "job-progress" }),
      element("span", { className: "job-count" }),
    ),
  );
}

/**
 * @param {JobRow} row
 * @param {RescoreJob} job
 */
function updateJobRow(row, job) {
  const state = job.superseded ? "superseded" : job.finished ? "finished" : "running";
  const progress = /** @type {HTMLProgressElement} */ (row.querySelector("progress"));
  const count = /** @type {HTMLElement} */ (row.querySelector(".job-count"));
  const changed = row.job?.done !== job.done || row.job?.finished !== job.finished;
  if (!changed && row.dataset.state === "stalled" && !job.superseded) return;
  if (changed) row.changedAt = Date.now();
  row.job = job;
  row.dataset.state = state;
  row.dataset.version = String(job.model_version);
  row.dataset.kind = job.kind;
  labelOf(row).textContent = jobTitle(job, state);
  if (job.total != null) {
    // An empty history finishes at 0 of 0: show that as a full bar, not an empty one.
    progress.max = Math.max(job.total, 1);
    progress.value = job.total === 0 && job.finished ? 1 : job.done;
    progress.setAttribute("aria-valuetext", `${job.done} of ${job.total} drawings`);
    count.textContent = `${job.done} / ${job.total}`;
  } else {
    progress.removeAttribute("value"); // indeterminate until the job's size is known
    count.textContent = "";
  }
}

/** @param {HTMLElement} row */
function labelOf(row) {
  return /** @type {HTMLLabelElement} */ (row.querySelector("label"));
}

/** @param {RescoreJob} job */
function jobName(job) {
  const v = `v${job.model_version}`;
  return job.kind === "candidate" ? `Evaluating candidate ${v}` : `Re-reading stored drawings with ${v}`;
}

/**
 * @param {RescoreJob} job
 * @param {"running" | "finished" | "superseded"} state
 */
function jobTitle(job, state) {
  const what = jobName(job);
  if (state === "finished") return `${what}: done`;
  if (state === "superseded") return `${what}: stopped, a newer model was promoted`;
  return job.total == null ? `${what}: planning…` : `${what}…`;
}
