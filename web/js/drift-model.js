// @ts-check
// The drift chart's rows, from `GET /api/drift`: one bar per signal of the short window, its
// length the score as a share of a scale that always shows the threshold, so a bar past the
// threshold line is a drifted signal. No DOM here: node --test checks it.

/**
 * @typedef {object} DriftSignal
 * @property {string} window
 * @property {string} signal
 * @property {"input" | "output"} kind
 * @property {number} drawings
 * @property {number | null} score
 * @property {number} threshold
 * @property {boolean} drifted
 */

/**
 * @typedef {object} DriftReport
 * @property {number | null} champion_version
 * @property {string | null} reference
 * @property {DriftSignal[]} signals
 * @property {string} note
 */

/**
 * @typedef {object} DriftBar
 * @property {string} signal
 * @property {"input" | "output"} kind
 * @property {string} score the score as text ("–" when too few drawings)
 * @property {number} width share of the scale, 0 to 1
 * @property {boolean} drifted
 */

/**
 * The short window's bars and where the threshold sits on their scale.
 * @param {DriftReport} report
 * @returns {{window: string, bars: DriftBar[], threshold: number, thresholdAt: number}}
 */
export function driftBars(report) {
  const window = report.signals[0]?.window ?? "";
  const rows = report.signals.filter((s) => s.window === window);
  const threshold = rows[0]?.threshold ?? 0.2;
  // The threshold sits at half the scale unless a score goes further: a drifted bar stays on it.
  const scale = Math.max(2 * threshold, ...rows.map((s) => s.score ?? 0));
  return {
    window,
    threshold,
    thresholdAt: threshold / scale,
    bars: rows.map((s) => ({
      signal: s.signal,
      kind: s.kind,
      score: s.score === null ? "–" : s.score.toFixed(2),
      width: s.score === null ? 0 : Math.min(1, s.score / scale),
      drifted: s.drifted,
    })),
  };
}
