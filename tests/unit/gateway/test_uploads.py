"""The gateway's upload check: the real type from the bytes, the size, the pixels; each refusal
comes with the HTTP status and a message that says what was wrong and what is allowed."""

from __future__ import annotations

import pytest
from gateway.uploads import UploadRejectedError, sniff_media_type, validate_upload

from tests.helpers import (
    INPUT_KINDS,
    animated_png,
    blank_png,
    drawing_png,
    encode_ink,
    png_header,
    stroke_ink,
)

MAX_SIDE = 2048


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (drawing_png(), "image/png"),
        (encode_ink(stroke_ink(size=64), "jpeg"), "image/jpeg"),
        (encode_ink(stroke_ink(size=64), "cmyk-jpeg"), "image/jpeg"),
        (b"GIF89a....", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"\x89PNG", None),
        (b"", None),
    ],
    ids=["png", "jpeg", "cmyk-jpeg", "gif", "svg", "short-png-signature", "empty"],
)
def test_sniff_media_type_reads_the_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_media_type(data) == expected


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_every_supported_kind_is_accepted_with_its_real_type_and_size(kind: str) -> None:
    data = encode_ink(stroke_ink(size=200), kind)

    upload = validate_upload(data, None, max_side=MAX_SIDE)

    assert upload.data == data
    assert upload.media_type == ("image/jpeg" if "jpeg" in kind else "image/png")
    assert (upload.width, upload.height) == (200, 200)


def test_the_real_type_wins_over_the_declared_one() -> None:
    data = drawing_png()

    upload = validate_upload(data, "image/jpeg", max_side=MAX_SIDE)

    assert upload.media_type == "image/png"


@pytest.mark.parametrize(
    ("data", "declared", "status", "message"),
    [
        (b"", "image/png", 400, "the upload is empty (0 bytes); send a PNG or JPEG drawing"),
        (
            b"GIF89a" + b"\x00" * 32,
            "image/gif",
            415,
            "the upload is not a PNG or JPEG image (declared image/gif); "
            "accepted types: image/png, image/jpeg",
        ),
        (
            b"just some text",
            None,
            415,
            "the upload is not a PNG or JPEG image; accepted types: image/png, image/jpeg",
        ),
        (
            png_header(20_000, 20_000),
            "image/png",
            413,
            "the image has too many pixels",
        ),
        (png_header(4096, 4096), "image/png", 413, "the image is 4096×4096; the limit is 2048 px"),
        (
            blank_png(),
            "image/png",
            400,
            "the drawing is blank: no ink was found; draw a digit first",
        ),
        (blank_png(mode="L"), "image/png", 400, "the drawing is blank"),
        (drawing_png()[:400], "image/png", 400, "the image data is corrupt or truncated"),
        (
            animated_png(),
            "image/png",
            400,
            "animated images are not accepted; send a single-frame PNG or JPEG",
        ),
        (
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
            "image/png",
            400,
            "not a PNG or JPEG image",
        ),
    ],
    ids=[
        "empty",
        "gif",
        "text",
        "20000px-header",
        "4096px-header",
        "blank-canvas",
        "blank-white",
        "truncated",
        "animated",
        "png-signature-then-garbage",
    ],
)
def test_every_bad_upload_gets_its_status_and_message(
    data: bytes, declared: str | None, status: int, message: str
) -> None:
    with pytest.raises(UploadRejectedError) as raised:
        validate_upload(data, declared, max_side=MAX_SIDE)

    assert raised.value.status_code == status
    assert message in raised.value.message
    assert str(raised.value) == raised.value.message


def test_the_side_limit_follows_the_setting() -> None:
    with pytest.raises(UploadRejectedError) as raised:
        validate_upload(drawing_png(size=300), "image/png", max_side=256)

    assert raised.value.status_code == 413
    assert "300×300; the limit is 256 px per side" in raised.value.message
