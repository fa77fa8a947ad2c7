// The history: every drawing, newest first, with one column per model version (the teaching
// app's table, live). Pages load as the table scrolls into view; live predictions prepend
// rows; while a rescore runs, the rows on screen are re-read (throttled) so the new
// version's column fills in without a reload. Each row takes the true digit as a label.

import { getDrawings, imageUrl, labelDrawing } from "./api.js";
import { element, loadEventually, percent, when } from "./format.js";

const PAGE_SIZE = 20;
const NARROW_COLUMNS = 3;
const MAX_PAGE = 100; // the API's limit
const REFRESH_MS = 700;
const QUIET_MS = 3_000;
// After a label is sent, the history may still show the old one for a moment (it arrives
// through Kafka); the local choice wins for this long.
const LABEL_SETTLE_MS = 15_000;

export class HistoryTable extends EventTarget {
  #table;
  #body;
  #status;
  #retry;
  #sentinel;
  /** @type {Map<string, object>} digit id → drawing, with predictions as a Map by version */
  #drawings = new Map();
  /** @type {Map<string, HTMLTableRowElement>} */
  #rows = new Map();
  /** digit ids, newest first (UUIDv7 strings sort by submission time) */
  #order = [];
  #versions = new Set();
  #champion = null;
  /** versions whose rescore is running: their empty cells show as pending */
  #rescoring = new Set();
  #cursor = undefined; // undefined: first page not loaded; null: no more pages
  #loading = false;
  #failed = false;
  #visible = new Set();
  #refresh = { timer: null, running: false, again: false, all: false };
  #quietTimer = null;
  #jobDone = new Map(); // job id → the last `done` seen
  #rowObserver;
  #pageObserver;
  #focusedRow = null;
  #narrow = matchMedia("(max-width: 640px)");
  #columnsNote;

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
    this.#body.addEventListener("focusin", (event) => this.#focusRow(event.target.closest("tr")));
  }

  start() {
    this.#renderHead();
    this.#pageObserver.observe(this.#sentinel);
  }

  /** Load the next page (the first one on the first call). */
  async loadMore() {
    if (this.#loading || this.#cursor === null) return;
    this.#loading = true;
    this.#setStatus(this.#cursor === undefined ? "Loading…" : "Loading more…");
    try {
      const page = await getDrawings({ limit: PAGE_SIZE, before: this.#cursor });
      this.#failed = false;
      this.#cursor = page.next_cursor;
      this.#mergeAll(page.items);
    } catch (error) {
      this.#failed = true;
      this.#setStatus(`The history could not be loaded: ${error.message}`, { retry: true });
      return;
    } finally {
      this.#loading = false;
    }
    this.#setStatus(this.#endText());
    // The observer only fires on changes: look again in case the sentinel is still in view.
    this.#pageObserver.unobserve(this.#sentinel);
    this.#pageObserver.observe(this.#sentinel);
  }

  /** After the stream was down: re-read everything loaded, and what arrived meanwhile. */
  resync() {
    if (this.#failed || this.#cursor === undefined) this.loadMore();
    else this.#scheduleRefresh(0, { all: true });
  }

  setChampion(version) {
    if (version == null || version === this.#champion) return;
    this.#champion = version;
    this.#addVersions([version]);
    this.#renderAll();
  }

  addVersions(versions) {
    if (this.#addVersions(versions)) this.#renderAll();
  }

  /** A `rescore` progress event: re-read the rows on screen so new answers appear. */
  jobProgressed(job) {
    const version = job.model_version;
    const newColumn = this.#addVersions([version]);
    const wasRunning = this.#rescoring.has(version);
    const running = !job.finished && !job.superseded;
    if (running) this.#rescoring.add(version);
    else this.#rescoring.delete(version);
    if (newColumn || wasRunning !== running) this.#renderAll();
    // While it runs, the rows on screen follow it; when it ends, every loaded row catches up.
    this.#scheduleRefresh(running ? REFRESH_MS : 0, { all: !running });
    // A job can also stop short of finishing (a drawing it cannot read): once its count stops
    // moving, every loaded row catches up all the same.
    const moved = this.#jobDone.get(job.job_id) !== job.done;
    this.#jobDone.set(job.job_id, job.done);
    if (!running) clearTimeout(this.#quietTimer);
    else if (moved) {
      clearTimeout(this.#quietTimer);
      this.#quietTimer = setTimeout(() => this.#scheduleRefresh(0, { all: true }), QUIET_MS);
    }
  }

  /** A promotion: the new champion's column appears at once, its cells pending. */
  promoted(version) {
    this.#rescoring.add(version);
    this.setChampion(version);
    this.#renderAll();
  }

  /** A live prediction (SSE or the upload's answer): prepend the drawing or fill its cell. */
  livePrediction(prediction) {
    this.#merge({
      digit_id: prediction.digit_id,
      submitted_at: prediction.submitted_at,
      predictions: [
        {
          model_version: prediction.model.version,
          predicted_digit: prediction.predicted_digit,
          confidence: prediction.confidence,
          kind: prediction.kind,
        },
      ],
    });
    this.#setStatus(this.#endText());
  }

  // ------------------------------------------------------------------ data

  #mergeAll(drawings) {
    const versions = drawings.flatMap((d) => d.predictions.map((p) => p.model_version));
    const newColumns = this.#addVersions(versions);
    for (const drawing of drawings) this.#merge(drawing, { render: !newColumns });
    if (newColumns) this.#renderAll();
  }

  #merge(incoming, { render = true } = {}) {
    const id = incoming.digit_id;
    const known = this.#drawings.get(id);
    const predictions = new Map(known?.predictions ?? []);
    for (const p of incoming.predictions) predictions.set(p.model_version, p);
    const drawing = {
      ...known,
      digit_id: id,
      submitted_at: known?.submitted_at ?? incoming.submitted_at,
      image_url: known?.image_url ?? incoming.image_url ?? imageUrl(id),
      predictions,
      // A live prediction says nothing about labels (undefined); the history does (null or 0-9).
      ...(incoming.label === undefined
        ? { label: known?.label ?? null, labelState: known?.labelState ?? null }
        : mergeLabel(known, incoming.label)),
    };
    this.#drawings.set(id, drawing);
    if (!this.#rows.has(id)) this.#insertRow(id);
    if (this.#addVersions([...predictions.keys()])) this.#renderAll();
    else if (render) this.#renderRow(id);
  }

  /** Remember versions; true when a column was added. */
  #addVersions(versions) {
    const before = this.#versions.size;
    for (const v of versions) if (Number.isInteger(v)) this.#versions.add(v);
    return this.#versions.size !== before;
  }

  /** Every version seen, oldest first. */
  #allVersions() {
    return [...this.#versions].sort((a, b) => a - b);
  }

  /** The version columns shown: a phone shows the newest few, and always the champion. */
  #columns() {
    const all = this.#allVersions();
    const shown = this.#narrow.matches ? all.slice(-NARROW_COLUMNS) : all;
    if (this.#champion != null && !shown.includes(this.#champion)) {
      shown.splice(0, 1, this.#champion);
      shown.sort((a, b) => a - b);
    }
    return shown;
  }

  // ------------------------------------------------------------------ rendering

  #renderAll() {
    this.#renderHead();
    for (const id of this.#order) this.#renderRow(id);
  }

  #renderHead() {
    const head = this.#table.tHead.rows[0];
    const columns = this.#columns();
    this.#columnsNote.hidden = columns.length === this.#versions.size;
    this.#columnsNote.textContent = `Showing v${columns.join(", v")}; the other versions fit a wider screen.`;
    const cells = columns.map((v) =>
      element(
        "th",
        {
          scope: "col",
          className: `version-col${v === this.#champion ? " champion" : ""}`,
          dataset: { version: String(v) },
        },
        `v${v}`,
        v === this.#champion ? element("span", { className: "badge champion", text: "champion" }) : null,
      ),
    );
    head.replaceChildren(
      element("th", { scope: "col", className: "thumb-col", text: "Drawing" }),
      ...cells,
      element("th", { scope: "col", className: "label-col", text: "True digit" }),
    );
  }

  #insertRow(id) {
    const row = element(
      "tr",
      { tabindex: "0", dataset: { digitId: id } },
      element("th", { scope: "row", className: "thumb-cell" }),
      element("td", { className: "label-cell" }, labelButtons()),
    );
    const drawing = this.#drawings.get(id);
    const image = element("img", {
      className: "thumb",
      width: "56",
      height: "56",
      alt: `Drawing submitted ${when(drawing.submitted_at)}`,
    });
    loadEventually(image, drawing.image_url);
    const submitted = when(drawing.submitted_at);
    row.firstChild.append(image, element("time", { datetime: drawing.submitted_at, text: submitted }));
    row.setAttribute("aria-label", `Drawing submitted ${submitted}`);

    const index = insertionIndex(this.#order, id);
    this.#order.splice(index, 0, id);
    const next = this.#rows.get(this.#order[index + 1]);
    this.#body.insertBefore(row, next ?? null);
    this.#rows.set(id, row);
    this.#rowObserver.observe(row);
  }

  #renderRow(id) {
    const row = this.#rows.get(id);
    const drawing = this.#drawings.get(id);
    if (!row || !drawing) return;
    const labelCell = row.querySelector(".label-cell");
    for (const cell of row.querySelectorAll("td.pred")) cell.remove();
    const shown = new Set(this.#columns());
    let previous = null; // the nearest older version that read this drawing, shown or not
    for (const version of this.#allVersions()) {
      const prediction = drawing.predictions.get(version);
      if (shown.has(version)) labelCell.before(this.#cell(version, prediction, previous, drawing.label));
      if (prediction) previous = prediction;
    }
    renderLabel(labelCell, drawing);
    row.dataset.label = drawing.label ?? "";
  }

  #cell(version, prediction, previous, label) {
    const cell = element("td", {
      className: "pred",
      dataset: { version: String(version) },
    });
    cell.classList.toggle("champion", version === this.#champion);
    if (!prediction) {
      const pending = this.#rescoring.has(version);
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
    if (previous && previous.predicted_digit !== digit) {
      cell.classList.add("flipped");
      cell.append(element("span", { className: "flip-mark", "aria-hidden": "true", text: "↺" }));
      notes.push(`changed from ${previous.predicted_digit} (v${previous.model_version})`);
    }
    if (label != null) {
      const right = label === digit;
      const mark = right ? { className: "right-mark", text: "✓" } : { className: "wrong-mark", text: "✗" };
      cell.classList.add(right ? "right" : "wrong");
      cell.append(element("span", { ...mark, "aria-hidden": "true" }));
      notes.push(right ? "matches your label" : `your label says ${label}`);
    }
    cell.title = notes.join(", ");
    cell.setAttribute("aria-label", notes.join(", "));
    return cell;
  }

  #setStatus(text, { retry = false } = {}) {
    this.#status.textContent = text;
    this.#retry.hidden = !retry;
  }

  #endText() {
    if (this.#cursor !== null) return this.#order.length ? "Scroll for older drawings." : "";
    const n = this.#order.length;
    return n === 0 ? "No drawings yet: draw one above." : `That's all ${n} drawing${n === 1 ? "" : "s"}.`;
  }

  // ------------------------------------------------------------------ live refresh

  #rowsSeen(entries) {
    for (const entry of entries) {
      const id = entry.target.dataset.digitId;
      if (entry.isIntersecting) this.#visible.add(id);
      else this.#visible.delete(id);
    }
  }

  /**
   * At most one re-read in flight and one queued behind it, whatever the event rate.
   * `all` re-reads every loaded row (after a job or a reconnection), else the rows on screen.
   */
  #scheduleRefresh(delayMs, { all = false } = {}) {
    const refresh = this.#refresh;
    refresh.all ||= all;
    if (refresh.running) {
      refresh.again = true;
      return;
    }
    if (refresh.timer !== null) return;
    refresh.timer = setTimeout(async () => {
      refresh.timer = null;
      refresh.running = true;
      const everything = refresh.all;
      refresh.all = false;
      try {
        await (everything ? this.#refreshLoaded() : this.#refreshVisible());
      } catch {
        // Shown by the connection banner; the next event or reconnection tries again.
      } finally {
        refresh.running = false;
      }
      if (refresh.again) {
        refresh.again = false;
        this.#scheduleRefresh(REFRESH_MS);
      }
    }, delayMs);
  }

  /** Re-read the rows on screen with one keyset query: the page that starts at the first one. */
  async #refreshVisible() {
    const indices = [...this.#visible].map((id) => this.#order.indexOf(id)).filter((i) => i >= 0);
    if (indices.length === 0) return;
    const first = Math.min(...indices);
    const last = Math.max(...indices);
    const before = first > 0 ? this.#order[first - 1] : null;
    const page = await getDrawings({ limit: Math.min(MAX_PAGE, last - first + 1), before });
    this.#mergeAll(page.items);
  }

  /** Re-read every loaded row, newest first, a full page at a time. */
  async #refreshLoaded() {
    const oldest = this.#order[this.#order.length - 1];
    let before = null;
    while (oldest) {
      const page = await getDrawings({ limit: MAX_PAGE, before });
      this.#mergeAll(page.items.filter((d) => d.digit_id >= oldest));
      const last = page.items[page.items.length - 1]?.digit_id;
      if (!page.next_cursor || !last || last <= oldest) return;
      before = page.next_cursor;
    }
  }

  // ------------------------------------------------------------------ labels

  /**
   * Rows are single tab stops; the focused row's ten label buttons join the tab order, so
   * Tab walks row → its buttons → next row instead of through ten buttons per row.
   */
  #focusRow(row) {
    if (!row || row === this.#focusedRow) return;
    for (const button of this.#focusedRow?.querySelectorAll("button") ?? []) button.tabIndex = -1;
    for (const button of row.querySelectorAll("button")) button.tabIndex = 0;
    this.#focusedRow = row;
  }

  #click(event) {
    const button = event.target.closest("button[data-label]");
    if (!button) return;
    const id = button.closest("tr").dataset.digitId;
    this.#label(id, Number(button.dataset.label));
  }

  #keydown(event) {
    const row = event.target.closest("tr[data-digit-id]");
    if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
    if (/^[0-9]$/.test(event.key)) {
      event.preventDefault();
      this.#label(row.dataset.digitId, Number(event.key));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
      if (next) {
        event.preventDefault();
        next.focus();
      }
    }
  }

  /** Optimistic: the choice shows at once and is undone, with the reason, if refused. */
  async #label(id, label) {
    const drawing = this.#drawings.get(id);
    if (!drawing) return;
    const previous = { label: drawing.label, labelState: drawing.labelState };
    Object.assign(drawing, { label, labelState: "saving", labelSentAt: Date.now(), labelError: null });
    this.#renderRow(id);
    try {
      await labelDrawing(id, label);
      if (drawing.label === label) drawing.labelState = "saved";
    } catch (error) {
      if (drawing.label !== label) return; // a later click superseded this one
      Object.assign(drawing, previous, { labelError: `Not saved: ${error.message}`, labelSentAt: null });
      drawing.labelState = "error";
    }
    this.#renderRow(id);
  }
}

/** The server's label, unless the user's own choice is younger than the server can know. */
function mergeLabel(known, serverLabel) {
  if (!known) return { label: serverLabel, labelState: serverLabel == null ? null : "saved" };
  const settling = known.labelSentAt && Date.now() - known.labelSentAt < LABEL_SETTLE_MS;
  if (known.labelState === "saving" || (settling && serverLabel !== known.label)) {
    return { label: known.label, labelState: known.labelState };
  }
  const labelState = serverLabel == null ? null : "saved";
  return { label: serverLabel, labelState, labelError: known.labelError };
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

function renderLabel(cell, drawing) {
  for (const button of cell.querySelectorAll("button[data-label]")) {
    const chosen = Number(button.dataset.label) === drawing.label;
    button.setAttribute("aria-pressed", String(chosen));
    button.classList.toggle("saving", chosen && drawing.labelState === "saving");
  }
  const note = cell.querySelector(".label-note");
  note.classList.toggle("error", drawing.labelState === "error");
  note.textContent =
    drawing.labelState === "error" ? drawing.labelError : drawing.labelState === "saving" ? "saving…" : "";
}

/** Where `id` goes in `order` (newest first) by binary search. */
function insertionIndex(order, id) {
  let low = 0;
  let high = order.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (order[middle] > id) low = middle + 1;
    else high = middle;
  }
  return low;
}
