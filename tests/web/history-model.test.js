// The history table's model (web/js/history-model.js): what the table shows, without a page.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  catchUpPage,
  fromLivePrediction,
  HistoryModel,
  LABEL_SETTLE_MS,
  MAX_PAGE,
} from "../../web/js/history-model.js";
import { FakeClock } from "./clock.js";

/** A UUIDv7-like digit id: a bigger `n` is a later drawing, and sorts after. */
const id = (n) => `0190a000-0000-7000-8000-${String(n).padStart(12, "0")}`;

/** A drawing as GET /api/digits returns it, read by `readings` ({version: digit}). */
function stored(n, readings = {}, { label = null } = {}) {
  return {
    digit_id: id(n),
    submitted_at: new Date(Date.UTC(2025, 0, 1, 12, 0, n)).toISOString(),
    image_url: `/api/digits/${id(n)}/image`,
    label,
    predictions: Object.entries(readings).map(([version, digit]) => ({
      model_version: Number(version),
      predicted_digit: digit,
      confidence: 0.9,
      kind: "live",
    })),
  };
}

/** A live prediction, as the SSE stream sends it. */
function live(n, version, digit) {
  return {
    digit_id: id(n),
    submitted_at: new Date(Date.UTC(2025, 0, 1, 12, 0, n)).toISOString(),
    kind: "live",
    model: { name: "mnist-digits", version },
    predicted_digit: digit,
    confidence: 0.97,
  };
}

const job = (version, done, { finished = false, superseded = false } = {}) => ({
  job_id: `job-${version}`,
  kind: "rescore",
  model_version: version,
  done,
  total: 10,
  finished,
  superseded,
});

describe("merging pages and live predictions", () => {
  test("rows are newest first whatever order they arrive in, each inserted before the right row", () => {
    const model = new HistoryModel();
    model.merge([stored(5, { 1: 5 }), stored(1, { 1: 1 })]);
    const merged = model.merge([fromLivePrediction(live(3, 1, 3))]);
    model.merge([stored(9, { 1: 9 })]);

    assert.deepEqual(model.order, [id(9), id(5), id(3), id(1)]);
    assert.deepEqual(merged.added, [{ id: id(3), before: id(1) }]);
    assert.deepEqual(model.merge([stored(0, { 1: 0 })]).added, [{ id: id(0), before: null }]);
  });

  test("a drawing seen twice is one row whose readings add up by version", () => {
    const model = new HistoryModel();
    model.merge([fromLivePrediction(live(1, 1, 7))]);
    const merged = model.merge([stored(1, { 1: 7, 2: 1 })]);

    assert.deepEqual(model.order, [id(1)]);
    assert.deepEqual(merged.added, []);
    assert.deepEqual(merged.changed, [id(1)]);
    assert.deepEqual([...(model.drawing(id(1))?.predictions.keys() ?? [])], [1, 2]);
  });

  test("a live prediction keeps the label and image the history gave", () => {
    const model = new HistoryModel();
    model.merge([stored(1, { 1: 7 }, { label: 7 })]);
    model.merge([fromLivePrediction(live(1, 2, 1))]);

    const drawing = model.drawing(id(1));
    assert.equal(drawing?.label, 7);
    assert.equal(drawing?.labelState, "saved");
    assert.equal(drawing?.image_url, `/api/digits/${id(1)}/image`);
  });

  test("a new version is a new column; versions already seen are not", () => {
    const model = new HistoryModel();
    assert.equal(model.merge([stored(1, { 1: 1 })]).newColumns, true);
    assert.equal(model.merge([stored(2, { 1: 2 })]).newColumns, false);
    assert.equal(model.merge([fromLivePrediction(live(3, 2, 3))]).newColumns, true);
    assert.equal(model.addVersions([2, "3", null, 2.5]), false); // only whole numbers are versions
    assert.deepEqual(model.allVersions(), [1, 2]);
  });

  test("a page moves the cursor; the last page says how many there are", () => {
    const model = new HistoryModel();
    assert.equal(model.cursor, undefined);
    model.pageLoaded({ items: [stored(2), stored(1)], next_cursor: id(1) });
    assert.equal(model.cursor, id(1));
    assert.equal(model.endText(), "Scroll for older drawings.");
    model.pageLoaded({ items: [], next_cursor: null });
    assert.equal(model.endText(), "That's all 2 drawings.");
    assert.equal(new HistoryModel().endText(), "");
  });

  test("an empty history says how to start", () => {
    const model = new HistoryModel();
    model.pageLoaded({ items: [], next_cursor: null });
    assert.equal(model.endText(), "No drawings yet: draw one above.");
  });
});

describe("version columns", () => {
  const withVersions = (champion, ...versions) => {
    const model = new HistoryModel();
    model.addVersions(versions);
    model.setChampion(champion);
    return model;
  };

  test("a wide screen shows every version, oldest first", () => {
    assert.deepEqual(withVersions(2, 4, 1, 3, 2, 5).columns({ narrow: false }), [1, 2, 3, 4, 5]);
  });

  test("a phone shows the three newest versions", () => {
    assert.deepEqual(withVersions(5, 1, 2, 3, 4, 5).columns({ narrow: true }), [3, 4, 5]);
  });

  test("a phone always shows the champion, in place of the oldest of the three", () => {
    assert.deepEqual(withVersions(1, 1, 2, 3, 4, 5).columns({ narrow: true }), [1, 4, 5]);
  });

  test("a new champion's column appears at once, its empty cells pending", () => {
    const model = new HistoryModel();
    model.merge([stored(1, { 1: 1 })]);
    model.promoted(2);

    assert.equal(model.champion, 2);
    assert.deepEqual(model.columns({ narrow: false }), [1, 2]);
    const [, newest] = model.readings(id(1), [1, 2]);
    assert.equal(newest.champion, true);
    assert.equal(newest.pending, true);
  });

  test("a finished or superseded rescore's empty cells are no longer pending", () => {
    for (const ending of [{ finished: true }, { superseded: true }]) {
      const model = new HistoryModel();
      model.merge([stored(1, { 1: 1 })]);
      model.promoted(2);
      assert.deepEqual(model.jobProgressed(job(2, 10, ending)), { changed: true, running: false });
      assert.equal(model.readings(id(1), [1, 2])[1].pending, false);
    }
  });

  test("progress of a job already followed changes nothing on screen", () => {
    const model = new HistoryModel();
    assert.deepEqual(model.jobProgressed(job(2, 1)), { changed: true, running: true });
    assert.deepEqual(model.jobProgressed(job(2, 2)), { changed: false, running: true });
  });

  test("the same champion again changes nothing", () => {
    const model = new HistoryModel();
    assert.equal(model.setChampion(3), true);
    assert.equal(model.setChampion(3), false);
    assert.equal(model.setChampion(null), false);
  });
});

describe("a row's cells", () => {
  test("an answer that changed is marked against the nearest older version that read it", () => {
    const model = new HistoryModel();
    model.merge([stored(2, { 2: 5 }), stored(1, { 1: 7, 3: 1, 4: 1 })]); // v2 never read drawing 1

    const readings = model.readings(id(1), [2, 3, 4]);
    assert.deepEqual(
      readings.map((r) => [r.version, r.prediction?.predicted_digit, r.changedFrom?.model_version ?? null]),
      [
        [2, undefined, null],
        [3, 1, 1], // changed from v1's 7, though v1's column is not shown
        [4, 1, null],
      ],
    );
  });

  test("answers are checked against the label", () => {
    const model = new HistoryModel();
    model.merge([stored(1, { 1: 7, 2: 1 }, { label: 1 }), stored(2, { 1: 3 })]);

    assert.deepEqual(
      model.readings(id(1), [1, 2]).map((r) => r.matchesLabel),
      [false, true],
    );
    assert.deepEqual(
      model.readings(id(2), [1, 2]).map((r) => r.matchesLabel),
      [null, null],
    );
  });
});

describe("labels", () => {
  /** A model holding drawing 1, unlabelled, and its clock. */
  function labelling() {
    const clock = new FakeClock();
    const model = new HistoryModel(clock);
    model.merge([stored(1, { 1: 7 })]);
    return { clock, model, drawing: () => model.drawing(id(1)) };
  }

  test("a choice shows at once, as saving, and then as saved", () => {
    const { model, drawing } = labelling();
    assert.deepEqual(model.chooseLabel(id(1), 7), { label: null, labelState: null });
    assert.equal(drawing()?.label, 7);
    assert.equal(drawing()?.labelState, "saving");
    model.labelSaved(id(1), 7);
    assert.equal(drawing()?.labelState, "saved");
  });

  test("while it is saving, what the history says neither undoes it nor calls it saved", () => {
    const { model, drawing } = labelling();
    model.chooseLabel(id(1), 7);
    model.merge([stored(1, { 1: 7 }, { label: null })]);
    assert.equal(drawing()?.label, 7);
    assert.equal(drawing()?.labelState, "saving");
    model.merge([stored(1, { 1: 7 }, { label: 7 })]); // stored, but the POST has not answered yet
    assert.equal(drawing()?.labelState, "saving");
    model.labelSaved(id(1), 7); // the answer comes after the merges replaced the drawing
    assert.equal(drawing()?.labelState, "saved");
  });

  test("until the history can know it, the user's label wins; after that, the history's", async () => {
    const { clock, model, drawing } = labelling();
    model.chooseLabel(id(1), 7);
    model.labelSaved(id(1), 7);

    await clock.advance(LABEL_SETTLE_MS - 1);
    model.merge([stored(1, { 1: 7 }, { label: null })]);
    assert.equal(drawing()?.label, 7);

    await clock.advance(1);
    model.merge([stored(1, { 1: 7 }, { label: 4 })]); // someone else labelled it since
    assert.equal(drawing()?.label, 4);
    assert.equal(drawing()?.labelState, "saved");
  });

  test("a refused label is undone, with the server's reason", () => {
    const { model, drawing } = labelling();
    const previous = model.chooseLabel(id(1), 7);
    assert.ok(previous);
    assert.equal(model.labelRefused(id(1), 7, previous, "Not saved: unknown digit"), true);
    assert.equal(drawing()?.label, null);
    assert.equal(drawing()?.labelState, "error");
    assert.equal(drawing()?.labelError, "Not saved: unknown digit");
  });

  test("a refusal that comes after a newer choice leaves the newer one", () => {
    const { model, drawing } = labelling();
    const first = model.chooseLabel(id(1), 7);
    model.chooseLabel(id(1), 1);
    assert.ok(first);
    assert.equal(model.labelRefused(id(1), 7, first, "Not saved: timeout"), false);
    assert.equal(drawing()?.label, 1);
    assert.equal(drawing()?.labelState, "saving");
  });

  test("an unknown drawing cannot be labelled", () => {
    assert.equal(new HistoryModel().chooseLabel(id(1), 3), null);
  });
});

describe("re-reading rows", () => {
  const loaded = (count) => {
    const model = new HistoryModel();
    model.merge(Array.from({ length: count }, (_, n) => stored(n + 1)));
    return model; // order: id(count) … id(1)
  };

  test("the rows on screen are one page, starting after the row above them", () => {
    const model = loaded(10);
    assert.deepEqual(model.visibleQuery([id(6), id(8), id(7)]), { limit: 3, before: id(9) });
    assert.deepEqual(model.visibleQuery([id(10), id(9)]), { limit: 2, before: null });
  });

  test("no row on screen, no query; a tall screen asks for at most the API's page", () => {
    assert.equal(loaded(3).visibleQuery([]), null);
    assert.equal(loaded(3).visibleQuery(["not-a-row"]), null);
    assert.equal(loaded(MAX_PAGE + 20).visibleQuery(loaded(MAX_PAGE + 20).order)?.limit, MAX_PAGE);
  });

  test("catching up takes the loaded rows of each page and stops at the oldest loaded", () => {
    const page = { items: [stored(9), stored(8), stored(7)], next_cursor: id(7) };
    assert.deepEqual(catchUpPage(page, id(5)), { items: page.items, next: id(7) });

    const last = catchUpPage({ items: [stored(6), stored(5), stored(4)], next_cursor: id(4) }, id(5));
    assert.deepEqual(
      last.items.map((d) => d.digit_id),
      [id(6), id(5)],
    );
    assert.equal(last.next, null);
    assert.equal(catchUpPage({ items: [stored(9)], next_cursor: null }, id(5)).next, null);
  });
});
