"""`mnistream train`: train a model, check its ONNX export and register it in MLflow.

The trainer (and with it torch) is imported only when the command runs, so every other
`mnistream` command starts fast and works where the trainer is not installed.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import MnistTensors
    from trainer.labels import LabelSet
    from trainer.pipeline import RegisteredModel


class Arch(StrEnum):
    """Model architectures."""

    cnn = "cnn"
    mlp = "mlp"


class Device(StrEnum):
    """Where to train."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def train(
    arch: Annotated[Arch, typer.Option(help="cnn (≥ 99.3 %) or mlp (the weak first model).")] = (
        Arch.cnn
    ),
    epochs: Annotated[int | None, typer.Option(help="Default: 4 (cnn), 3 (mlp).")] = None,
    hidden: Annotated[int, typer.Option(help="MLP hidden units.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 128,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (one-cycle).")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same model (on the same device).")] = 0,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when available.")] = Device.auto,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Default: on for cnn, off for mlp."),
    ] = None,
    limit_train: Annotated[
        int | None, typer.Option(help="Train on the first N images only (quick checks).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Batch-preparing worker processes.")] = 2,
    labels: Annotated[
        str | None,
        typer.Option(
            help="Also learn from this dataset version of user labels (`mnistream dataset "
            "snapshot`) and be judged on its held-out split.",
        ),
    ] = None,
) -> None:
    """Train a model on MNIST (and user labels), verify its ONNX export and register it as a
    new version."""
    console = Console()
    config = training_config(
        arch=arch.value, epochs=epochs, hidden=hidden, batch_size=batch_size, lr=lr, seed=seed,
        device=device.value, augment=augment, limit_train=limit_train, workers=workers,
    )  # fmt: skip
    registered = run_training(config, console, label_set(labels) if labels else None)
    seconds = ", ".join(f"{s:.1f}" for s in registered.epoch_seconds)
    lines = [
        f"run id       {registered.run_id}",
        f"registered   {registered.name} version {registered.version}",
        f"test acc     {registered.test_accuracy:.4f}",
    ]
    if registered.dataset_version:
        lines.append(f"labels       {registered.dataset_version}")
    if registered.heldout_accuracy is not None:
        lines.append(f"held-out acc {registered.heldout_accuracy:.4f}")
    lines += [
        f"onnx         {registered.onnx_uri} (sha256 {registered.sha256})",
        f"epoch times  {seconds} s",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def training_config(**values: object) -> TrainConfig:
    """A validated TrainConfig, or a clear error naming the bad options."""
    try:
        from trainer.config import TrainConfig
    except ImportError as exc:
        raise _fail(
            f"the trainer is not installed ({exc}); install mnistream-cli[train] "
            "or run `uv sync --all-packages`"
        ) from exc
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors() if e["loc"])
        raise _fail(problems or str(exc)) from exc


def run_training(
    config: TrainConfig,
    console: Console,
    labels: LabelSet | None = None,
    retrain_key: str | None = None,
) -> RegisteredModel:
    """Train and register with progress on `console`; a clear error if it fails."""
    from trainer.console import RichReporter
    from trainer.errors import TRAINING_ERRORS
    from trainer.pipeline import train_and_register

    try:
        return train_and_register(
            config, reporter=RichReporter(console), labels=labels, retrain_key=retrain_key
        )
    except TRAINING_ERRORS as exc:
        raise _fail(str(exc)) from exc


def label_set(version: str) -> LabelSet:
    """A dataset version of user labels, read from object storage, as the trainer takes it."""
    from mnistream_common.storage import ObjectStore, make_minio
    from trainer.labels import LabelSet, tensors_of

    from mnistream_cli.datasets import LabeledInput, read_version
    from mnistream_cli.settings import Settings

    settings = Settings()
    store = ObjectStore(make_minio(settings))
    try:
        found, splits = asyncio.run(read_version(store, settings.datasets_bucket, version))
    except FileNotFoundError as exc:
        raise _fail(f"{exc}: `mnistream dataset snapshot` makes one") from exc
    if not splits["train"]:
        raise _fail(f"dataset {version} has no drawing in its train split: nothing to learn")

    def tensors(rows: list[LabeledInput]) -> MnistTensors:
        return tensors_of([r.model_input for r in rows], [r.label for r in rows])

    return LabelSet(
        version,
        found.uri(settings.datasets_bucket),
        tensors(splits["train"]),
        tensors(splits["heldout"]),
    )


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)
