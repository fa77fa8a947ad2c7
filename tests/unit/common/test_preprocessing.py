"""The one preprocessing path: every kind of upload becomes the same MNIST-style 28×28 input.

Drawings are rendered in the test; the expected 28×28 outputs are small golden PNGs under
tests/unit/goldens/ (regenerate deliberately with MNISTREAM_UPDATE_GOLDENS=1).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from mnistream_common.logs import configure_logging
from mnistream_common.preprocessing import (
    BOX,
    INK_THRESHOLD,
    BlankImageError,
    FloatImage,
    ImageTooLargeError,
    PreprocessError,
    center_digit,
    decode,
    encode_input,
    ink_of,
    prepare,
    preprocess,
    to_batch,
    to_png,
)
from mnistream_system.canvas import render_canvas_png
from PIL import Image

from tests.helpers import (
    FOUR,
    INPUT_KINDS,
    SEVEN,
    animated_png,
    blank_png,
    drawing_png,
    encode_ink,
    png_header,
    stroke_ink,
)

GOLDENS = Path(__file__).resolve().parent.parent / "goldens"
FIGURES = {"seven": SEVEN, "four": FOUR}
CENTRE = (28 - 1) / 2


def centre_of_mass(pixels: FloatImage) -> tuple[float, float]:
    """(row, column) of the ink's centre of mass."""
    ys, xs = np.indices(pixels.shape)
    total = float(pixels.sum())
    return float((ys * pixels).sum()) / total, float((xs * pixels).sum()) / total


def ink_box(pixels: FloatImage) -> tuple[int, int]:
    """Height and width of the box holding the visible ink."""
    mask = pixels > INK_THRESHOLD
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def golden(name: str, figure: Sequence[Sequence[tuple[float, float]]]) -> FloatImage:
    """The expected 28×28 for a figure (MNIST-like input), from tests/unit/goldens/."""
    path = GOLDENS / f"{name}_28.png"
    if os.environ.get("MNISTREAM_UPDATE_GOLDENS") == "1":
        path.write_bytes(to_png(preprocess(encode_ink(stroke_ink(figure), "l-dark"))))
    with Image.open(path) as image:
        pixels: FloatImage = np.asarray(image, dtype=np.float32) / 255.0
    return pixels


def assert_mnist_like(pixels: FloatImage) -> None:
    """28×28 float32 in [0, 1], bright ink on black, centred by mass, inside 20×20."""
    assert pixels.shape == (28, 28)
    assert pixels.dtype == np.float32
    assert float(pixels.min()) >= 0.0
    assert float(pixels.max()) <= 1.0
    assert float(pixels.max()) > 0.9, "the strokes should be bright"
    assert float(np.median(pixels)) == 0.0, "the background should be black"
    assert float(pixels.mean()) < 0.3
    row, col = centre_of_mass(pixels)
    assert abs(row - CENTRE) <= 1.0
    assert abs(col - CENTRE) <= 1.0
    height, width = ink_box(pixels)
    assert max(height, width) <= BOX
    assert max(height, width) >= BOX - 1, "the longer side should fill the 20×20 box"


@pytest.mark.parametrize("name", FIGURES)
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_every_input_kind_matches_the_golden(kind: str, name: str) -> None:
    figure = FIGURES[name]
    pixels = preprocess(encode_ink(stroke_ink(figure), kind))

    assert_mnist_like(pixels)
    expected = golden(name, figure)
    difference = np.abs(pixels - expected)
    assert float(difference.mean()) < 0.02, f"{kind} drifted from the golden {name}"
    assert float(difference.max()) < 0.15


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_the_same_drawing_in_every_kind_gives_nearly_the_same_input(kind: str) -> None:
    ink = stroke_ink(SEVEN)
    reference = preprocess(encode_ink(ink, "l-dark"))

    pixels = preprocess(encode_ink(ink, kind))

    assert float(np.abs(pixels - reference).mean()) < 0.02


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_an_mnist_image_drawn_on_the_browser_canvas_comes_back_nearly_unchanged(
    dtype: str,
) -> None:
    mnist = golden("four", FOUR)
    pixels28 = (mnist * 255).round().astype(np.uint8) if dtype == "uint8" else mnist

    canvas = render_canvas_png(pixels28)

    with Image.open(io.BytesIO(canvas)) as image:
        assert (image.size, image.mode) == ((280, 280), "RGBA")
    again = preprocess(canvas)
    assert_mnist_like(again)
    assert float(np.abs(again - mnist).mean()) < 0.03


def test_different_digits_give_different_inputs() -> None:
    seven = preprocess(drawing_png(SEVEN))
    four = preprocess(drawing_png(FOUR))

    assert float(np.abs(seven - four).mean()) > 0.1


@pytest.mark.parametrize(
    ("offset", "scale"),
    [((0.0, 0.0), 1.0), ((-0.3, -0.3), 0.3), ((0.35, 0.2), 0.25), ((0.0, 0.0), 0.15)],
    ids=["centred", "small-top-left", "small-bottom-right", "tiny"],
)
def test_position_and_size_on_the_canvas_do_not_matter(
    offset: tuple[float, float], scale: float
) -> None:
    # The pen width scales with the figure, so only its place and size on the canvas change.
    ink = stroke_ink(SEVEN, offset=offset, scale=scale, width=round(20 * scale))
    reference = preprocess(encode_ink(stroke_ink(SEVEN, width=20), "rgba-dark"))

    pixels = preprocess(encode_ink(ink, "rgba-dark"))

    assert_mnist_like(pixels)
    assert float(np.abs(pixels - reference).mean()) < 0.08


def test_a_thin_horizontal_stroke_keeps_its_aspect_ratio() -> None:
    ink = np.zeros((280, 280), dtype=np.uint8)
    ink[130:150, 40:240] = 255

    pixels = preprocess(encode_ink(ink, "l-dark"))

    height, width = ink_box(pixels)
    assert width == BOX
    assert height <= 3


def test_center_digit_accepts_float_ink_like_uint8() -> None:
    ink = stroke_ink(FOUR, size=112)

    from_uint8 = center_digit(ink)
    from_float = center_digit(ink.astype(np.float32) / 255.0)

    np.testing.assert_allclose(from_uint8, from_float, atol=1e-5)


def test_to_batch_makes_the_model_tensor() -> None:
    images = [preprocess(drawing_png(SEVEN)), preprocess(drawing_png(FOUR))]

    batch = to_batch(images)

    assert batch.shape == (2, 1, 28, 28)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1, 0], images[1])


def test_to_png_shows_what_the_model_saw() -> None:
    pixels = preprocess(drawing_png(SEVEN))

    with Image.open(io.BytesIO(to_png(pixels))) as image:
        shown = np.asarray(image, dtype=np.float32) / 255.0
        assert image.size == (28, 28)
        assert image.mode == "L"
    np.testing.assert_allclose(shown, pixels, atol=1 / 255 + 1e-6)


def test_decode_reports_the_real_type_and_size() -> None:
    jpeg = encode_ink(stroke_ink(SEVEN, size=120), "jpeg")

    decoded = decode(jpeg)

    assert (decoded.media_type, decoded.width, decoded.height) == ("image/jpeg", 120, 120)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "L", "RGB"])
def test_a_blank_drawing_is_refused_with_a_clear_message(mode: str) -> None:
    with pytest.raises(BlankImageError, match="blank: no ink was found; draw a digit first"):
        preprocess(blank_png(mode=mode))


def test_faint_noise_is_still_blank() -> None:
    rng = np.random.default_rng(1)
    noise: npt.NDArray[np.uint8] = rng.integers(0, 30, size=(100, 100), dtype=np.uint8)

    with pytest.raises(BlankImageError):
        preprocess(encode_ink(noise, "l-dark"))


@pytest.mark.parametrize(
    ("width", "height"), [(20_000, 20_000), (10_000, 10_000), (3000, 10), (10, 2049)]
)
def test_too_large_images_are_refused_before_decoding(width: int, height: int) -> None:
    with pytest.raises(ImageTooLargeError, match="the limit is 2048 px per side"):
        preprocess(png_header(width, height))


def test_the_size_limit_is_a_parameter() -> None:
    with pytest.raises(ImageTooLargeError, match=r"is 280×280; the limit is 100 px per side"):
        preprocess(drawing_png(), max_side=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"the image is empty \(0 bytes\)"),
        (b"hello, I am not an image", "not a PNG or JPEG image"),
        (b"GIF89a" + b"\x00" * 64, "not a PNG or JPEG image"),
        (drawing_png()[:300], "corrupt or truncated"),
        (encode_ink(stroke_ink(SEVEN), "jpeg")[:800], "corrupt or truncated"),
        (animated_png(), "animated images are not accepted"),
    ],
    ids=["empty", "text", "gif", "truncated-png", "truncated-jpeg", "animated-png"],
)
def test_unusable_bytes_are_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(PreprocessError, match=message) as raised:
        preprocess(data)

    assert not isinstance(raised.value, BlankImageError | ImageTooLargeError)


@functools.cache
def _canvas_pngs() -> list[bytes]:
    """Canvas-like RGBA PNGs of every kind the pad and other clients send: dark or light strokes,
    coloured ink, soft (anti-aliased) edges, strokes touching the border, a full opaque pad."""
    rng = np.random.default_rng(7)
    pngs = []
    for index in range(24):
        rgba = np.zeros((280, 280, 4), dtype=np.uint8)
        rgba[..., :3] = rng.integers(0, 256, size=3) if index % 3 else 0
        for _ in range(int(rng.integers(1, 6))):
            top, left = (int(v) for v in rng.integers(0, 250, size=2))
            height, width = (int(v) for v in rng.integers(4, 120, size=2))
            rgba[top : top + height, left : left + width, 3] = rng.integers(1, 256)
        if index % 5 == 0:
            rgba[..., 3] = np.maximum(rgba[..., 3], 255 * (index % 2))
        buffer = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=index % 10)
        pngs.append(buffer.getvalue())
    return pngs


def _pillow_prepared(data: bytes) -> bytes:
    """The model input as Pillow's own PNG decoder would make it."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return encode_input(center_digit(ink_of(image)))


@pytest.mark.parametrize("index", range(24))
def test_a_canvas_png_gives_the_same_input_as_pillows_decoder(index: int) -> None:
    data = _canvas_pngs()[index]
    decoded = decode(data)

    assert type(decoded.image) is Image.Image  # not Pillow's PngImageFile: libpng decoded it
    assert np.array_equal(np.asarray(decoded.image), np.asarray(Image.open(io.BytesIO(data))))
    try:
        expected = _pillow_prepared(data)
    except BlankImageError:
        with pytest.raises(BlankImageError):
            prepare(data)
        return
    assert prepare(data).model_input == expected


def test_a_16_bit_rgba_png_is_decoded_by_pillow() -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint16)
    rgba[10:50, 20:30, 3] = 65535
    data = _png_rgba16(rgba)  # Pillow writes no 16-bit RGBA

    decoded = decode(data)

    assert type(decoded.image) is not Image.Image  # Pillow's PngImageFile
    assert prepare(data).model_input == _pillow_prepared(data)


def _png_rgba16(rgba: npt.NDArray[np.uint16]) -> bytes:
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].astype(">u2").tobytes() for row in range(height))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _damaged(damage: str) -> bytes:
    data = bytearray(_canvas_pngs()[1])
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    end_of_idat = idat + 4 + length + 4
    if damage == "truncated-mid-chunk":
        return bytes(data[: idat + 40])
    if damage == "truncated-at-a-chunk-boundary":
        return bytes(data[:end_of_idat])
    if damage == "bad-idat-crc":
        data[idat + 4 + length] ^= 0xFF
    elif damage == "garbage-idat":
        data[idat + 6 : idat + 30] = bytes(24)
    elif damage == "thousands-of-duplicate-chunks":
        data[idat - 4 : idat - 4] = _chunk(b"sBIT", b"\x08\x08\x08\x08") * 5000
    return bytes(data)


def _pillow_verdict(data: bytes) -> bytes | str:
    try:
        return _pillow_prepared(data)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"refused: {type(exc).__name__}"


DAMAGES = [
    "truncated-mid-chunk",
    "truncated-at-a-chunk-boundary",
    "bad-idat-crc",
    "garbage-idat",
    "thousands-of-duplicate-chunks",
]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_canvas_png_is_accepted_or_refused_as_pillow_decides(damage: str) -> None:
    """libpng is stricter than Pillow (it checks IDAT CRCs): where it refuses, Pillow decides,
    so an upload is accepted exactly when it was before the faster decoder."""
    data = _damaged(damage)
    expected = _pillow_verdict(data)

    if isinstance(expected, str):
        with pytest.raises(PreprocessError, match="corrupt or truncated") as raised:
            prepare(data)
        assert not isinstance(raised.value, BlankImageError | ImageTooLargeError)
    else:
        assert prepare(data).model_input == expected


def test_the_damages_include_both_verdicts() -> None:
    verdicts = {damage: isinstance(_pillow_verdict(_damaged(damage)), str) for damage in DAMAGES}
    assert verdicts["truncated-mid-chunk"] and verdicts["garbage-idat"]
    assert not verdicts["bad-idat-crc"]


def test_libpngs_warnings_about_an_upload_are_not_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("test")
    with contextlib.suppress(PreprocessError):
        prepare(_damaged("thousands-of-duplicate-chunks"))
    assert "sBIT" not in capsys.readouterr().err
    assert logging.getLogger("imagecodecs").getEffectiveLevel() >= logging.ERROR


def test_libpng_is_handed_only_a_png_whose_chunks_reach_iend() -> None:
    """Cut at a chunk boundary, libpng would read past the end of the bytes."""
    from mnistream_common.preprocessing import _chunks_complete

    whole = _canvas_pngs()[1]
    assert _chunks_complete(whole)
    assert not _chunks_complete(_damaged("truncated-at-a-chunk-boundary"))
    assert not _chunks_complete(_damaged("truncated-mid-chunk"))
    lying = bytearray(whole)
    idat = lying.index(b"IDAT")
    lying[idat - 4 : idat] = (len(whole) * 2).to_bytes(4, "big")  # a length past the end
    assert not _chunks_complete(bytes(lying))
