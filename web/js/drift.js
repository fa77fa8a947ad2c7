// @ts-check
// The drift chart in the models panel: how far the last drawings, and the champion's readings
// of them, are from what the champion saw in training (PSI per signal, threshold marked).

import { getDrift } from "./api.js";
import { driftBars } from "./drift-model.js";
import { element, messageOf } from "./format.js";

// A window moves with every drawing; the history measures it in a few milliseconds.
const POLL_MS = 15_000;

export class DriftPanel {
  #slot;
  /** @type {number | null} */
  #timer = null;

  /** @param {HTMLElement} slot */
  constructor(slot) {
    this.#slot = slot;
  }

  /** Read the drift now, then every POLL_MS. */
  async refresh() {
    if (this.#timer !== null) clearTimeout(this.#timer);
    try {
      this.#render(await getDrift());
    } catch (error) {
      this.#slot.replaceChildren(
        element("p", { className: "muted", text: `Drift is not available: ${messageOf(error)}` }),
      );
    }
    this.#timer = setTimeout(() => this.refresh(), POLL_MS);
  }

  /** @param {import("./drift-model.js").DriftReport} report */
  #render(report) {
    if (report.note) {
      this.#slot.replaceChildren(element("p", { className: "muted", text: report.note }));
      return;
    }
    const chart = driftBars(report);
    const drifted = chart.bars.filter((bar) => bar.drifted).map((bar) => bar.signal);
    const list = element("ol", {
      className: "drift-bars",
      "aria-label": `Drift score per signal; the dashed line marks the threshold ${chart.threshold}`,
    });
    // Set through the CSSOM, which a strict style-src allows (inline style attributes it does not).
    list.style.setProperty("--threshold-at", `${(chart.thresholdAt * 100).toFixed(1)}%`);
    for (const bar of chart.bars) {
      const fill = element("span", { className: `drift-fill ${bar.kind}` });
      fill.style.width = `${(bar.width * 100).toFixed(1)}%`;
      list.append(
        element(
          "li",
          { className: bar.drifted ? "drifted" : undefined, dataset: { signal: bar.signal } },
          element("span", { className: "drift-name", text: bar.signal }),
          element("span", { className: "drift-track" }, fill),
          element("span", { className: "drift-score", text: bar.score }),
        ),
      );
    }
    this.#slot.replaceChildren(
      element("p", {
        className: "drift-head",
        text: `${chart.window} drawings against v${report.champion_version}'s training data: ${
          drifted.length ? `drift in ${drifted.join(", ")}` : "no drift"
        }`,
      }),
      list,
    );
  }
}
