// @ts-check
// The history table on the page (the teaching app's table, live): it draws what HistoryModel
// holds (history-model.js), loads pages as the table scrolls into view, re-reads the rows on
// screen while a rescore runs so the new version's column fills in without a reload, and takes
// each row's true digit as a label.

import { getDrawings, imageUrl, labelDrawing } from "./api.js";
import { element, loadEventually, messageOf, percent, when } from "./format.js";
import {
  catchUpPage,
  fromLivePrediction,
  HistoryModel,
  MAX_PAGE,
  PAGE_SIZE,
  RefreshScheduler,
} from "./history-model.js";

/** @import { LivePrediction, RescoreJob } from "./api.js" */
/** @import { Drawing, Merged, Reading } from "./history-model.js" */

// The phone layout of styles.css, where rows wrap and fewer version columns fit.
const NARROW_SCREEN = "(max-width: 640px)";

/**
 * @typedef {object} HistoryParts
 * @property {HTMLTableElement} table
 * @property {HTMLElement} status the line under the table
 * @property {HTMLButtonElement} retry
 * @property {HTMLElement} sentinel comes into view when the next page should load
 * @property {HTMLElement} columnsNote says which versions a narrow screen leaves out
 */

export class HistoryTable extends EventTarget {
  #model = new HistoryModel();
  #refresh = new RefreshScheduler((all) => (all ? this.#refreshLoaded() : this.#refreshVisible()));
  #table;
  #body;
  #status;
  #retry;
  #sentinel;
  #columnsNote;
  /** @type {Map<string, HTMLTableRowElement>} */
  #rows = new Map();
  /** @type {Set<string>} digit ids of the rows on screen */
  #visible = new Set();
  #loading = false;
  #failed = false;
  #rowObserver;
  #pageObserver;
  /** @type {HTMLTableRowElement | null} */
  #focusedRow = null;
  #narrow = matchMedia(NARROW_SCREEN);

  /** @param {HistoryParts} parts */
  constructor({ table, status, retry, sentinel, columnsNote }) {
    super();
    this.#columnsNote = columnsNote;
    this.#narrow.addEventListener("change", () => this.#renderAll());
    this.#table = table;
    this.#body = table.tBodies[0];
    this.#status = status;
    this.#retry = retry;
    this.#sentinel = sentinel;
    this.#rowObserver = new IntersectionObserver((entries) => this.#rowsSeen(entries));
    this.#pageObserver = new IntersectionObserver(
      (entries) => entries.some((e) => e.isIntersecting) && this.loadMore(),
      { rootMargin: "0px 0px 600px 0px" },
    );
    retry.addEventListener("click", () => this.loadMore());
    this.#body.addEventListener("keydown", (event) => this.#keydown(event));
    this.#body.addEventListener("click", (event) => this.#click(event));
    this.#body.addEventListener("focusin", (event) => this.#focusRow(rowOf(event.target)));
  }

  start() {
    this.#renderHead();
    this.#pageObserver.observe(this.#sentinel);
  }

  /** Load the next page (the first one on the first call). */
  async loadMore() {
    const cursor = this.#model.cursor;
    if (this.#loading || cursor === null) return;
    this.#loading = true;
    this.#setStatus(cursor === undefined ? "Loading…" : "Loading more…");
    try {
      const page = await getDrawings({ limit: PAGE_SIZE, before: cursor });
      this.#failed = false;
      this.#show(this.#model.pageLoaded(page));
    } catch (error) {
      this.#failed = true;
      this.#setStatus(`The history could not be loaded: ${messageOf(error)}`, { retry: true });
      return;
    } finally {
      this.#loading = false;
    }
    this.#setStatus(this.#model.endText());
    // The observer only fires on changes: look again in case the sentinel is still in view.
    this.#pageObserver.unobserve(this.#sentinel);
    this.#pageObserver.observe(this.#sentinel);
  }

  /** After the stream was down: re-read everything loaded, and what arrived meanwhile. */
  resync() {
    if (this.#failed || this.#model.cursor === undefined) this.loadMore();
    else this.#refresh.schedule(0, { all: true });
  }

  /** @param {number | null | undefined} version */
  setChampion(version) {
    if (this.#model.setChampion(version)) this.#renderAll();
  }

  /** @param {unknown[]} versions */
  addVersions(versions) {
    if (this.#model.addVersions(versions)) this.#renderAll();
  }

  /**
   * A `rescore` progress event: re-read the rows on screen so new answers appear.
   * @param {RescoreJob} job
   */
  jobProgressed(job) {
    const { changed, running } = this.#model.jobProgressed(job);
    if (changed) this.#renderAll();
    this.#refresh.followJob(job, running);
  }

  /**
   * A promotion: the new champion's column appears at once, its cells pending.
   * @param {number} version
   */
  promoted(version) {
    this.#model.promoted(version);
    this.#renderAll();
  }

  /**
   * A live prediction (SSE or the upload's answer): prepend the drawing or fill its cell.
   * @param {LivePrediction} prediction
   */
  livePrediction(prediction) {
    this.#show(this.#model.merge([fromLivePrediction(prediction)]));
    this.#setStatus(this.#model.endText());
  }

  // ------------------------------------------------------------------ rendering

  /** @param {Merged} merged */
  #show({ added, changed, newColumns }) {
    for (const { id, before } of added) this.#insertRow(id, before);
    if (newColumns) this.#renderAll();
    else for (const id of changed) this.#renderRow(id);
  }

  #columns() {
    return this.#model.columns({ narrow: this.#narrow.matches });
  }

  #renderAll() {
    this.#renderHead();
    for (const id of this.#model.order) this.#renderRow(id);
  }

  #renderHead() {
    const head = /** @type {HTMLTableSectionElement} */ (this.#table.tHead).rows[0];
    const columns = this.#columns();
    const champion = this.#model.champion;
    this.#columnsNote.hidden = columns.length === this.#model.versionCount;
    this.#columnsNote.textContent = `Showing v${columns.join(", v")}; the other versions fit a wider screen.`;
    const cells = columns.map((v) =>
      element(
        "th",
        {
          scope: "col",
          className: `version-col${v === champion ? " champion" : ""}`,
          dataset: { version: String(v) },
        },
        `v${v}`,
        v === champion ? element("span", { className: "badge champion", text: "champion" }) : null,
      ),
    );
    head.replaceChildren(
      element("th", { scope: "col", className: "thumb-col", text: "Drawing" }),
      ...cells,
      element("th", { scope: "col", className: "label-col", text: "True digit" }),
    );
  }

  /**
   * A new row for `id`, before the row of `before` (null: last).
   * @param {string} id
   * @param {string | null} before
   */
  #insertRow(id, before) {
    const drawing = /** @type {Drawing} */ (this.#model.drawing(id));
    const submitted = when(drawing.submitted_at);
    const image = element("img", {
      className: "thumb",
      width: "56",
      height: "56",
      alt: `Drawing submitted ${submitted}`,
    });
    loadEventually(image, drawing.image_url ?? imageUrl(id));
    const row = element(
      "tr",
      { tabindex: "0", dataset: { digitId: id }, "aria-label": `Drawing submitted ${submitted}` },
      element(
        "th",
        { scope: "row", className: "thumb-cell" },
        image,
        element("time", { datetime: drawing.submitted_at, text: submitted }),
      ),
      element("td", { className: "label-cell" }, labelButtons()),
    );
    this.#body.insertBefore(row, before === null ? null : (this.#rows.get(before) ?? null));
    this.#rows.set(id, row);
    this.#rowObserver.observe(row);
  }

  /** @param {string} id */
  #renderRow(id) {
    const row = this.#rows.get(id);
    const drawing = this.#model.drawing(id);
    if (!row || !drawing) return;
    const labelCell = /** @type {HTMLElement} */ (row.querySelector(".label-cell"));
    for (const cell of row.querySelectorAll("td.pred")) cell.remove();
    for (const reading of this.#model.readings(id, this.#columns())) {
      labelCell.before(predictionCell(reading, drawing.label));
    }
    renderLabel(labelCell, drawing);
    row.dataset.label = String(drawing.label ?? "");
  }

  /**
   * @param {string} text
   * @param {{retry?: boolean}} [options]
   */
  #setStatus(text, { retry = false } = {}) {
    this.#status.textContent = text;
    this.#retry.hidden = !retry;
  }

  // ------------------------------------------------------------------ live refresh

  /** @param {IntersectionObserverEntry[]} entries */
  #rowsSeen(entries) {
    for (const entry of entries) {
      const id = /** @type {HTMLElement} */ (entry.target).dataset.digitId ?? "";
      if (entry.isIntersecting) this.#visible.add(id);
      else this.#visible.delete(id);
    }
  }

  /** Re-read the rows on screen with one keyset query. */
  async #refreshVisible() {
    const query = this.#model.visibleQuery(this.#visible);
    if (query) this.#show(this.#model.merge((await getDrawings(query)).items));
  }

  /** Re-read every loaded row, newest first, a full page at a time. */
  async #refreshLoaded() {
    const oldest = this.#model.oldest;
    /** @type {string | null} */
    let before = null;
    while (oldest) {
      const { items, next } = catchUpPage(await getDrawings({ limit: MAX_PAGE, before }), oldest);
      this.#show(this.#model.merge(items));
      if (next === null) return;
      before = next;
    }
  }

  // ------------------------------------------------------------------ labels

  /**
   * Rows are single tab stops; the focused row's ten label buttons join the tab order, so
   * Tab walks row → its buttons → next row instead of through ten buttons per row.
   * @param {HTMLTableRowElement | null} row
   */
  #focusRow(row) {
    if (!row || row === this.#focusedRow) return;
    for (const button of this.#focusedRow?.querySelectorAll("button") ?? []) button.tabIndex = -1;
    for (const button of row.querySelectorAll("button")) button.tabIndex = 0;
    this.#focusedRow = row;
  }

  /** @param {MouseEvent} event */
  #click(event) {
    const target = /** @type {Element} */ (event.target);
    const button = target.closest("button[data-label]");
    const id = rowOf(button)?.dataset.digitId;
    if (button instanceof HTMLElement && id) this.#label(id, Number(button.dataset.label));
  }

  /** @param {KeyboardEvent} event */
  #keydown(event) {
    const row = rowOf(event.target);
    const id = row?.dataset.digitId;
    if (!row || !id || event.altKey || event.ctrlKey || event.metaKey) return;
    if (/^[0-9]$/.test(event.key)) {
      event.preventDefault();
      this.#label(id, Number(event.key));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
      if (next instanceof HTMLElement) {
        event.preventDefault();
        next.focus();
      }
    }
  }

  /**
   * Optimistic: the choice shows at once and is undone, with the reason, if refused.
   * @param {string} id
   * @param {number} label
   */
  async #label(id, label) {
    const previous = this.#model.chooseLabel(id, label);
    if (!previous) return;
    this.#renderRow(id);
    try {
      await labelDrawing(id, label);
      this.#model.labelSaved(id, label);
    } catch (error) {
      const reason = `Not saved: ${messageOf(error)}`;
      if (!this.#model.labelRefused(id, label, previous, reason)) return; // a later click won
    }
    this.#renderRow(id);
  }
}

/**
 * The history row an event happened in, if any.
 * @param {EventTarget | null} target
 * @returns {HTMLTableRowElement | null}
 */
function rowOf(target) {
  return target instanceof Element ? target.closest("tr[data-digit-id]") : null;
}

/**
 * One version's cell: its answer and confidence, ↺ when it changed from the version before,
 * ✓/✗ against the label; or pending (…) while its rescore runs, or not read (–).
 * @param {Reading} reading
 * @param {number | null} label
 */
function predictionCell({ version, champion, prediction, pending, changedFrom, matchesLabel }, label) {
  const cell = element("td", { className: "pred", dataset: { version: String(version) } });
  cell.classList.toggle("champion", champion);
  if (!prediction) {
    cell.classList.add(pending ? "pending" : "none");
    cell.append(element("span", { "aria-hidden": "true", text: pending ? "…" : "–" }));
    cell.setAttribute("aria-label", `v${version}: ${pending ? "being read" : "not read"}`);
    return cell;
  }
  const digit = prediction.predicted_digit;
  const notes = [`v${version} read ${digit}`, `${percent(prediction.confidence, 0)} sure`];
  cell.dataset.digit = String(digit);
  cell.append(
    element("span", { className: "pd", text: String(digit) }),
    element("span", { className: "conf", text: percent(prediction.confidence, 0) }),
  );
  if (changedFrom) {
    cell.classList.add("flipped");
    cell.append(element("span", { className: "flip-mark", "aria-hidden": "true", text: "↺" }));
    notes.push(`changed from ${changedFrom.predicted_digit} (v${changedFrom.model_version})`);
  }
  if (matchesLabel !== null) {
    const mark = matchesLabel
      ? { className: "right-mark", text: "✓" }
      : { className: "wrong-mark", text: "✗" };
    cell.classList.add(matchesLabel ? "right" : "wrong");
    cell.append(element("span", { ...mark, "aria-hidden": "true" }));
    notes.push(matchesLabel ? "matches your label" : `your label says ${label}`);
  }
  cell.title = notes.join(", ");
  cell.setAttribute("aria-label", notes.join(", "));
  return cell;
}

function labelButtons() {
  const buttons = Array.from({ length: 10 }, (_, digit) =>
    element("button", {
      type: "button",
      className: "label-button",
      dataset: { label: String(digit) },
      "aria-label": `It is a ${digit}`,
      "aria-pressed": "false",
      tabindex: "-1",
      text: String(digit),
    }),
  );
  return element(
    "div",
    {},
    element("div", { className: "label-buttons", role: "group", "aria-label": "True digit" }, ...buttons),
    element("span", { className: "label-note", role: "status" }),
  );
}

/**
 * The label buttons and the note under them: the chosen digit pressed, saving or refused.
 * @param {HTMLElement} cell
 * @param {Drawing} drawing
 */
function renderLabel(cell, drawing) {
  for (const button of cell.querySelectorAll("button[data-label]")) {
    const chosen = Number(/** @type {HTMLElement} */ (button).dataset.label) === drawing.label;
    button.setAttribute("aria-pressed", String(chosen));
    button.classList.toggle("saving", chosen && drawing.labelState === "saving");
  }
  const note = /** @type {HTMLElement} */ (cell.querySelector(".label-note"));
  note.classList.toggle("error", drawing.labelState === "error");
  note.textContent =
    drawing.labelState === "error"
      ? (drawing.labelError ?? "")
      : drawing.labelState === "saving"
        ? "saving…"
        : "";
}
