// @ts-check
// The drawing pad: a 280×280 logical square that scales to its box and stays sharp on HiDPI
// screens. Strokes are kept as points in logical units, so the pad can be redrawn at any
// resolution, undone stroke by stroke and exported at exactly 280×280 whatever its size on
// screen.

export const PAD_SIZE = 280;
// A marker's width on the 280 px square. The server crops to the ink and fits it into 20×20,
// so a digit drawn across most of the pad ends up with strokes 1.5–2.5 px wide, like MNIST's.
const LINE_WIDTH = 20;
const INK = "#111827";

/** @typedef {[number, number]} Point logical units, 0–280 each way */

export class DrawingPad extends EventTarget {
  #canvas;
  #context;
  /** @type {Point[][]} */
  #strokes = [];
  /** @type {Point[] | null} */
  #active = null;
  /** @type {number | null} */
  #pointerId = null;
  #scale = 1;

  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    super();
    this.#canvas = canvas;
    this.#context = context2d(canvas);
    this.#watchSize();
    canvas.addEventListener("pointerdown", (event) => this.#start(event));
    canvas.addEventListener("pointermove", (event) => this.#extend(event));
    for (const type of /** @type {const} */ (["pointerup", "pointercancel", "lostpointercapture"])) {
      canvas.addEventListener(type, (event) => this.#finish(event));
    }
  }

  get isEmpty() {
    return this.#strokes.length === 0 && this.#active === null;
  }

  get strokeCount() {
    return this.#strokes.length;
  }

  undo() {
    if (this.#active || this.#strokes.length === 0) return;
    this.#strokes.pop();
    this.#redraw();
    this.#changed();
  }

  clear() {
    if (this.#active || this.#strokes.length === 0) return;
    this.#strokes = [];
    this.#redraw();
    this.#changed();
  }

  /** The drawing as a 280×280 PNG: transparent background, dark strokes. */
  toBlob() {
    const canvas = document.createElement("canvas");
    canvas.width = PAD_SIZE;
    canvas.height = PAD_SIZE;
    paint(context2d(canvas), this.#strokes);
    return new Promise((resolve, reject) => {
      canvas.toBlob(
        (blob) => (blob ? resolve(blob) : reject(new Error("The drawing could not be encoded."))),
        "image/png",
      );
    });
  }

  #watchSize() {
    new ResizeObserver(() => this.#resize()).observe(this.#canvas);
    this.#watchPixelRatio();
  }

  /** Moving the window to another screen, or zooming, changes devicePixelRatio: resize. */
  #watchPixelRatio() {
    matchMedia(`(resolution: ${devicePixelRatio}dppx)`).addEventListener(
      "change",
      () => {
        this.#resize();
        this.#watchPixelRatio();
      },
      { once: true },
    );
  }

  /** One backing pixel per device pixel: sharp strokes on HiDPI screens. */
  #resize() {
    const width = Math.round(this.#canvas.getBoundingClientRect().width * devicePixelRatio);
    if (width === 0 || width === this.#canvas.width) return;
    this.#canvas.width = width;
    this.#canvas.height = width;
    this.#scale = width / PAD_SIZE;
    this.#redraw();
  }

  #redraw() {
    const context = this.#context;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, this.#canvas.width, this.#canvas.height);
    context.setTransform(this.#scale, 0, 0, this.#scale, 0, 0);
    paint(context, this.#active ? [...this.#strokes, this.#active] : this.#strokes);
  }

  /**
   * The pointer's position in logical units (0–280), whatever the canvas's size on screen.
   * @param {PointerEvent} event
   * @returns {Point}
   */
  #point(event) {
    const box = this.#canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * PAD_SIZE;
    const y = ((event.clientY - box.top) / box.height) * PAD_SIZE;
    return [clamp(x), clamp(y)];
  }

  /** @param {PointerEvent} event */
  #start(event) {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (this.#active) return; // one stroke at a time: a second finger does not draw
    event.preventDefault();
    this.#canvas.focus({ preventScroll: true });
    // Capture, so a stroke that leaves the pad keeps going and still ends cleanly.
    this.#canvas.setPointerCapture(event.pointerId);
    this.#pointerId = event.pointerId;
    this.#active = [this.#point(event)];
    this.#redraw();
    this.#changed();
  }

  /** @param {PointerEvent} event */
  #extend(event) {
    if (!this.#active || event.pointerId !== this.#pointerId) return;
    // Coalesced events carry the points a fast stroke passed between two animation frames.
    const events = event.getCoalescedEvents?.() ?? [];
    for (const each of events.length ? events : [event]) {
      const from = this.#active[this.#active.length - 1];
      const to = this.#point(each);
      this.#active.push(to);
      this.#segment(from, to);
    }
  }

  /** @param {PointerEvent} event */
  #finish(event) {
    if (!this.#active || event.pointerId !== this.#pointerId) return;
    this.#strokes.push(this.#active);
    this.#active = null;
    this.#pointerId = null;
    this.#changed();
  }

  /**
   * @param {Point} from
   * @param {Point} to
   */
  #segment(from, to) {
    const context = this.#context;
    style(context);
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}

/**
 * The 2D context of `canvas` (a canvas has one unless memory ran out).
 * @param {HTMLCanvasElement} canvas
 */
function context2d(canvas) {
  const context = canvas.getContext("2d");
  if (!context) throw new Error("This browser cannot draw on a canvas.");
  return context;
}

/** @param {number} value */
function clamp(value) {
  return Math.min(PAD_SIZE, Math.max(0, value));
}

/** @param {CanvasRenderingContext2D} context */
function style(context) {
  context.lineCap = "round";
  context.lineJoin = "round";
  context.lineWidth = LINE_WIDTH;
  context.strokeStyle = INK;
  context.fillStyle = INK;
}

/**
 * Draw strokes in logical units; a stroke of one point (a tap) is a dot.
 * @param {CanvasRenderingContext2D} context
 * @param {Point[][]} strokes
 */
function paint(context, strokes) {
  style(context);
  for (const stroke of strokes) {
    context.beginPath();
    if (stroke.length === 1) {
      context.arc(stroke[0][0], stroke[0][1], LINE_WIDTH / 2, 0, Math.PI * 2);
      context.fill();
      continue;
    }
    context.moveTo(...stroke[0]);
    for (const point of stroke.slice(1)) context.lineTo(...point);
    context.stroke();
  }
}
