"""The one preprocessing path from an uploaded drawing to the 28×28 MNIST-style input.

    bytes ─▶ decode (PNG/JPEG, any mode) ─▶ ink bright on black ─▶ crop to the ink
          ─▶ fit into 20×20 keeping the aspect ratio ─▶ centre of mass at the centre of 28×28

The result is float32 in [0, 1], ink = 1, which is exactly how MNIST digits look; it travels
(in `digits.submitted`, in the history) as 784 bytes, one uint8 per pixel like MNIST's own
files, made once per drawing by `prepare` and tagged with `PREPROCESSING_VERSION`. Every model
mnistream trains starts with its own normalisation layer (mean/std below), so the ONNX file
is self-contained and serving cannot drift from training: "normalise as the model was trained"
happens inside the model. The trainer runs its augmented samples through `center_digit`, the
same function uploads go through.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

import imagecodecs
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, UnidentifiedImageError

MNIST_MEAN: Final = 0.1307
MNIST_STD: Final = 0.3081
SIDE: Final = 28
MASS_CENTRE: Final = SIDE / 2
BOX: Final = 20
MAX_SIDE: Final = 2048
# Ink below this level is background noise (JPEG ringing, anti-aliasing halos).
INK_THRESHOLD: Final = 0.2
FORMATS: Final = {"PNG": "image/png", "JPEG": "image/jpeg"}
# Bump when anything below changes what a drawing becomes: stored inputs of an older version
# are re-derived from the original image (which stays the source of truth).
PREPROCESSING_VERSION: Final = 1
INPUT_BYTES: Final = SIDE * SIDE

FloatImage = npt.NDArray[np.float32]
InkImage = npt.NDArray[np.uint8]


class PreprocessError(ValueError):
    """The upload cannot become a model input; the message says why and what is allowed."""


class BlankImageError(PreprocessError):
    """The drawing has no ink."""


class ImageTooLargeError(PreprocessError):
    """The image is larger than the accepted dimensions."""


@dataclass(frozen=True)
class DecodedImage:
    """An upload whose real format and size are known."""

    media_type: str
    width: int
    height: int
    image: Image.Image


def decode(data: bytes, *, max_side: int = MAX_SIDE) -> DecodedImage:
    """Open PNG or JPEG bytes, checking the real format and the size before decoding pixels."""
    image = _open(data, max_side)
    width, height = image.size
    if _is_canvas_png(image, data) and (pixels := _libpng_rgba(data, width, height)) is not None:
        return DecodedImage("image/png", width, height, pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PreprocessError(f"the image data is corrupt or truncated ({exc})") from exc
    return DecodedImage(FORMATS[str(image.format)], width, height, image)


def _is_canvas_png(image: Image.Image, data: bytes) -> bool:
    """An 8-bit RGBA PNG, not interlaced, one image the size of its header, whose chunks are all
    there: what every browser canvas sends."""
    if image.format != "PNG" or image.mode != "RGBA" or image.info.get("interlace"):
        return False
    if not isinstance(image, ImageFile.ImageFile) or len(image.tile) != 1:
        return False
    tile = image.tile[0]
    rawmode = tile.args if isinstance(tile.args, str) else (tile.args or (None,))[0]
    # 16-bit samples are read as RGBA;16B; an APNG's one frame may be smaller than the header.
    return rawmode == "RGBA" and tile.extents == (0, 0, *image.size) and _chunks_complete(data)


def _chunks_complete(data: bytes) -> bool:
    """Whether the PNG's chunks, read by their lengths, reach IEND inside the bytes (libpng is
    handed no truncated file: cut at a chunk boundary, it would read past the end)."""
    offset = 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        offset += 12 + length
        if kind == b"IEND":
            return offset <= len(data)
    return False


def _libpng_rgba(data: bytes, width: int, height: int) -> Image.Image | None:
    """The pixels of a canvas PNG through libpng (imagecodecs): the same pixels as Pillow's
    decoder (PNG is lossless, checked pixel for pixel by the tests) in about 70 % of its CPU,
    with the GIL released once for the whole image, so the gateway's event loop runs beside a
    decode. None where libpng refuses the file: Pillow's decoder then decides, so what is
    accepted is exactly what Pillow accepts (it skips the IDAT CRCs libpng checks)."""
    try:
        pixels = imagecodecs.png_decode(data)
    except (imagecodecs.PngError, ValueError, RuntimeError):
        return None
    if pixels.shape != (height, width, 4) or pixels.dtype != np.uint8:
        return None
    return Image.frombuffer("RGBA", (width, height), pixels, "raw", "RGBA", 0, 1)


def peek(data: bytes, *, max_side: int = MAX_SIDE) -> tuple[str, int, int]:
    """(media type, width, height) from the header alone: a cheap check that bytes are a drawing."""
    image = _open(data, max_side)
    width, height = image.size
    return FORMATS[str(image.format)], width, height


def _open(data: bytes, max_side: int) -> Image.Image:
    if not data:
        raise PreprocessError("the image is empty (0 bytes); send a PNG or JPEG drawing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=tuple(FORMATS))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLargeError(
            f"the image has too many pixels ({exc}); the limit is {max_side} px per side"
        ) from None
    except UnidentifiedImageError:
        raise PreprocessError(
            "the bytes are not a PNG or JPEG image; only those are accepted"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PreprocessError(
            f"the image header cannot be read ({exc}); send a valid PNG or JPEG"
        ) from exc
    width, height = image.size
    if width > max_side or height > max_side:
        raise ImageTooLargeError(
            f"the image is {width}×{height}; the limit is {max_side} px per side"
        )
    if getattr(image, "n_frames", 1) > 1:
        raise PreprocessError("animated images are not accepted; send a single-frame PNG or JPEG")
    return image


def ink_of(image: Image.Image) -> InkImage:
    """Ink intensity, bright on black, whatever the mode and background (uint8 0-255)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        # Only pixels with some alpha can hold ink: work on their bounding box (a canvas
        # drawing covers a fraction of the pad), which gives the same digit, faster.
        box = rgba.getchannel("A").getbbox()
        if box is None:
            return np.zeros((1, 1), dtype=np.uint8)
        return _ink_from_alpha(rgba.crop(box))
    gray = _gray(image)
    # A light border means dark ink on a light background (paper, a white canvas); MNIST
    # itself and dark-theme canvases are the other way round.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return (255 - gray) if float(np.median(border)) >= 128 else gray


def _gray(image: Image.Image) -> InkImage:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        if image.mode == "F" and values.max(initial=0) <= 1.0:
            peak = 1.0
        scaled: InkImage = (np.clip(values / peak, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return scaled
    gray: InkImage = np.asarray(image.convert("L"))
    return gray


def _ink_from_alpha(rgba: Image.Image) -> InkImage:
    alpha = np.asarray(rgba.getchannel("A"))
    lum = np.asarray(rgba.convert("L"))
    opaque = alpha > 127
    if opaque.any() and float(lum[opaque].mean()) > 127:
        return alpha  # light strokes on a transparent background: the alpha is the ink
    # Dark strokes: composite on white, then invert (integer maths keeps this cheap).
    ink = (alpha.astype(np.uint16) * (255 - lum).astype(np.uint16) + 127) // 255
    return ink.astype(np.uint8)


def center_digit(ink: npt.NDArray[np.uint8] | FloatImage) -> FloatImage:
    """Crop to the ink, fit into 20×20 keeping the aspect ratio, centre by mass in 28×28.

    `ink` is bright on black, either uint8 (0-255) or float in [0, 1].
    """
    scale = 255.0 if ink.dtype == np.uint8 else 1.0
    mask = ink > INK_THRESHOLD * scale
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        raise BlankImageError("the drawing is blank: no ink was found; draw a digit first")
    cols = np.flatnonzero(mask.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    if scale != 1.0:
        crop /= np.float32(scale)
    return _place_by_mass(_fit(crop))


def has_ink(ink: InkImage) -> bool:
    """Whether a drawing has any ink at all (the blank check, without the centring work)."""
    return bool(ink.max(initial=0) > INK_THRESHOLD * 255)


def _fit(crop: FloatImage) -> FloatImage:
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: a big downscale first averages whole pixel blocks (cheap), then resamples;
    # half the time of a plain LANCZOS on a 280 px canvas, within 0.08 of it per pixel.
    resized = Image.fromarray(crop.astype(np.float32)).resize(
        size,
        Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR,
        reducing_gap=2.0 if scale < 1 else None,
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _place_by_mass(fitted: FloatImage) -> FloatImage:
    height, width = fitted.shape
    total = float(fitted.sum())
    ys, xs = np.indices(fitted.shape, dtype=np.float32)
    com_y = float((ys * fitted).sum()) / total if total > 0 else (height - 1) / 2
    com_x = float((xs * fitted).sum()) / total if total > 0 else (width - 1) / 2
    # MNIST's own digits have their centre of mass at (14, 14) in pixel indices (measured on
    # the training set), not at the geometric centre 13.5: match what the models learn from.
    top = int(np.clip(round(MASS_CENTRE - com_y), 0, SIDE - height))
    left = int(np.clip(round(MASS_CENTRE - com_x), 0, SIDE - width))
    out = np.zeros((SIDE, SIDE), dtype=np.float32)
    out[top : top + height, left : left + width] = fitted
    return out


@dataclass(frozen=True)
class Prepared:
    """An upload checked and turned into its model input, once."""

    media_type: str
    width: int
    height: int
    model_input: bytes  # INPUT_BYTES, uint8, row-major 28×28, ink bright on black


def prepare(data: bytes, *, max_side: int = MAX_SIDE) -> Prepared:
    """Any accepted upload → its real type and size and its 28×28 model input (784 bytes)."""
    decoded = decode(data, max_side=max_side)
    pixels = center_digit(ink_of(decoded.image))
    return Prepared(decoded.media_type, decoded.width, decoded.height, encode_input(pixels))


def encode_input(pixels: FloatImage) -> bytes:
    """A 28×28 float input in [0, 1] as the 784 bytes that travel and are stored."""
    return bytes((np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).tobytes())


def decode_input(model_input: bytes) -> FloatImage:
    """The 784 stored bytes back as the 28×28 float32 input in [0, 1]."""
    if len(model_input) != INPUT_BYTES:
        raise PreprocessError(
            f"a model input is {INPUT_BYTES} bytes (28×28 uint8), not {len(model_input)}"
        )
    pixels = np.frombuffer(model_input, dtype=np.uint8).reshape(SIDE, SIDE).astype(np.float32)
    pixels /= np.float32(255.0)
    return pixels


def preprocess(data: bytes, *, max_side: int = MAX_SIDE) -> FloatImage:
    """Any accepted upload → 28×28 float32 in [0, 1], exactly what the models are given."""
    return decode_input(prepare(data, max_side=max_side).model_input)


def to_batch(images: list[FloatImage]) -> FloatImage:
    """Stack 28×28 inputs into the model's `pixels` tensor of shape (N, 1, 28, 28)."""
    return np.stack(images)[:, None, :, :].astype(np.float32, copy=False)


def inputs_to_batch(model_inputs: list[bytes]) -> FloatImage:
    """The model's `pixels` tensor (N, 1, 28, 28) straight from stored 784-byte inputs."""
    for model_input in model_inputs:
        if len(model_input) != INPUT_BYTES:
            raise PreprocessError(
                f"a model input is {INPUT_BYTES} bytes (28×28 uint8), not {len(model_input)}"
            )
    raw = np.frombuffer(b"".join(model_inputs), dtype=np.uint8)
    batch = raw.reshape(len(model_inputs), 1, SIDE, SIDE).astype(np.float32)
    batch /= np.float32(255.0)
    return batch


def input_png(model_input: bytes) -> bytes:
    """A stored model input as an 8-bit grayscale PNG, to show what the model saw."""
    return to_png(decode_input(model_input))


def to_png(pixels: FloatImage) -> bytes:
    """The 28×28 model input as an 8-bit grayscale PNG, to show what the model saw."""
    gray = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return buffer.getvalue()
