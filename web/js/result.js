// The result panel: the drawing, the 28×28 image the model saw, the ten probabilities, and
// which model answered how fast.

import { inputUrl } from "./api.js";
import { element, loadEventually, milliseconds, percent } from "./format.js";

export class ResultPanel {
  #root;
  #parts;
  #bars = [];
  #drawingUrl = null;

  /** @param {HTMLElement} root */
  constructor(root) {
    this.#root = root;
    this.#parts = Object.fromEntries(
      [...root.querySelectorAll("[data-part]")].map((node) => [node.dataset.part, node]),
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

  /** A drawing was sent; its answer is on the way. */
  showPending(drawingBlob) {
    this.#setDrawing(drawingBlob);
    this.#parts.input.removeAttribute("src");
    this.#parts.input.classList.add("missing");
    this.#parts.digit.textContent = "…";
    this.#parts.confidence.textContent = "reading";
    this.#parts.model.textContent = "–";
    this.#parts.latency.textContent = "–";
    this.#setBars(null);
    this.#status("");
    this.#state("pending");
  }

  /** The answer came: show it. `roundTripMs` is what the browser measured. */
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
  }

  /** Still waiting (no model served yet, or the stream is down): say so, keep waiting. */
  showWaiting(message) {
    this.#status(message);
  }

  showError(message) {
    this.#parts.digit.textContent = "!";
    this.#parts.confidence.textContent = "";
    this.#status(message);
    this.#state("error");
  }

  #setDrawing(blob) {
    if (this.#drawingUrl) URL.revokeObjectURL(this.#drawingUrl);
    this.#drawingUrl = URL.createObjectURL(blob);
    this.#parts.drawing.src = this.#drawingUrl;
  }

  #setBars(probabilities, top = -1) {
    this.#bars.forEach(({ item, fill, value }, digit) => {
      const p = probabilities ? probabilities[digit] : 0;
      fill.style.blockSize = `${Math.max(0, Math.min(1, p)) * 100}%`;
      value.textContent = probabilities ? percent(p, 0) : "";
      item.classList.toggle("top", digit === top);
      item.setAttribute("aria-label", probabilities ? `${digit}: ${percent(p)}` : `${digit}`);
    });
  }

  #status(message) {
    this.#parts.status.textContent = message;
    this.#parts.status.hidden = !message;
  }

  #state(state) {
    this.#root.dataset.state = state;
    this.#parts.idle.hidden = true;
    this.#parts.body.hidden = false;
  }
}

function describeModel(model) {
  const name = model.name ? ` · ${model.name}` : "";
  return `v${model.version}${name}`;
}

function describeLatency(prediction, roundTripMs) {
  const parts = [];
  if (prediction.latency_ms != null) parts.push(`${milliseconds(prediction.latency_ms)} upload → answer`);
  const inference = prediction.timings?.inference_ms;
  if (inference != null) parts.push(`${milliseconds(inference)} inference`);
  if (roundTripMs != null) parts.push(`${milliseconds(roundTripMs)} round trip`);
  return parts.join(" · ") || "–";
}
