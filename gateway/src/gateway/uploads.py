"""Checking an upload before anything is published: the real type, the size, the pixels."""

from __future__ import annotations

from dataclasses import dataclass

from mnistream_common.preprocessing import (
    FORMATS,
    BlankImageError,
    ImageTooLargeError,
    PreprocessError,
    prepare,
)

ACCEPTED_TYPES = tuple(FORMATS.values())


class UploadRejectedError(Exception):
    """An upload the gateway refuses, with the HTTP status and a message a person can act on."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class ValidUpload:
    """An upload that decodes, fits the limits and has ink, with its model input."""

    data: bytes
    media_type: str
    width: int
    height: int
    model_input: bytes


def sniff_media_type(data: bytes) -> str | None:
    """The image type from the magic bytes, whatever the client declared."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def validate_upload(data: bytes, declared_type: str | None, *, max_side: int) -> ValidUpload:
    """Accept PNG or JPEG bytes that decode, fit `max_side` and are not blank, and make their
    model input (the one decode of the drawing in the whole system); else say why."""
    if not data:
        raise UploadRejectedError(400, "the upload is empty (0 bytes); send a PNG or JPEG drawing")
    real = sniff_media_type(data)
    if real is None:
        shown = f" (declared {declared_type})" if declared_type else ""
        raise UploadRejectedError(
            415,
            f"the upload is not a PNG or JPEG image{shown}; accepted types: image/png, image/jpeg",
        )
    try:
        prepared = prepare(data, max_side=max_side)
    except BlankImageError as exc:
        raise UploadRejectedError(400, str(exc)) from exc
    except PreprocessError as exc:
        status = 413 if isinstance(exc, ImageTooLargeError) else 400
        raise UploadRejectedError(status, str(exc)) from exc
    return ValidUpload(
        data, prepared.media_type, prepared.width, prepared.height, prepared.model_input
    )
