// The gateway's Server-Sent Events stream, with a connection state people can see.
//
// EventSource reconnects on its own after a dropped connection (readyState CONNECTING). It
// gives up for good (CLOSED) when an answer is not an event stream, e.g. a proxy's 502 while
// the gateway restarts, so then we open a new one ourselves with a growing delay.

const EVENT_NAMES = ["hello", "prediction", "rescore", "promotion"];
const MAX_BACKOFF_MS = 15_000;

export class LiveEvents extends EventTarget {
  #url;
  #source = null;
  #state = "connecting";
  #backoffMs = 1_000;
  #everOpened = false;
  #retryTimer = null;

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
    if (this.#everOpened) this.dispatchEvent(new Event("resync"));
    this.#everOpened = true;
    this.#setState("live");
  }

  #failed(source) {
    if (source !== this.#source) return;
    this.#setState("reconnecting");
    if (source.readyState === EventSource.CLOSED) {
      this.#retryTimer = setTimeout(() => this.start(), this.#backoffMs);
      this.#backoffMs = Math.min(MAX_BACKOFF_MS, this.#backoffMs * 2);
    }
  }

  #deliver(name, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      console.warn(`ignoring a ${name} event that is not JSON`, raw);
      return;
    }
    this.dispatchEvent(new CustomEvent(name, { detail: data }));
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}
