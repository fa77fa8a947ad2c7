// @ts-check
// The running rollout in the models panel: which version is tried beside the champion, how
// the drawings are split, the live figures of each version and the verdict in plain words.

import { getRollouts } from "./api.js";
import { element, messageOf, milliseconds, percent } from "./format.js";

/** @import { Rollout, RolloutVersion } from "./api.js" */

// The figures move with every drawing read: re-read them this often while a rollout runs.
const POLL_MS = 3_000;

export class RolloutPanel {
  #slot;
  /** @type {number | null} */
  #timer = null;
  /** @type {Promise<void> | null} */
  #loading = null;

  /** @param {HTMLElement} slot */
  constructor(slot) {
    this.#slot = slot;
  }

  /** Re-read the rollouts now (a step or a promotion arrived); coalesces calls in flight. */
  refresh() {
    this.#loading ??= this.#load().finally(() => {
      this.#loading = null;
    });
    return this.#loading;
  }

  async #load() {
    let running = false;
    try {
      const [newest] = await getRollouts(1);
      running = newest?.state === "running";
      this.#render(running ? newest : null);
    } catch (error) {
      // Shown in place of the figures, and tried again as long as a rollout was shown.
      running = !this.#slot.hidden;
      if (running) {
        this.#slot.replaceChildren(
          element("p", {
            className: "message",
            text: `The rollout could not be loaded: ${messageOf(error)}`,
          }),
        );
      }
    }
    this.#poll(running);
  }

  /** @param {boolean} running */
  #poll(running) {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = running ? setTimeout(() => this.refresh(), POLL_MS) : null;
  }

  /** @param {Rollout | null} rollout */
  #render(rollout) {
    this.#slot.hidden = rollout === null;
    if (rollout === null) {
      this.#slot.replaceChildren();
      return;
    }
    this.#slot.dataset.mode = rollout.mode;
    this.#slot.dataset.rolloutId = rollout.rollout_id;
    const split =
      rollout.mode === "shadow"
        ? `v${rollout.candidate_version} reads every drawing beside champion v${rollout.champion_version}; you see the champion's answers`
        : `v${rollout.candidate_version} answers ${rollout.percent} % of drawings, champion v${rollout.champion_version} the rest`;
    this.#slot.replaceChildren(
      element(
        "p",
        { className: "rollout-head" },
        element("span", { className: `badge ${rollout.mode}`, text: rollout.mode }),
        element("span", { dataset: { part: "split" }, text: split }),
      ),
      element(
        "div",
        { className: "rollout-scroll" },
        element(
          "table",
          { className: "rollout-figures" },
          element(
            "thead",
            {},
            element(
              "tr",
              {},
              ...["Version", "Read", "Failed", "Labels", "Accuracy", "p50 / p99"].map((h) =>
                element("th", { scope: "col", text: h }),
              ),
            ),
          ),
          element("tbody", {}, ...rollout.versions.map(versionRow)),
        ),
      ),
      ...(rollout.compared
        ? [
            element("p", {
              dataset: { part: "agreement" },
              text: `They read ${percent(rollout.agreement)} of ${rollout.compared} drawings alike.`,
            }),
          ]
        : []),
      element("p", {
        className: "verdict",
        dataset: { part: "verdict" },
        text: capitalised(rollout.verdict),
      }),
    );
  }
}

/** @param {RolloutVersion} v */
function versionRow(v) {
  const accuracy =
    v.accuracy == null || v.accuracy_low == null || v.accuracy_high == null
      ? "–"
      : `${percent(v.accuracy)} ± ${((v.accuracy_high - v.accuracy_low) * 50).toFixed(1)}`;
  return element(
    "tr",
    { dataset: { version: String(v.version), role: v.role } },
    element("th", { scope: "row" }, `v${v.version}`, element("span", { className: "role", text: v.role })),
    element("td", { text: String(v.readings) }),
    element("td", {
      dataset: { part: "failed" },
      text: v.failed ? `${v.failed} (${percent(v.failure_rate)})` : "0",
    }),
    element("td", { text: String(v.labeled) }),
    element("td", { text: accuracy }),
    element("td", {
      text: `${milliseconds(v.latency_p50_ms)} / ${milliseconds(v.latency_p99_ms)}`,
    }),
  );
}

/** @param {string} text */
function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
