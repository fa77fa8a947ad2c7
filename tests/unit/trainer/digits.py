"""Small MNIST-like samples for the trainer's unit tests, drawn in-process (no real MNIST)."""

from __future__ import annotations

import numpy as np
import torch
from mnistream_common.preprocessing import center_digit
from trainer.data import MnistTensors

from tests.helpers import FOUR, SEVEN, stroke_ink

ZERO = (tuple((0.5 + 0.3 * np.cos(t), 0.5 + 0.4 * np.sin(t)) for t in np.linspace(0, 6.3, 24)),)
ONE = (((0.5, 0.15), (0.5, 0.85)),)
FIGURES = {0: ZERO, 1: ONE, 4: FOUR, 7: SEVEN}


def mnist_like(count: int, seed: int = 0) -> MnistTensors:
    """`count` uint8 28×28 digits (0, 1, 4, 7) with jittered strokes, MNIST-style and centred."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(sorted(FIGURES), size=count)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        ink = stroke_ink(
            FIGURES[int(label)],
            size=112,
            width=int(rng.integers(8, 14)),
            offset=(float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1))),
            scale=float(rng.uniform(0.6, 1.0)),
        )
        images[index] = np.rint(center_digit(ink) * 255).astype(np.uint8)
    return MnistTensors(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
