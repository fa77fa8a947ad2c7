"""Training-time augmentation that teaches MNIST models to read mouse drawings.

A batch is moved by a small random affine map (rotation, shear, unequal scaling), its strokes
are thickened or thinned, and every sample then goes through `center_digit`: the same crop,
fit and centre-by-mass that uploads go through. Translation and overall scale are left out
on purpose, since `center_digit` undoes both; what survives it is what the model must learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from mnistream_common.preprocessing import SIDE, BlankImageError, center_digit

# Room around the 28×28 digit so a rotated or stretched stroke is never cut by the frame.
CANVAS = 40


@dataclass(frozen=True)
class AugmentPolicy:
    """How far a training sample may be moved away from the original."""

    max_rotation_deg: float = 12.0
    max_shear: float = 0.2
    min_scale: float = 0.85
    max_scale: float = 1.15
    thicken_p: float = 0.3
    thin_p: float = 0.15


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A seed for one batch's randomness, independent of which worker draws it."""
    return int(np.random.SeedSequence([seed, epoch, batch]).generate_state(1)[0])


def augment_batch(images: torch.Tensor, policy: AugmentPolicy, seed: int) -> torch.Tensor:
    """uint8 N×28×28 MNIST images → float32 N×1×28×28 model inputs, moved and re-centred."""
    generator = torch.Generator().manual_seed(seed)
    canvas = _pad_to_canvas(images.float().div_(255.0).unsqueeze(1))
    moved = _random_affine(canvas, policy, generator)
    restroked = _random_stroke_width(moved, policy, generator)
    return _recenter(restroked.squeeze(1), fallback=canvas.squeeze(1))


def _pad_to_canvas(pixels: torch.Tensor) -> torch.Tensor:
    margin = (CANVAS - SIDE) // 2
    return F.pad(pixels, (margin, margin, margin, margin))


def _random_affine(
    pixels: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator
) -> torch.Tensor:
    count = pixels.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(count, generator=generator) * (high - low) + low

    angle = uniform(-policy.max_rotation_deg, policy.max_rotation_deg) * (math.pi / 180.0)
    shear = uniform(-policy.max_shear, policy.max_shear)
    scale_x = uniform(policy.min_scale, policy.max_scale)
    scale_y = uniform(policy.min_scale, policy.max_scale)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zeros, ones = torch.zeros(count), torch.ones(count)
    rotation = torch.stack([cos, -sin, sin, cos], dim=1).view(-1, 2, 2)
    shearing = torch.stack([ones, shear, zeros, ones], dim=1).view(-1, 2, 2)
    # affine_grid maps output coordinates to input ones, so the inverse scale enlarges.
    shrink = torch.diag_embed(torch.stack([1.0 / scale_x, 1.0 / scale_y], dim=1))
    linear = rotation @ shearing @ shrink
    theta = torch.cat([linear, torch.zeros(count, 2, 1)], dim=2)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _random_stroke_width(
    pixels: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator
) -> torch.Tensor:
    draw = torch.rand(pixels.shape[0], generator=generator).view(-1, 1, 1, 1)
    thick = F.max_pool2d(pixels, kernel_size=3, stride=1, padding=1)
    # A 2×2 erosion takes about one pixel off a stroke; 3×3 would erase thin MNIST strokes.
    thin = -F.max_pool2d(F.pad(-pixels, (0, 1, 0, 1), value=-1.0), kernel_size=2, stride=1)
    out = torch.where(draw < policy.thicken_p, thick, pixels)
    return torch.where(
        (draw >= policy.thicken_p) & (draw < policy.thicken_p + policy.thin_p), thin, out
    )


def _recenter(pixels: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    out = np.empty((pixels.shape[0], 1, SIDE, SIDE), dtype=np.float32)
    moved, original = pixels.clamp_(0.0, 1.0).numpy(), fallback.numpy()
    for index, image in enumerate(moved):
        try:
            out[index, 0] = center_digit(image)
        except BlankImageError:  # thinning erased a faint digit: keep it unmoved
            out[index, 0] = center_digit(original[index])
    return torch.from_numpy(out)


def plain_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×28×28 MNIST images → float32 N×1×28×28 in [0, 1], unchanged (evaluation)."""
    return images.float().div_(255.0).unsqueeze(1)
