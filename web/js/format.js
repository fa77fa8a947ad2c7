// Numbers and times as people read them.

export function percent(value, digits = 1) {
  if (value == null || Number.isNaN(value)) return "–";
  return `${(value * 100).toFixed(digits)} %`;
}

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

/** Today's times as a clock time, older ones with their date. */
export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  return today ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** An element with attributes and children, in one call. */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value == null || value === false) continue;
    if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

/**
 * Load an image that may not exist yet (history stores a drawing a few ms after the
 * prediction arrives): retry with a growing delay, then give up quietly.
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
    setTimeout(() => {
      img.src = `${url}?attempt=${attempt}`;
    }, firstDelayMs * 2 ** (attempt - 1));
  };
  img.onload = () => img.classList.remove("missing");
  img.src = url;
}
