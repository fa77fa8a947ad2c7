"""Augmentation moves digits a little, keeps them whole inside 28×28, and is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mnistream_common.preprocessing import BOX, INK_THRESHOLD, MASS_CENTRE, SIDE
from trainer.augment import (
    CANVAS,
    AugmentPolicy,
    _pad_to_canvas,
    _random_affine,
    augment_batch,
    batch_seed,
    plain_inputs,
)

from tests.unit.trainer.digits import mnist_like

STRONGEST = AugmentPolicy(max_rotation_deg=12.0, max_shear=0.2, min_scale=0.85, max_scale=1.15)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return mnist_like(64).images


def test_augmented_batch_is_a_model_input(digits: torch.Tensor) -> None:
    pixels = augment_batch(digits, AugmentPolicy(), seed=1)
    assert pixels.shape == (64, 1, SIDE, SIDE)
    assert pixels.dtype == torch.float32
    assert float(pixels.min()) >= 0.0
    assert float(pixels.max()) <= 1.0


def test_augmented_digits_stay_whole_and_centred_in_28x28(digits: torch.Tensor) -> None:
    pixels = augment_batch(digits, AugmentPolicy(thicken_p=0.5, thin_p=0.5), seed=2)[:, 0].numpy()
    ys, xs = np.indices((SIDE, SIDE))
    for image in pixels:
        rows = np.flatnonzero((image > INK_THRESHOLD).any(axis=1))
        cols = np.flatnonzero((image > INK_THRESHOLD).any(axis=0))
        # center_digit fits the ink into the 20×20 box (whole, never cut) and puts its centre of
        # mass where MNIST's is; a lopsided digit may then touch the frame, as in MNIST itself.
        assert rows.size and rows[-1] - rows[0] + 1 <= BOX
        assert cols[-1] - cols[0] + 1 <= BOX
        mass = image.sum()
        assert abs((ys * image).sum() / mass - MASS_CENTRE) <= 1.0
        assert abs((xs * image).sum() / mass - MASS_CENTRE) <= 1.0


def test_affine_moves_never_push_ink_off_the_canvas(digits: torch.Tensor) -> None:
    canvas = _pad_to_canvas(plain_inputs(digits))
    moved = _random_affine(canvas, STRONGEST, torch.Generator().manual_seed(3))
    assert moved.shape == (64, 1, CANVAS, CANVAS)
    border = torch.cat([moved[..., :2, :].flatten(1), moved[..., -2:, :].flatten(1)], dim=1)
    assert float(border.max()) == 0.0
    # The ink is moved, not lost: its total changes only by resampling and stretching.
    ratio = moved.sum(dim=(1, 2, 3)) / canvas.sum(dim=(1, 2, 3))
    assert float(ratio.min()) > 0.6
    assert float(ratio.max()) < 1.6


def test_augmentation_changes_the_digits(digits: torch.Tensor) -> None:
    moved = augment_batch(digits, AugmentPolicy(), seed=4)
    plain = augment_batch(digits, AugmentPolicy(0.0, 0.0, 1.0, 1.0, 0.0, 0.0), seed=4)
    assert float((moved - plain).abs().mean()) > 0.01


def test_same_seed_same_batch_other_seed_other_batch(digits: torch.Tensor) -> None:
    first = augment_batch(digits, AugmentPolicy(), seed=5)
    assert torch.equal(first, augment_batch(digits, AugmentPolicy(), seed=5))
    assert not torch.equal(first, augment_batch(digits, AugmentPolicy(), seed=6))


def test_thinning_a_faint_digit_away_keeps_the_original() -> None:
    faint = torch.zeros(1, SIDE, SIDE, dtype=torch.uint8)
    faint[0, 8:20, 13] = 80  # a one-pixel stroke just above the ink threshold
    pixels = augment_batch(faint, AugmentPolicy(thicken_p=0.0, thin_p=1.0), seed=7)
    assert float(pixels.max()) > INK_THRESHOLD


def test_batch_seeds_differ_per_epoch_and_batch() -> None:
    seeds = {batch_seed(0, epoch, batch) for epoch in range(3) for batch in range(50)}
    assert len(seeds) == 150
    assert batch_seed(1, 2, 3) == batch_seed(1, 2, 3)
