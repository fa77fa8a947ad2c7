"""The drift reference of a trained model: what its inputs and its readings look like on its
own training data, measured with the functions history-service runs on live drawings
(`mnistream_common.drift`), and logged with the run in MLflow."""

from __future__ import annotations

from typing import Final

import mlflow
import numpy as np
import torch
from mnistream_common.drift import reference_of
from mnistream_common.events import DriftReference
from mnistream_common.preprocessing import BlankImageError, center_digit, encode_input

from trainer.data import MnistTensors
from trainer.labels import LabelSet
from trainer.models import DigitClassifier

REFERENCE_FILE: Final = "drift_reference.json"
# Enough for ten bins per signal to hold 500 each: the reference's own noise stays far below
# the live window's.
REFERENCE_DRAWINGS: Final = 5000
BATCH: Final = 1000


def drift_reference(
    model: DigitClassifier,
    mnist: MnistTensors,
    labels: LabelSet | None,
    device: torch.device,
    seed: int,
) -> DriftReference:
    """A sample of the MNIST training digits as drawings become them (`center_digit`), plus
    every labelled drawing the model learnt from, and the model's readings of all of them."""
    picked = np.random.default_rng(seed).choice(
        len(mnist.images), min(REFERENCE_DRAWINGS, len(mnist.images)), replace=False
    )
    inputs = [centred for i in sorted(picked) if (centred := _centred(mnist.images[i])) is not None]
    source = f"{len(inputs)} MNIST training digits through center_digit"
    if labels is not None and len(labels.train.labels):
        inputs += list(labels.train.images.numpy().reshape(-1, 784))
        source += f", and the {len(labels.train.labels)} labelled drawings of dataset " + (
            f"{labels.version[:12]}'s train split"
        )
    stacked = np.stack(inputs).astype(np.uint8)
    return reference_of(stacked, _probabilities(model, stacked, device), source)


def _centred(image: torch.Tensor) -> np.ndarray | None:
    try:
        return np.frombuffer(encode_input(center_digit(image.numpy())), dtype=np.uint8)
    except BlankImageError:
        return None


def _probabilities(model: DigitClassifier, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), BATCH):
            chunk = torch.from_numpy(inputs[start : start + BATCH].reshape(-1, 1, 28, 28))
            out.append(model(chunk.float().div_(255.0).to(device)).cpu().numpy())
    return np.concatenate(out)


def log_reference(reference: DriftReference) -> None:
    """Log the reference into the active run, beside the model."""
    mlflow.log_dict(reference.model_dump(mode="json"), REFERENCE_FILE)
