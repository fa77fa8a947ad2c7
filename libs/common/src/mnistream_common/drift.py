"""Drift signals: what a drawing looks like and how a model reads it, against a reference.

Every signal is measured on what the model itself is given, the 28×28 input (784 bytes), and on
what it answers, the 10 probabilities. So the trainer measures its reference on its own inputs
with the same function that history-service runs on live drawings, and a descriptor can never
mean one thing in training and another in serving:

    ink        share of the 28×28 pixels that hold ink
    mean       the input's mean intensity
    aspect     width / height of the ink's bounding box (kept by the 20×20 fit)
    thickness  stroke width in pixels: 2 × ink area / ink perimeter
    slant      horizontal shear of the ink (second moments μ11 / μ02): a rotation moves it
    confidence the model's top probability
    entropy    the entropy of its 10 probabilities, in nats
    digit      the predicted class

A reference keeps, per signal, the cut points of ten equally filled bins (deciles of the
reference data; the ten classes for `digit`) and the share of the reference in each. Live data
is counted in the same bins and compared with the population stability index (PSI), the usual
drift score for binned distributions: 0.1 is a moderate shift, 0.2 a significant one.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from mnistream_common.events import DriftReference, SignalReference
from mnistream_common.preprocessing import SIDE

INPUT_SIGNALS: Final = ("ink", "mean", "aspect", "thickness", "slant")
OUTPUT_SIGNALS: Final = ("confidence", "entropy", "digit")
SIGNALS: Final = INPUT_SIGNALS + OUTPUT_SIGNALS
BINS: Final = 10
# A bin the reference or the window leaves empty still counts as this share: PSI stays finite.
FLOOR: Final = 1e-4
PSI_THRESHOLD: Final = 0.2
# A pixel is part of a stroke from half intensity: the soft edges that resampling leaves vary
# with how a drawing reached 28×28 (a 280 px canvas, or MNIST itself), the strokes do not.
STROKE_LEVEL: Final = 0.5

Values = npt.NDArray[np.float64]


def describe_inputs(inputs: npt.NDArray[np.uint8]) -> dict[str, Values]:
    """The five input descriptors of N model inputs (uint8, N×28×28 or N×784)."""
    pixels = inputs.reshape(-1, SIDE, SIDE).astype(np.float64) / 255.0
    ink = pixels > STROKE_LEVEL
    area = ink.sum(axis=(1, 2)).astype(np.float64)
    # Perimeter: ink pixels with a 4-neighbour that is not ink (the frame counts as none).
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    inner = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    perimeter = (ink & ~inner).sum(axis=(1, 2)).astype(np.float64)
    rows: npt.NDArray[np.bool_] = np.asarray(ink.any(axis=2))
    cols: npt.NDArray[np.bool_] = np.asarray(ink.any(axis=1))
    height = _extent(rows)
    width = _extent(cols)
    mass = pixels.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    ys, xs = np.indices((SIDE, SIDE), dtype=np.float64)
    cy = (pixels * ys).sum(axis=(1, 2)) / safe
    cx = (pixels * xs).sum(axis=(1, 2)) / safe
    dy = ys[None] - cy[:, None, None]
    dx = xs[None] - cx[:, None, None]
    mu11 = (pixels * dx * dy).sum(axis=(1, 2))
    mu02 = (pixels * dy * dy).sum(axis=(1, 2))
    return {
        "ink": area / (SIDE * SIDE),
        "mean": pixels.mean(axis=(1, 2)),
        "aspect": width / np.maximum(height, 1.0),
        "thickness": 2.0 * area / np.maximum(perimeter, 1.0),
        "slant": mu11 / np.where(mu02 > 0, mu02, 1.0),
    }


def _extent(occupied: npt.NDArray[np.bool_]) -> Values:
    """Per row of `occupied`, the span from its first to its last True (0 when none)."""
    any_ = occupied.any(axis=1)
    first = occupied.argmax(axis=1)
    last = occupied.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.where(any_, last - first + 1, 0).astype(np.float64)


def describe_outputs(probabilities: npt.NDArray[np.floating]) -> dict[str, Values]:
    """Confidence, entropy and predicted class of N readings (N×10 probabilities)."""
    p = np.clip(probabilities.astype(np.float64), 0.0, 1.0)
    logs = np.log(np.where(p > 0, p, 1.0))
    return {
        "confidence": p.max(axis=1),
        "entropy": -(p * logs).sum(axis=1),
        "digit": p.argmax(axis=1).astype(np.float64),
    }


def signal_reference(name: str, values: Values) -> SignalReference:
    """Ten bins equally filled by `values` (the ten classes for `digit`), with their shares."""
    if name == "digit":
        edges = [c + 0.5 for c in range(9)]
    else:
        cuts = np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1])
        edges = sorted({round(float(c), 6) for c in cuts})  # ties (many equal values) merge bins
    counts = bin_counts(edges, values)
    return SignalReference(edges=edges, shares=[float(c) / len(values) for c in counts])


def bin_counts(edges: list[float], values: Values) -> list[int]:
    """How many values fall in each bin: (-inf, e0], (e0, e1], …, (e_last, inf)."""
    positions = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return [int(c) for c in np.bincount(positions, minlength=len(edges) + 1)]


def reference_of(
    inputs: npt.NDArray[np.uint8], probabilities: npt.NDArray[np.floating], source: str
) -> DriftReference:
    """The reference of a model: its inputs' descriptors and its readings of them."""
    measured = describe_inputs(inputs) | describe_outputs(probabilities)
    return DriftReference(
        source=source,
        drawings=len(inputs),
        signals={name: signal_reference(name, measured[name]) for name in SIGNALS},
    )


def psi(reference: SignalReference, values: Values) -> float:
    """Population stability index of `values` against the reference's bins."""
    counts = np.asarray(bin_counts(reference.edges, values), dtype=np.float64)
    live = np.maximum(counts / max(len(values), 1), FLOOR)
    expected = np.maximum(np.asarray(reference.shares, dtype=np.float64), FLOOR)
    return float(((live - expected) * np.log(live / expected)).sum())


def scores(reference: DriftReference, measured: dict[str, Values]) -> dict[str, float]:
    """PSI of every signal the reference and the measurements both have."""
    return {
        name: psi(reference.signals[name], values)
        for name, values in measured.items()
        if name in reference.signals and len(values)
    }


def estimated_accuracy(confidences: Values) -> float | None:
    """Accuracy expected from the model's own confidence (confidence-based performance
    estimation): a calibrated model is right as often as it is confident on average."""
    return float(np.mean(confidences)) if len(confidences) else None
