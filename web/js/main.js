// @ts-check
// Wires the page together: the pad submits, the stream feeds the result panel, the history
// and the models panel, and the connection state is always on screen.

import { ApiError, getDrawing, submitDrawing } from "./api.js";
import { DriftPanel } from "./drift.js";
import { LiveEvents } from "./events.js";
import { messageOf } from "./format.js";
import { HistoryTable } from "./history.js";
import { ModelsPanel } from "./models.js";
import { DrawingPad } from "./pad.js";
import { ResultPanel } from "./result.js";
import { RolloutPanel } from "./rollout.js";

/** @import { LivePrediction, StoredDrawing } from "./api.js" */
/** @import { ConnectionState } from "./events.js" */

// The gateway holds the upload this long for its prediction: one round trip when it is fast.
// When the answer did not come with the upload, ask the history too (the stream may be down).
const POLL_MS = 2_000;
const GIVE_UP_MS = 60_000;
const RECENT_PREDICTIONS = 500;
const NO_ANSWER =
  `No model answered within ${GIVE_UP_MS / 1000} s. The drawing was accepted and will be ` +
  "read once a model is served; it shows in the history then.";
const STREAM_DROPPED =
  "The live connection to the gateway dropped. Reconnecting on its own… " +
  "The page keeps working and catches up once it is back.";

/**
 * The element of index.html with `id`, of the kind it is there.
 * @template {HTMLElement} [Kind=HTMLElement]
 * @param {string} id
 * @param {new () => Kind} [kind]
 * @returns {Kind}
 */
function byId(id, kind) {
  const node = document.getElementById(id);
  const expected = kind ?? HTMLElement;
  if (!(node instanceof expected)) throw new Error(`index.html has no ${expected.name} #${id}`);
  return /** @type {Kind} */ (node);
}

/** Live predictions seen on the stream, and uploads waiting for theirs. */
class Predictions {
  /** @type {Map<string, LivePrediction>} */
  #recent = new Map();
  /** @type {Map<string, (prediction: LivePrediction) => void>} */
  #waiters = new Map();

  /** @param {LivePrediction} prediction */
  seen(prediction) {
    this.#recent.set(prediction.digit_id, prediction);
    const oldest = this.#recent.keys().next().value;
    if (this.#recent.size > RECENT_PREDICTIONS && oldest !== undefined) this.#recent.delete(oldest);
    this.#waiters.get(prediction.digit_id)?.(prediction);
  }

  /**
   * `{prediction, via}` of `digitId`: from the stream, or from the history while the stream
   * is down (it is polled every POLL_MS until one of them answers).
   * @param {string} digitId
   * @param {(text: string) => void} onSlow told now and then while no answer has come
   * @returns {Promise<{prediction: LivePrediction, via: "stream" | "history"}>}
   */
  wait(digitId, onSlow) {
    const known = this.#recent.get(digitId);
    if (known) return Promise.resolve({ prediction: known, via: "stream" });
    return new Promise((resolve, reject) => {
      const started = Date.now();
      let settled = false;
      /** @param {() => void} finish */
      const settle = (finish) => {
        settled = true;
        this.#waiters.delete(digitId);
        finish();
      };
      const poll = async () => {
        if (settled) return;
        const stored = await getDrawing(digitId).catch(() => null);
        if (settled) return; // the stream answered while we asked
        const prediction = stored && fromHistory(stored);
        if (prediction) return settle(() => resolve({ prediction, via: "history" }));
        if (Date.now() - started > GIVE_UP_MS) return settle(() => reject(new Error(NO_ANSWER)));
        onSlow("No answer yet. Is a model promoted? Still waiting…");
        setTimeout(poll, POLL_MS);
      };
      this.#waiters.set(digitId, (prediction) => settle(() => resolve({ prediction, via: "stream" })));
      setTimeout(poll, POLL_MS);
    });
  }
}

/**
 * A stored drawing's first prediction in the shape the stream uses.
 * @param {StoredDrawing} drawing
 * @returns {LivePrediction | null}
 */
function fromHistory(drawing) {
  const p = drawing.predictions.find((each) => each.kind === "live") ?? drawing.predictions[0];
  if (!p) return null;
  return {
    digit_id: drawing.digit_id,
    kind: p.kind,
    model: { name: p.model_name, version: p.model_version },
    predicted_digit: p.predicted_digit,
    confidence: p.confidence,
    probabilities: p.probabilities,
    submitted_at: drawing.submitted_at,
    latency_ms: Date.parse(p.predicted_at ?? "") - Date.parse(drawing.submitted_at),
  };
}

function main() {
  const pad = new DrawingPad(byId("pad", HTMLCanvasElement));
  const result = new ResultPanel(byId("result"));
  const history = new HistoryTable({
    table: byId("history", HTMLTableElement),
    status: byId("history-status"),
    retry: byId("history-retry", HTMLButtonElement),
    sentinel: byId("history-sentinel"),
    columnsNote: byId("history-columns-note"),
  });
  const models = new ModelsPanel({
    champion: byId("champion"),
    jobs: byId("jobs"),
    ledger: byId("ledger"),
    message: byId("models-message"),
  });
  const rollout = new RolloutPanel(byId("rollout"));
  const drift = new DriftPanel(byId("drift"));
  const events = new LiveEvents("/api/events");
  const predictions = new Predictions();
  const drawMessage = byId("draw-message");
  let submitting = false;
  let latestSubmission = 0;

  /** @param {string} text shown under the pad; "" hides it */
  const say = (text) => {
    drawMessage.textContent = text;
    drawMessage.hidden = !text;
  };

  const updateButtons = () => {
    byId("undo", HTMLButtonElement).disabled = pad.strokeCount === 0;
    byId("clear", HTMLButtonElement).disabled = pad.strokeCount === 0;
    byId("submit", HTMLButtonElement).disabled = pad.isEmpty || submitting;
    byId("draw-card").classList.toggle("empty", pad.isEmpty);
  };

  async function submit() {
    if (submitting) return;
    if (pad.isEmpty) {
      say("Draw a digit first: the canvas is empty.");
      return;
    }
    const submission = ++latestSubmission;
    const started = performance.now();
    submitting = true;
    updateButtons();
    say("");
    try {
      const png = await pad.toBlob();
      result.showPending(png);
      const answer = await submitDrawing(png);
      if (submission === latestSubmission) result.showTrace(answer);
      pad.clear();
      submitting = false;
      updateButtons();
      const { prediction, via } = await predictions.wait(answer.digit_id, (text) => {
        if (submission === latestSubmission) result.showWaiting(text);
      });
      history.livePrediction(prediction);
      // A newer drawing owns the panel now; this answer still went into the history.
      if (submission !== latestSubmission) return;
      result.showPrediction(prediction, { roundTripMs: performance.now() - started });
      byId("result").dataset.via = via;
    } catch (error) {
      if (submission !== latestSubmission) return;
      const refused = error instanceof ApiError && error.status > 0;
      const text = refused ? `Upload refused: ${error.message}` : messageOf(error);
      result.showError(text);
      say(text);
    } finally {
      if (submission === latestSubmission) submitting = false;
      updateButtons();
    }
  }

  pad.addEventListener("change", () => {
    updateButtons();
    if (!pad.isEmpty) say("");
  });
  byId("undo").addEventListener("click", () => pad.undo());
  byId("clear").addEventListener("click", () => pad.clear());
  byId("submit").addEventListener("click", submit);
  document.addEventListener("keydown", (event) => shortcut(event, { pad, submit }));

  events.on("state", (state) => showConnection(state));
  events.on("hello", (hello) => models.greet(hello));
  events.on("prediction", (prediction) => {
    predictions.seen(prediction);
    history.livePrediction(prediction);
  });
  events.on("rescore", (job) => models.progressed(job));
  events.on("promotion", (promotion) => {
    history.promoted(promotion.model.version);
    models.promoted(promotion);
    rollout.refresh(); // a promotion ends the running rollout
    drift.refresh(); // and brings its own reference
  });
  // The history stores a step a moment after the stream carries it: read it again shortly too.
  events.on("rollout", () => {
    rollout.refresh();
    setTimeout(() => rollout.refresh(), 1_000);
  });
  events.on("resync", () => {
    rollout.refresh();
    models.refresh();
    models.loadActiveJobs().catch(() => {});
    history.resync();
  });
  models.on("champion", (version) => history.setChampion(version));
  models.on("versions", (versions) => history.addVersions(versions));
  models.on("job", (job) => history.jobProgressed(job));

  updateButtons();
  history.start();
  models.refresh();
  rollout.refresh();
  drift.refresh();
  models.loadActiveJobs().catch(() => {});
  events.start();
}

/**
 * Page-wide keys for the pad; the history handles its own (digits label a row).
 * @param {KeyboardEvent} event
 * @param {{pad: DrawingPad, submit: () => void}} actions
 */
function shortcut(event, { pad, submit }) {
  const target = event.target;
  if (event.defaultPrevented || event.altKey || !(target instanceof Element)) return;
  if (target.closest("#history, input, textarea, select, [contenteditable]")) return;
  const onControl = target.closest("button, a, summary");
  const undoKey = event.key.toLowerCase() === "z" && (event.ctrlKey || event.metaKey);
  if ((event.ctrlKey || event.metaKey) && !undoKey) return; // leave the browser's own keys alone
  if (event.key === "Enter" && !onControl) {
    event.preventDefault();
    submit();
  } else if (undoKey || (event.key === "Backspace" && !onControl)) {
    event.preventDefault();
    pad.undo();
  } else if (event.key === "Escape") {
    pad.clear();
  }
}

/** @type {Record<ConnectionState, string>} */
const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

/** @param {ConnectionState} state */
function showConnection(state) {
  const node = byId("connection");
  node.dataset.state = state;
  /** @type {HTMLElement} */ (node.querySelector("[data-part=text]")).textContent =
    CONNECTION_TEXT[state] ?? state;
  const banner = byId("banner");
  banner.hidden = state !== "reconnecting";
  banner.textContent = state === "reconnecting" ? STREAM_DROPPED : "";
}

main();
