// A clock for the tests: time moves only when a test says so, and due timers run in order.

export class FakeClock {
  #now;
  /** @type {Map<number, {at: number, callback: () => void}>} */
  #timers = new Map();
  #nextId = 1;

  constructor(now = Date.parse("2025-01-01T12:00:00Z")) {
    this.#now = now;
  }

  now = () => this.#now;

  /** @type {(callback: () => void, ms: number) => number} */
  setTimeout = (callback, ms) => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + ms, callback });
    return id;
  };

  /** @type {(id: number | null) => void} */
  clearTimeout = (id) => {
    if (id !== null) this.#timers.delete(id);
  };

  /** Timers waiting to run. */
  get pending() {
    return this.#timers.size;
  }

  /** Move time on by `ms`, running each timer when its time comes (and what it awaits). */
  async advance(ms) {
    const end = this.#now + ms;
    for (let due = this.#nextDue(end); due; due = this.#nextDue(end)) {
      const [id, timer] = due;
      this.#timers.delete(id);
      this.#now = timer.at;
      timer.callback();
      await settle();
    }
    this.#now = end;
    await settle();
  }

  #nextDue(end) {
    const due = [...this.#timers].filter(([, t]) => t.at <= end);
    return due.sort(([a, ta], [b, tb]) => ta.at - tb.at || a - b)[0];
  }
}

/** Let pending promise callbacks run. */
export function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}
