// The drift chart's rows (web/js/drift-model.js): bars of the short window, threshold marked.

import assert from "node:assert/strict";
import { test } from "node:test";

import { driftBars } from "../../web/js/drift-model.js";

const signal = (window, name, score, kind = "input") => ({
  window,
  signal: name,
  kind,
  drawings: 500,
  score,
  threshold: 0.2,
  drifted: score !== null && score > 0.2,
});

test("the short window's signals become bars; the hour's are left to the CLI", () => {
  const chart = driftBars({
    champion_version: 3,
    reference: "MNIST",
    note: "",
    signals: [
      signal("last 500", "ink", 0.05),
      signal("last 500", "confidence", null, "output"),
      signal("last hour", "ink", 0.9),
    ],
  });
  assert.equal(chart.window, "last 500");
  assert.deepEqual(
    chart.bars.map((bar) => [bar.signal, bar.score, bar.width, bar.drifted]),
    [
      ["ink", "0.05", 0.125, false],
      ["confidence", "–", 0, false],
    ],
  );
  assert.equal(chart.thresholdAt, 0.5); // nothing past it: the threshold at half the scale
});

test("a drifted signal's bar reaches past the threshold line", () => {
  const chart = driftBars({
    champion_version: 3,
    reference: "MNIST",
    note: "",
    signals: [signal("last 500", "thickness", 0.8), signal("last 500", "slant", 0.1)],
  });
  const [thick, slant] = chart.bars;
  assert.equal(thick.width, 1);
  assert.ok(thick.drifted && thick.width > chart.thresholdAt);
  assert.ok(!slant.drifted && slant.width < chart.thresholdAt);
  assert.equal(chart.thresholdAt, 0.25);
});
