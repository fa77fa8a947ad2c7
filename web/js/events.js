// @ts-check
// The gateway's Server-Sent Events stream, with a connection state people can see.
//
// EventSource reconnects on its own after a dropped connection (readyState CONNECTING). It
// gives up for good (CLOSED) when an answer is not an event stream, e.g. a proxy's 502 while
// the gateway restarts, so then we open a new one ourselves with a growing delay.

/** @import { LivePrediction, Promotion, RescoreJob } from "./api.js" */

/**
 * A `rollout` event: a ModelRollout step (docs/events.md).
 * @typedef {{rollout_id: string, action: string, mode: string, percent: number, candidate: {version: number}}} RolloutEvent
 */

/** @typedef {"connecting" | "live" | "reconnecting"} ConnectionState */

/**
 * A `promotion` event: a ModelPromoted (docs/events.md).
 * @typedef {Omit<Promotion, "version"> & {model: {version: number}}} PromotionEvent
 */

/**
 * What each event of LiveEvents carries as its `detail`. `hello` comes first on every
 * connection; `resync` follows a reconnection, when events may have been missed.
 * @typedef {object} LiveEventMap
 * @property {ConnectionState} state
 * @property {{champion?: {model: {version: number}, promoted_at: string} | null, rollout?: object | null}} hello
 * @property {LivePrediction} prediction
 * @property {RescoreJob} rescore
 * @property {PromotionEvent} promotion
 * @property {RolloutEvent} rollout
 * @property {null} resync
 */

const EVENT_NAMES = /** @type {const} */ (["hello", "prediction", "rescore", "promotion", "rollout"]);
const MAX_BACKOFF_MS = 15_000;

/**
 * An EventTarget whose events are CustomEvents with a typed `detail`.
 * @template {object} Events event name → its detail
 */
export class Emitter extends EventTarget {
  /**
   * Call `handler` with the detail of every `name` event.
   * @template {keyof Events & string} Name
   * @param {Name} name
   * @param {(detail: Events[Name]) => void} handler
   */
  on(name, handler) {
    this.addEventListener(name, (event) => handler(/** @type {CustomEvent} */ (event).detail));
  }

  /**
   * @template {keyof Events & string} Name
   * @param {Name} name
   * @param {Events[Name]} detail
   */
  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

/** @extends {Emitter<LiveEventMap>} */
export class LiveEvents extends Emitter {
  #url;
  /** @type {EventSource | null} */
  #source = null;
  /** @type {ConnectionState} */
  #state = "connecting";
  #backoffMs = 1_000;
  #everOpened = false;
  /** @type {number | undefined} */
  #retryTimer = undefined;

  constructor(url = "/api/events") {
    super();
    this.#url = url;
  }

  /** `connecting`, `live` or `reconnecting`. */
  get state() {
    return this.#state;
  }

  start() {
    clearTimeout(this.#retryTimer);
    this.#source?.close();
    const source = new EventSource(this.#url);
    this.#source = source;
    source.addEventListener("open", () => this.#opened());
    source.addEventListener("error", () => this.#failed(source));
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (message) => this.#deliver(name, message.data));
    }
  }

  #opened() {
    this.#backoffMs = 1_000;
    // After a gap we may have missed events: listeners re-read what they show.
    if (this.#everOpened) this.emit("resync", null);
    this.#everOpened = true;
    this.#setState("live");
  }

  /** @param {EventSource} source */
  #failed(source) {
    if (source !== this.#source) return;
    this.#setState("reconnecting");
    if (source.readyState === EventSource.CLOSED) {
      this.#retryTimer = setTimeout(() => this.start(), this.#backoffMs);
      this.#backoffMs = Math.min(MAX_BACKOFF_MS, this.#backoffMs * 2);
    }
  }

  /**
   * @param {(typeof EVENT_NAMES)[number]} name
   * @param {string} raw
   */
  #deliver(name, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      console.warn(`ignoring a ${name} event that is not JSON`, raw);
      return;
    }
    this.emit(name, data);
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.emit("state", state);
  }
}
