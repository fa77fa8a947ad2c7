// @ts-check
// The result panel: the drawing, the 28×28 image the model saw, the ten probabilities, and
// which model answered how fast.

import { inputUrl } from "./api.js";
import { element, loadEventually, milliseconds, percent } from "./format.js";

/** @import { LivePrediction } from "./api.js" */

/**
 * The `data-part` elements of the panel (index.html).
 * @typedef {Record<"idle" | "body" | "digit" | "confidence" | "bars" | "model" | "latency" | "status" | "trace" | "traceRow", HTMLElement>
 *   & {drawing: HTMLImageElement, input: HTMLImageElement}} ResultParts
 */

export class ResultPanel {
  #root;
  #parts;
  /** @type {Array<{item: HTMLElement, fill: HTMLElement, value: HTMLElement}>} */
  #bars = [];
  /** @type {string | null} */
  #drawingUrl = null;

  /** @param {HTMLElement} root */
  constructor(root) {
    this.#root = root;
    const parts = /** @type {NodeListOf<HTMLElement>} */ (root.querySelectorAll("[data-part]"));
    this.#parts = /** @type {ResultParts} */ (
      Object.fromEntries([...parts].map((node) => [node.dataset.part, node]))
    );
    for (let digit = 0; digit < 10; digit += 1) {
      const fill = element("span", { className: "fill" });
      const value = element("span", { className: "bar-value", text: "" });
      const item = element(
        "li",
        { className: "bar", dataset: { digit: String(digit) } },
        element("span", { className: "bar-track" }, fill),
        element("span", { className: "bar-digit", text: String(digit) }),
        value,
      );
      this.#bars.push({ item, fill, value });
      this.#parts.bars.append(item);
    }
  }

  /**
   * A drawing was sent; its answer is on the way.
   * @param {Blob} drawingBlob
   */
  showPending(drawingBlob) {
    this.#setDrawing(drawingBlob);
    this.#parts.input.removeAttribute("src");
    this.#parts.input.classList.add("missing");
    this.#parts.digit.textContent = "…";
    this.#parts.confidence.textContent = "reading";
    this.#parts.model.textContent = "–";
    this.#parts.latency.textContent = "–";
    this.showTrace({});
    this.#setBars(null);
    this.#status("");
    this.#state("pending");
  }

  /**
   * The answer came: show it, in view. `roundTripMs` is what the browser measured.
   * @param {LivePrediction} prediction
   * @param {{roundTripMs?: number | null}} [timing]
   */
  showPrediction(prediction, { roundTripMs = null } = {}) {
    const top = prediction.predicted_digit;
    loadEventually(this.#parts.input, inputUrl(prediction.digit_id));
    this.#root.dataset.digitId = prediction.digit_id;
    this.#parts.digit.textContent = String(top);
    this.#parts.confidence.textContent = `${percent(prediction.confidence)} sure`;
    this.#parts.model.textContent = describeModel(prediction.model);
    this.#parts.model.dataset.version = String(prediction.model.version);
    this.#parts.latency.textContent = describeLatency(prediction, roundTripMs);
    this.#setBars(prediction.probabilities, top);
    this.#status("");
    this.#state("predicted");
    this.#keepInView();
  }

  /**
   * The trace of the upload (when tracing is on): a link where a trace UI runs, else its id.
   * @param {{trace_id?: string | null, trace_url?: string | null}} answer
   */
  showTrace({ trace_id: id = null, trace_url: url = null }) {
    const cell = this.#parts.trace;
    this.#parts.traceRow.hidden = !id;
    if (!id) {
      cell.replaceChildren();
      return;
    }
    const shown = element("code", { text: id });
    cell.replaceChildren(
      url
        ? element("a", { href: url, target: "_blank", rel: "noopener", title: "Open the trace" }, shown)
        : shown,
    );
  }

  /**
   * Still waiting (no model served yet, or the stream is down): say so, keep waiting.
   * @param {string} message
   */
  showWaiting(message) {
    this.#status(message);
  }

  /** @param {string} message what went wrong, for people */
  showError(message) {
    this.#parts.digit.textContent = "!";
    this.#parts.confidence.textContent = "";
    this.#status(message);
    this.#state("error");
  }

  /** @param {Blob} blob */
  #setDrawing(blob) {
    if (this.#drawingUrl) URL.revokeObjectURL(this.#drawingUrl);
    this.#drawingUrl = URL.createObjectURL(blob);
    this.#parts.drawing.src = this.#drawingUrl;
  }

  /**
   * @param {number[] | null | undefined} probabilities one per digit; none: empty bars
   * @param {number} [top] the digit whose bar is highlighted
   */
  #setBars(probabilities, top = -1) {
    this.#bars.forEach(({ item, fill, value }, digit) => {
      const p = probabilities ? probabilities[digit] : 0;
      fill.style.blockSize = `${Math.max(0, Math.min(1, p)) * 100}%`;
      value.textContent = probabilities ? percent(p, 0) : "";
      item.classList.toggle("top", digit === top);
      item.setAttribute("aria-label", probabilities ? `${digit}: ${percent(p)}` : `${digit}`);
    });
  }

  /** @param {string} message */
  #status(message) {
    this.#parts.status.textContent = message;
    this.#parts.status.hidden = !message;
  }

  /** @param {"pending" | "predicted" | "error"} state */
  #state(state) {
    this.#root.dataset.state = state;
    this.#parts.idle.hidden = true;
    this.#parts.body.hidden = false;
  }

  /**
   * On a phone the panel sits under the pad, its answer below the fold (on a 390×844 screen
   * the digit read was at y = 873): bring the whole panel up. "nearest" leaves a panel that is
   * already on screen (beside the pad, on wider screens) where it is.
   */
  #keepInView() {
    const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
    this.#root.scrollIntoView({ block: "nearest", behavior: still ? "auto" : "smooth" });
  }
}

/** @param {LivePrediction["model"]} model */
function describeModel(model) {
  const name = model.name ? ` · ${model.name}` : "";
  return `v${model.version}${name}`;
}

/**
 * @param {LivePrediction} prediction
 * @param {number | null} roundTripMs
 */
function describeLatency(prediction, roundTripMs) {
  const parts = [];
  if (prediction.latency_ms != null) parts.push(`${milliseconds(prediction.latency_ms)} upload → answer`);
  const inference = prediction.timings?.inference_ms;
  if (inference != null) parts.push(`${milliseconds(inference)} inference`);
  if (roundTripMs != null) parts.push(`${milliseconds(roundTripMs)} round trip`);
  return parts.join(" · ") || "–";
}
