"""The training loop: seeded batches, one-cycle AdamW, per-epoch train and validation metrics."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch.utils.data import DataLoader, Dataset

from trainer.augment import AugmentPolicy, augment_batch, batch_seed, plain_inputs
from trainer.config import DeviceChoice, TrainConfig
from trainer.data import MnistTensors
from trainer.models import DigitClassifier

EVAL_BATCH = 1000


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch achieved."""

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    seconds: float

    def log_line(self) -> str:
        """The per-epoch line the CLI prints."""
        return (
            f"Epoch [{self.epoch}/{self.epochs}] "
            f"train loss {self.train_loss:.5f}, acc {self.train_accuracy:.5f} | "
            f"valid loss {self.valid_loss:.5f}, acc {self.valid_accuracy:.5f}"
        )


@dataclass(frozen=True)
class Evaluation:
    """A model's loss, accuracy and predicted digits on one labelled set."""

    loss: float
    accuracy: float
    predictions: torch.Tensor


class TrainingReporter(Protocol):
    """Receives progress while a run trains (the CLI draws bars; tests stay silent)."""

    def stage(self, message: str) -> None: ...
    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_finished(self, loss: float) -> None: ...
    def epoch_finished(self, metrics: EpochMetrics) -> None: ...


class SilentReporter:
    """A reporter that reports nothing."""

    def stage(self, message: str) -> None:
        """Ignore a stage."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Ignore an epoch start."""

    def batch_finished(self, loss: float) -> None:
        """Ignore a batch."""

    def epoch_finished(self, metrics: EpochMetrics) -> None:
        """Ignore an epoch."""


@dataclass(frozen=True)
class TrainValid:
    """The training split and the validation split held out from it."""

    train: MnistTensors
    valid: MnistTensors


def split_train_valid(data: MnistTensors, config: TrainConfig) -> TrainValid:
    """Hold out the last `valid_size` images (fixed, so runs compare), then apply the limit."""
    cut = len(data.labels) - config.valid_size
    if cut < 1:
        raise ValueError(f"valid_size {config.valid_size} leaves no training images")
    end = cut if config.limit_train is None else min(cut, config.limit_train)
    return TrainValid(
        train=MnistTensors(data.images[:end], data.labels[:end]),
        valid=MnistTensors(data.images[cut:], data.labels[cut:]),
    )


class DeviceUnavailableError(RuntimeError):
    """The requested device cannot be used here."""


def resolve_device(choice: DeviceChoice) -> torch.device:
    """`auto` picks CUDA when a GPU is usable, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu"
        )
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Make a run repeatable: the same seed gives the same weights on the same device."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


class EpochBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One epoch's batches; item i is batch i, augmented with a seed of its own."""

    def __init__(
        self, data: MnistTensors, config: TrainConfig, epoch: int, policy: AugmentPolicy | None
    ) -> None:
        order = torch.randperm(
            len(data.labels),
            generator=torch.Generator().manual_seed(batch_seed(config.seed, epoch, 0)),
        )
        self._batches = list(torch.split(order, config.batch_size))
        self._data, self._policy = data, policy
        self._seed, self._epoch = config.seed, epoch

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self._batches[index]
        images = self._data.images[chosen]
        if self._policy is None:
            return plain_inputs(images), self._data.labels[chosen]
        seed = batch_seed(self._seed, self._epoch, index + 1)
        return augment_batch(images, self._policy, seed), self._data.labels[chosen]


def epoch_loader(
    data: MnistTensors, config: TrainConfig, epoch: int
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Batches for one epoch, prepared by worker processes while the model trains."""
    policy = AugmentPolicy() if config.augment else None
    return DataLoader(
        EpochBatches(data, config, epoch, policy),
        batch_size=None,
        shuffle=False,
        num_workers=config.workers,
        prefetch_factor=4 if config.workers else None,
    )


def fit(
    model: DigitClassifier,
    split: TrainValid,
    config: TrainConfig,
    device: torch.device,
    reporter: TrainingReporter,
) -> list[EpochMetrics]:
    """Train for `config.epochs` epochs; returns each epoch's metrics."""
    steps = -(-len(split.train.labels) // config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        reporter.epoch_started(epoch, config.epochs, steps)
        loader = epoch_loader(split.train, config, epoch)
        train_loss, train_accuracy = train_epoch(
            model, optimizer, schedule, loader, device, reporter
        )
        valid = evaluate(model, split.valid, device)
        metrics = EpochMetrics(
            epoch,
            config.epochs,
            train_loss,
            train_accuracy,
            valid.loss,
            valid.accuracy,
            time.perf_counter() - started,
        )
        reporter.epoch_finished(metrics)
        history.append(metrics)
    return history


def train_epoch(
    model: DigitClassifier,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    reporter: TrainingReporter,
) -> tuple[float, float]:
    """One pass over the loader; returns the mean loss and the accuracy on what it saw."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for pixels, labels in loader:
        pixels, labels = pixels.to(device), labels.to(device)
        logits = model.logits(pixels)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        schedule.step()
        batch_loss = loss.item()
        loss_sum += batch_loss * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
        reporter.batch_finished(batch_loss)
    return loss_sum / seen, correct / seen


@torch.inference_mode()
def evaluate(model: DigitClassifier, data: MnistTensors, device: torch.device) -> Evaluation:
    """Loss, accuracy and predictions on unaugmented images."""
    model.eval()
    loss_sum, predictions = 0.0, []
    for images, labels in zip(
        torch.split(data.images, EVAL_BATCH), torch.split(data.labels, EVAL_BATCH), strict=True
    ):
        logits = model.logits(plain_inputs(images).to(device))
        loss_sum += float(F.cross_entropy(logits, labels.to(device), reduction="sum"))
        predictions.append(logits.argmax(dim=1).cpu())
    predicted = torch.cat(predictions)
    accuracy = float((predicted == data.labels).float().mean())
    return Evaluation(loss_sum / len(data.labels), accuracy, predicted)
