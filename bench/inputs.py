"""Benchmark inputs: MNIST test digits rendered as the browser canvas sends them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mnistream_common.events import ClientInfo, DigitSubmitted, utc_now
from mnistream_common.preprocessing import PREPROCESSING_VERSION, prepare
from mnistream_system.canvas import CANVAS, render_canvas_png

from bench import config


@dataclass(frozen=True)
class Drawings:
    """Canvas-like PNGs (280×280 RGBA, dark strokes on transparent) and their true labels."""

    pngs: list[bytes]
    labels: list[int]
    folder: Path
    model_inputs: list[bytes]  # what the gateway makes of each, once

    @property
    def mean_bytes(self) -> float:
        """Average upload size."""
        return sum(map(len, self.pngs)) / len(self.pngs)

    def submitted(self, index: int) -> DigitSubmitted:
        """A `digits.submitted` event as the gateway would publish it, for drawing `index`."""
        return DigitSubmitted(
            digit_id=uuid.uuid4(),
            submitted_at=utc_now(),
            media_type="image/png",
            image=self.pngs[index % len(self.pngs)],
            width=CANVAS,
            height=CANVAS,
            model_input=self.model_inputs[index % len(self.pngs)],
            preprocessing_version=PREPROCESSING_VERSION,
            client=ClientInfo(source="bench"),
        )


def make_drawings(count: int) -> Drawings:
    """The first `count` MNIST test images as canvas PNGs, also written to a folder (for wrk)."""
    from trainer.data import load_split
    from trainer.settings import Settings as TrainerSettings

    test = load_split(TrainerSettings().mnist_root, train=False)
    images = test.images[:count].numpy().astype(np.float32) / 255.0
    pngs = [render_canvas_png(image) for image in images]
    folder = config.DATA / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    for index, png in enumerate(pngs, start=1):
        (folder / f"{index}.png").write_bytes(png)
    labels = [int(v) for v in test.labels[:count]]
    return Drawings(pngs, labels, folder, [prepare(png).model_input for png in pngs])
