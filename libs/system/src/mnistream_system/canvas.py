"""Drawings as the web client sends them, for the tests' and the benchmark's uploads.

The browser pad is a 280×280 canvas with dark strokes on a transparent background, sent as an
RGBA PNG whose alpha channel carries the ink.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

CANVAS = 280


def ink_on_transparent(ink: npt.NDArray[np.uint8], *, colour: tuple[int, int, int]) -> Image.Image:
    """An RGBA image of `colour` whose alpha is `ink` (bright = opaque stroke)."""
    height, width = ink.shape
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = ink
    return Image.fromarray(rgba)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The image's bytes in `fmt` (PNG, JPEG, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def render_canvas_png(pixels28: npt.NDArray[Any], size: int = CANVAS) -> bytes:
    """A 28×28 MNIST image as the browser canvas would send it: `size`×`size` RGBA PNG,
    dark strokes on a transparent background (alpha carries the ink).

    `pixels28` is ink bright on black, uint8 0-255 or float in [0, 1].
    """
    if pixels28.shape != (28, 28):
        raise ValueError(f"expected a 28×28 image, got shape {pixels28.shape}")
    values = np.asarray(pixels28, dtype=np.float32)
    if pixels28.dtype != np.uint8 and values.max(initial=0) <= 1.0:
        values = values * 255.0
    ink = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))
    ink = ink.resize((size, size), Image.Resampling.BILINEAR)
    return encode(ink_on_transparent(np.asarray(ink), colour=(0, 0, 0)), "PNG")
