"""User labels as training data: a dataset version from `mnistream dataset snapshot`.

Its train split is learnt from beside MNIST, each drawing repeated `REPEATS` times; its held-out
split judges the model beside the MNIST test set. The run records the version as an MLflow
dataset input, and the registered version carries it as a tag, so a model traces back to the
exact labels that made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import numpy as np
import torch
from mlflow.data.numpy_dataset import from_numpy

from trainer.data import MnistTensors
from trainer.training import TrainValid

# A labelled drawing comes from the app itself, where the model must read well: it counts ten
# times in an epoch, so a few dozen labels weigh on a run of thousands of MNIST images.
REPEATS = 10


@dataclass(frozen=True)
class LabelSet:
    """One dataset version: where it is, and its two splits as MNIST-like tensors."""

    version: str
    source: str  # s3://<datasets bucket>/<version>/
    train: MnistTensors
    heldout: MnistTensors


def tensors_of(inputs: Sequence[bytes], labels: Sequence[int]) -> MnistTensors:
    """784-byte model inputs (uint8, ink bright on black, like MNIST) and their labels."""
    pixels = np.frombuffer(b"".join(inputs), dtype=np.uint8).reshape(-1, 28, 28)
    return MnistTensors(torch.from_numpy(pixels.copy()), torch.tensor(labels, dtype=torch.int64))


def with_labels(split: TrainValid, labels: LabelSet | None) -> TrainValid:
    """The training split with the labelled drawings' train split added `REPEATS` times."""
    if labels is None or not len(labels.train.labels):
        return split
    images = torch.cat([split.train.images, labels.train.images.repeat(REPEATS, 1, 1)])
    targets = torch.cat([split.train.labels, labels.train.labels.repeat(REPEATS)])
    return TrainValid(MnistTensors(images, targets), split.valid)


def log_dataset(labels: LabelSet) -> None:
    """The version as the run's MLflow dataset input (context `training`) and as run tags."""
    dataset = from_numpy(
        labels.train.images.numpy(),
        targets=labels.train.labels.numpy(),
        source=labels.source,
        name=labels.version,
    )
    mlflow.log_input(dataset, context="training")
    mlflow.log_params(
        {
            "labels_train_images": len(labels.train.labels),
            "labels_heldout_images": len(labels.heldout.labels),
            "labels_repeats": REPEATS,
        }
    )
    mlflow.set_tag("dataset_version", labels.version)
