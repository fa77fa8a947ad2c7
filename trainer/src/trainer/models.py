"""The digit classifiers mnistream trains.

Every model shares one contract, which is also the ONNX contract the workers rely on:
input `pixels` float32 [N, 1, 28, 28] in [0, 1], ink bright on black, centred by mass (what
`mnistream_common.preprocessing.preprocess` produces); output `probabilities` float32 [N, 10].
Normalisation is the model's first layer and softmax its last, so the exported file is
self-contained. Training uses `logits`, which skips the softmax for a stable loss.
"""

from __future__ import annotations

from typing import Literal

import torch
from mnistream_common.preprocessing import MNIST_MEAN, MNIST_STD, SIDE
from torch import nn

Architecture = Literal["mlp", "cnn"]


class Normalize(nn.Module):
    """(pixels - MNIST mean) / MNIST std, the normalisation the models were trained with."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        # Plain floats: they become constants in the ONNX graph, not inputs or weights.
        self.mean = mean
        self.std = std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


class DigitClassifier(nn.Module):
    """pixels [N,1,28,28] in [0,1] → probabilities [N,10]; subclasses define `body`."""

    architecture: Architecture

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.body = body

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores, for the training loss."""
        scores: torch.Tensor = self.body(self.normalize(pixels))
        return scores

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(pixels), dim=1)


class MLP(DigitClassifier):
    """The teaching app's model: 784 → hidden → 10 (hidden=10 is the weak first model)."""

    architecture: Architecture = "mlp"

    def __init__(self, hidden: int = 10) -> None:
        super().__init__(
            nn.Sequential(
                nn.Flatten(),
                nn.Linear(SIDE * SIDE, hidden),
                nn.ReLU(),
                nn.Linear(hidden, 10),
            )
        )
        self.hidden = hidden


def _conv_block(channels_in: int, channels_out: int) -> list[nn.Module]:
    # No conv bias: batch norm right after it has its own shift.
    return [
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    ]


class CNN(DigitClassifier):
    """A compact VGG-style net with batch norm: two 3×3 conv pairs, then a small head."""

    architecture: Architecture = "cnn"

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__(
            nn.Sequential(
                *_conv_block(1, 32),
                *_conv_block(32, 32),
                nn.MaxPool2d(2),
                *_conv_block(32, 64),
                *_conv_block(64, 64),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(64 * 7 * 7, 128, bias=False),
                nn.BatchNorm1d(128),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(128, 10),
            )
        )


def build_model(architecture: Architecture, *, hidden: int = 10) -> DigitClassifier:
    """A freshly initialised model of the given architecture."""
    if architecture == "mlp":
        return MLP(hidden)
    return CNN()
