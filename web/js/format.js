// @ts-check
// Numbers, times and errors as people read them, and elements built in one call.

/**
 * `0.981` as "98.1 %"; "–" when there is no number.
 * @param {number | null | undefined} value a fraction, 0–1
 * @param {number} [digits]
 */
export function percent(value, digits = 1) {
  if (value == null || Number.isNaN(value)) return "–";
  return `${(value * 100).toFixed(digits)} %`;
}

/** @param {number | null | undefined} value */
export function milliseconds(value) {
  if (value == null || Number.isNaN(value)) return "–";
  return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
});

/**
 * Today's times as a clock time, older ones with their date.
 * @param {string | null | undefined} iso
 */
export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/**
 * Attributes of `element()`: `className`, `dataset` and `text` set those properties; any other
 * name is an attribute (true: present, null or false: left out).
 * @typedef {{className?: string, dataset?: Record<string, string>, text?: string}
 *   & Record<string, string | number | boolean | null | undefined | Record<string, string>>} Attributes
 */

/**
 * An element with attributes and children, in one call.
 * @template {keyof HTMLElementTagNameMap} Tag
 * @param {Tag} tag
 * @param {Attributes} [attributes]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElementTagNameMap[Tag]}
 */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (name === "className") node.className = String(value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/**
 * Load an image that may not exist yet (history stores a drawing a few ms after the
 * prediction arrives): retry with a growing delay, then give up quietly.
 * @param {HTMLImageElement} img
 * @param {string} url
 * @param {{attempts?: number, firstDelayMs?: number}} [retry]
 */
export function loadEventually(img, url, { attempts = 8, firstDelayMs = 250 } = {}) {
  let attempt = 0;
  img.onerror = () => {
    attempt += 1;
    if (attempt >= attempts) {
      img.classList.add("missing");
      img.onerror = null;
      return;
    }
    // A fresh query string, so the browser does not reuse the earlier 404.
    const retryUrl = `${url}?attempt=${attempt}`;
    setTimeout(() => img.setAttribute("src", retryUrl), firstDelayMs * 2 ** (attempt - 1));
  };
  img.onload = () => img.classList.remove("missing");
  img.src = url;
}

/**
 * What went wrong, for people: an Error's message (ApiError's is written for them).
 * @param {unknown} error
 */
export function messageOf(error) {
  return error instanceof Error ? error.message : String(error);
}
